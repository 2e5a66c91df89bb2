"""Checks of what callers send, shared by every RPC: strict JSON for the JSON-in-a-string fields
(``config_json``, ``args_json``) and short, safe echoes of caller values in error messages."""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidArgument

__all__ = ["MAX_JSON_DEPTH", "loads_strict", "shown"]

MAX_JSON_DEPTH = 64
_SHOWN = 64


def shown(value: object, limit: int = _SHOWN) -> str:
    """A caller's value for an error message: ``repr`` of at most ``limit`` characters, with the
    full length said when cut (a 1 MB value must not come back in a status message)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def _depth_ok(text: str, limit: int) -> bool:
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use a string, or leave the field out)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _check_text(value: Any, field: str, path: str = "") -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"{field}{path}: text holds a lone surrogate (\\ud800-\\udfff), not valid Unicode"
            ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, field, path)
            _check_text(v, field, f"{path}.{k}" if isinstance(k, str) and k.isprintable() and len(k) < 64 else path)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, field, f"{path}[{i}]")


def loads_strict(text: str, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse ``text`` as strict JSON: no NaN/Infinity, no number that overflows to infinity, at
    most ``max_depth`` nested arrays/objects, no lone surrogates. INVALID_ARGUMENT names ``field``."""
    if not _depth_ok(text, max_depth):
        raise InvalidArgument(f"{field} is nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        raise InvalidArgument(f"{field} is nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not valid JSON: {str(exc)[:200]}") from None
    _check_text(value, field)
    return value
