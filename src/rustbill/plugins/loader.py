"""Loading one plugin file: compile, execute as a module, check it against the contract."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from .contract import ACTION_PARAMS, FUNCTIONS_BY_TYPE, PLUGIN_TYPES

__all__ = ["LoadedPlugin", "PluginLoadError", "load_plugin", "plugin_id_for"]

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,127}$")
_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?$")


class PluginLoadError(Exception):
    """A plugin file cannot be used; the message names the file and the reason."""


@dataclass(slots=True)
class LoadedPlugin:
    """A plugin module compiled from one file content."""

    plugin_id: str
    plugin_type: str
    path: Path
    content_hash: str
    version: str
    has_admin_page: bool
    module: ModuleType
    # The JSON Schema of an interface's config (``config_schema()``, checked at load).
    config_schema: dict[str, Any]
    # Coroutine-ness of each contract function, computed once.
    is_async: dict[str, bool] = field(default_factory=dict)

    def function(self, name: str) -> Any | None:
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None


def plugin_id_for(path: Path) -> str | None:
    """The plugin id of a file in the plugins folder, or None for files that are not plugins."""
    stem = path.stem
    if path.suffix != ".py" or stem.startswith(("_", ".")):
        return None
    return stem if _ID_RE.match(stem) else None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _call_sync(fn: Any) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # runs in the loader's worker thread, which has no loop
    return result


def load_plugin(path: Path, data: bytes, plugin_id: str) -> LoadedPlugin:
    """Execute ``data`` (the content of ``path``) as a fresh module and check it.

    Blocking (it runs the module's top-level code): call it from a worker thread.
    """
    digest = content_hash(data)
    where = path.name
    try:
        code = compile(data, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise PluginLoadError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # null bytes and the like
        raise PluginLoadError(f"{where}: cannot compile: {exc}") from None

    module_name = f"rustbill_plugin_{plugin_id}_{digest[:12]}"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise PluginLoadError(f"{where}: exception at import: {type(exc).__name__}: {exc}") from None

    try:
        return _check(module, path, plugin_id, digest)
    except PluginLoadError:
        sys.modules.pop(module_name, None)
        raise


def _check(module: ModuleType, path: Path, plugin_id: str, digest: str) -> LoadedPlugin:
    where = path.name
    ptype = getattr(module, "PLUGIN_TYPE", None)
    if ptype is None:
        raise PluginLoadError(f"{where}: missing PLUGIN_TYPE (one of {', '.join(PLUGIN_TYPES)})")
    if ptype not in PLUGIN_TYPES:
        raise PluginLoadError(f"{where}: unknown PLUGIN_TYPE {ptype!r} (one of {', '.join(PLUGIN_TYPES)})")

    contract = FUNCTIONS_BY_TYPE[ptype]
    is_async: dict[str, bool] = {}
    for name, value in vars(module).items():
        if name.startswith("admin_") and name != "admin_page":
            params = ACTION_PARAMS
        elif name in contract:
            params = contract[name]
        else:
            continue
        if not callable(value):
            raise PluginLoadError(f"{where}: {name} must be a function")
        try:
            inspect.signature(value).bind(*params)
        except TypeError:
            expected = f"{name}({', '.join(params)})"
            raise PluginLoadError(f"{where}: {name} must accept {expected}") from None
        except ValueError:
            pass  # no signature available (builtins): accept
        is_async[name] = inspect.iscoroutinefunction(value)

    version = "0.0.0"
    if "version" in is_async:
        try:
            version = _call_sync(module.version)
        except Exception as exc:
            raise PluginLoadError(f"{where}: version() raised {type(exc).__name__}: {exc}") from None
        if not isinstance(version, str) or not _SEMVER_RE.match(version):
            raise PluginLoadError(f"{where}: version() must return a semver string like '1.2.3', got {version!r}")

    schema: Any = {"type": "object"}
    if "config_schema" in is_async:
        try:
            schema = _call_sync(module.config_schema)
        except Exception as exc:
            raise PluginLoadError(f"{where}: config_schema() raised {type(exc).__name__}: {exc}") from None
        if not isinstance(schema, dict):
            raise PluginLoadError(f"{where}: config_schema() must return a dict, not {type(schema).__name__}")
        try:
            validator_for(schema).check_schema(schema)
            json.dumps(schema)
        except SchemaError as exc:
            raise PluginLoadError(f"{where}: config_schema() is not a valid JSON Schema: {exc.message}") from None
        except (TypeError, ValueError) as exc:
            raise PluginLoadError(f"{where}: config_schema() is not JSON-serialisable: {exc}") from None

    return LoadedPlugin(
        plugin_id=plugin_id,
        config_schema=schema,
        plugin_type=ptype,
        path=path,
        content_hash=digest,
        version=version,
        has_admin_page="admin_page" in is_async,
        module=module,
        is_async=is_async,
    )
