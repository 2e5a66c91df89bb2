"""The plugin system: contract, loader, registry, scanner and runtime."""

from .loader import LoadedPlugin, PluginLoadError, load_plugin
from .registry import PluginRegistry
from .runtime import Binding, PluginRuntime
from .scanner import PluginScanner, ScanReport

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
