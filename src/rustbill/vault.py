"""Write-only plugin secrets: the one home of the "secret field" rule, masking, merging on update,
and encryption at rest.

A config field is secret when its JSON Schema says ``"format": "password"`` or ``"writeOnly": true``
(at any depth of nested objects). Secrets are

- **never shown back**: every read returns a stored secret as ``PLACEHOLDER`` (``"********"``);
- **kept on update**: a secret field sent as ``PLACEHOLDER`` or left out keeps its stored value (an
  empty string clears it, where the schema allows);
- **encrypted at rest** with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``): the stored
  config holds ``{"$sealed": "<token>"}`` in place of the value, so a database dump reveals nothing.
  The key comes from ``[secrets] key`` (or ``RUSTBILL_SECRETS__KEY``); without one, a key is
  generated once into ``<data dir>/secrets.key``. ``[secrets] previous_keys`` still decrypt (key
  rotation: ``rustbill secrets rotate``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import FailedPrecondition, InvalidArgument

__all__ = [
    "PLACEHOLDER",
    "SecretsKeyError",
    "Vault",
    "is_secret",
    "mask",
    "merge_update",
    "refuse_placeholder",
    "secret_paths",
    "secret_values",
]

log = logging.getLogger("rustbill.secrets")

PLACEHOLDER = "********"
SEALED = "$sealed"
Path_ = tuple[str, ...]


def is_secret(node: Any) -> bool:
    """Whether a schema node marks a secret field."""
    return isinstance(node, dict) and (node.get("format") == "password" or node.get("writeOnly") is True)


def secret_paths(schema: Any, prefix: Path_ = ()) -> list[Path_]:
    """Paths of the config properties that ``schema`` marks secret."""
    out: list[Path_] = []
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return out
    for name, sub in props.items():
        if not isinstance(sub, dict):
            continue
        path = (*prefix, name)
        if is_secret(sub):
            out.append(path)
        elif sub.get("type") == "object" or "properties" in sub:
            out.extend(secret_paths(sub, path))
    return out


def _get(config: Any, path: Path_) -> tuple[bool, Any]:
    node = config
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(config: dict[str, Any], path: Path_, value: Any) -> None:
    node = config
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[path[-1]] = value


def _is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED} and isinstance(value[SEALED], str)


def secret_values(config: dict[str, Any], paths: Iterable[Path_]) -> tuple[str, ...]:
    """The plain secret values of ``config`` (longest first, so that masking a log line replaces a
    secret that contains another one whole)."""
    values = set()
    for path in paths:
        found, v = _get(config, path)
        if found and isinstance(v, (str, int)) and not isinstance(v, bool) and len(str(v)) >= 3:
            values.add(str(v))
    return tuple(sorted(values, key=len, reverse=True))


class SecretsKeyError(FailedPrecondition):
    """Stored secrets that the configured key cannot decrypt."""


class Vault:
    """Seals and opens the secret fields of interface configs."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("a Vault needs at least one key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError):
            raise ValueError(
                "secrets.key must be 32 url-safe base64-encoded bytes (make one with `rustbill secrets new-key`)"
            ) from None

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    @classmethod
    def from_settings(cls, key: str, previous_keys: list[str], data_dir: Path) -> Vault:
        """The configured key, else the one kept in ``<data_dir>/secrets.key`` (generated on first use)."""
        if key:
            return cls([key, *previous_keys])
        path = data_dir / "secrets.key"
        if path.exists():
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            return cls([*lines, *previous_keys])
        data_dir.mkdir(parents=True, exist_ok=True)
        new = cls.new_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# RustBill: the key that encrypts plugin secrets in the database. Back it up.\n" + new + "\n")
        log.warning(
            "generated the secrets key %s: back it up (without it the plugin secrets stored in the database "
            "cannot be read); every process sharing this database needs the same key: set [secrets] key "
            "(RUSTBILL_SECRETS__KEY) to its value on each",
            path,
        )
        return cls([new, *previous_keys])

    # ---- configs ----

    def seal(self, config: dict[str, Any], paths: Iterable[Path_]) -> dict[str, Any]:
        """A copy of ``config`` with each plain secret value encrypted."""
        out = copy.deepcopy(config)
        for path in paths:
            found, v = _get(out, path)
            if found and not _is_sealed(v) and v not in ("", None):
                token = self._fernet.encrypt(json.dumps(v).encode()).decode()
                _set(out, path, {SEALED: token})
        return out

    def open(self, config: dict[str, Any], paths: Iterable[Path_], *, what: str) -> dict[str, Any]:
        """A copy of ``config`` with each sealed value decrypted (``what`` names the interface)."""
        out = copy.deepcopy(config)
        for path in paths:
            found, v = _get(out, path)
            if found and _is_sealed(v):
                try:
                    _set(out, path, json.loads(self._fernet.decrypt(v[SEALED].encode())))
                except InvalidToken:
                    raise SecretsKeyError(
                        f"the secrets of {what} cannot be decrypted: they were encrypted with another key. "
                        "Every process sharing this database needs the same [secrets] key "
                        "(RUSTBILL_SECRETS__KEY); after a rotation, list the old one in [secrets] previous_keys"
                    ) from None
        return out

    def rotate(self, config: dict[str, Any], paths: Iterable[Path_]) -> tuple[dict[str, Any], bool]:
        """Re-encrypt every sealed value with the first key; (config, whether anything changed)."""
        out = copy.deepcopy(config)
        changed = False
        for path in paths:
            found, v = _get(out, path)
            if found and _is_sealed(v):
                try:
                    token = self._fernet.rotate(v[SEALED].encode()).decode()
                except InvalidToken:
                    raise SecretsKeyError("a stored secret cannot be decrypted with any configured key") from None
                if token != v[SEALED]:
                    _set(out, path, {SEALED: token})
                    changed = True
        return out, changed

    def has_plain(self, config: dict[str, Any], paths: Iterable[Path_]) -> bool:
        return any(found and not _is_sealed(v) and v not in ("", None) for found, v in (_get(config, p) for p in paths))


def mask(config: dict[str, Any], paths: Iterable[Path_]) -> dict[str, Any]:
    """A copy of ``config`` for reading: every stored secret (sealed or not) is ``PLACEHOLDER``."""
    out = copy.deepcopy(config)
    for path in paths:
        found, v = _get(out, path)
        if found and v not in ("", None):
            _set(out, path, PLACEHOLDER)
    return out


def merge_update(new: dict[str, Any], stored: dict[str, Any], paths: Iterable[Path_]) -> dict[str, Any]:
    """``new`` with each secret that is left out or sent as ``PLACEHOLDER`` taken from ``stored``."""
    out = copy.deepcopy(new)
    for path in paths:
        found_new, v = _get(out, path)
        if not found_new or v == PLACEHOLDER:
            found_old, old = _get(stored, path)
            if found_old:
                _set(out, path, old)
            elif found_new:
                raise InvalidArgument(
                    f"config_json.{'.'.join(path)}: {PLACEHOLDER!r} stands for a stored secret, and none is stored; "
                    "give the secret itself"
                )
    return out


def refuse_placeholder(config: dict[str, Any], paths: Iterable[Path_]) -> None:
    """On create there is nothing stored: the placeholder is a mistake, not a value."""
    for path in paths:
        found, v = _get(config, path)
        if found and v == PLACEHOLDER:
            raise InvalidArgument(
                f"config_json.{'.'.join(path)}: {PLACEHOLDER!r} stands for a stored secret; give the secret itself"
            )
