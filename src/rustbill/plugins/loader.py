"""Loading one plugin file: compile, execute as a module, check it against the contract.

``load_plugin`` executes the file; the server never calls it itself: it runs in the plugin's worker
process (``worker.py``), which sends back the ``PluginMeta``. The server keeps a ``LoadedPlugin``:
that metadata, the file's hash and the ``PluginHost`` that runs the code. Tools and tests that want
a plugin's module in their own process (to test its helpers) call ``load_plugin`` directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from .contract import ACTION_PARAMS, FUNCTIONS_BY_TYPE, PLUGIN_TYPES

if TYPE_CHECKING:  # host.py imports this module
    from .host import PluginHost

__all__ = ["LoadedModule", "LoadedPlugin", "PluginLoadError", "PluginMeta", "load_plugin", "plugin_id_for"]

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,127}$")
_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?$")


class PluginLoadError(Exception):
    """A plugin file cannot be used; the message names the file and the reason."""


@dataclass(slots=True)
class PluginMeta:
    """What the server knows of a plugin's code: read in its worker, sent back as JSON."""

    plugin_type: str
    version: str
    has_admin_page: bool
    # The JSON Schema of an interface's config (``config_schema()``, checked at load).
    config_schema: dict[str, Any]
    # Contract functions and admin_* actions the file defines → whether each is ``async def``.
    is_async: dict[str, bool]
    # The module's docstring (its title and description in the catalog).
    doc: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PluginMeta:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(slots=True)
class LoadedModule:
    """A plugin executed in this process (in a worker, or by a tool or test that wants its module)."""

    plugin_id: str
    path: Path
    content_hash: str
    module: ModuleType
    meta: PluginMeta

    def __getattr__(self, name: str) -> Any:  # plugin_type, version, config_schema …
        return getattr(self.meta, name)

    def function(self, name: str) -> Any | None:
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None


@dataclass(slots=True, eq=False)
class LoadedPlugin:
    """A plugin as the server holds it: its metadata and the host of the worker that runs it."""

    plugin_id: str
    path: Path
    content_hash: str
    meta: PluginMeta
    host: PluginHost

    @property
    def plugin_type(self) -> str:
        return self.meta.plugin_type

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def has_admin_page(self) -> bool:
        return self.meta.has_admin_page

    @property
    def config_schema(self) -> dict[str, Any]:
        return self.meta.config_schema

    @property
    def is_async(self) -> dict[str, bool]:
        return self.meta.is_async

    @property
    def doc(self) -> str:
        return self.meta.doc

    def has(self, function: str) -> bool:
        return function in self.meta.is_async


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
    if inspect.iscoroutine(result):
        result = asyncio.run(result)  # runs in the loader's worker thread, which has no loop
    return result


def load_plugin(path: Path, data: bytes, plugin_id: str) -> LoadedModule:
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


def _check(module: ModuleType, path: Path, plugin_id: str, digest: str) -> LoadedModule:
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

    meta = PluginMeta(
        plugin_type=ptype,
        version=version,
        has_admin_page="admin_page" in is_async,
        config_schema=schema,
        is_async=is_async,
        doc=module.__doc__ if isinstance(module.__doc__, str) else "",
    )
    return LoadedModule(plugin_id=plugin_id, path=path, content_hash=digest, module=module, meta=meta)
