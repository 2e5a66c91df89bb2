"""The plugin system: contract, loader, registry, scanner, runtime and the worker processes.

The names below are imported lazily, so that a plugin worker process (which imports
``rustbill.plugins.worker``) does not pull in the server's database and gRPC code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loader import LoadedPlugin, PluginLoadError, load_plugin
    from .registry import PluginRegistry
    from .runtime import Binding, PluginRuntime
    from .scanner import PluginScanner, ScanReport

_WHERE = {
    "Binding": "runtime",
    "LoadedPlugin": "loader",
    "PluginLoadError": "loader",
    "PluginRegistry": "registry",
    "PluginRuntime": "runtime",
    "PluginScanner": "scanner",
    "ScanReport": "scanner",
    "load_plugin": "loader",
}
__all__ = [
    "Binding",
    "LoadedPlugin",
    "PluginLoadError",
    "PluginRegistry",
    "PluginRuntime",
    "PluginScanner",
    "ScanReport",
    "load_plugin",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
