"""The loaded plugins of this process, keyed by plugin id."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from .loader import LoadedPlugin

__all__ = ["PluginRegistry"]

Listener = Callable[[str], None]


class PluginRegistry:
    """plugin_id → the last good ``LoadedPlugin``. Listeners hear of every change by plugin id."""

    def __init__(self) -> None:
        self._plugins: dict[str, LoadedPlugin] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        # plugin_id → why its file's current content does not load (set by the scanner).
        self.load_errors: dict[str, str] = {}

    def get(self, plugin_id: str) -> LoadedPlugin | None:
        return self._plugins.get(plugin_id)

    def ids(self) -> set[str]:
        return set(self._plugins)

    def put(self, plugin: LoadedPlugin) -> None:
        with self._lock:
            old = self._plugins.get(plugin.plugin_id)
            self._plugins[plugin.plugin_id] = plugin
        if old is not None and old.module is not plugin.module:
            _forget(old)
        self._changed(plugin.plugin_id)

    def remove(self, plugin_id: str) -> None:
        with self._lock:
            gone = self._plugins.pop(plugin_id, None)
        if gone is not None:
            _forget(gone)
            self._changed(plugin_id)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, plugin_id: str) -> None:
        for listener in self._listeners:
            listener(plugin_id)


def _forget(plugin: LoadedPlugin) -> None:
    """Drop a replaced version's module from sys.modules, so that it can be collected once no
    call uses it any more."""
    if sys.modules.get(plugin.module.__name__) is plugin.module:
        del sys.modules[plugin.module.__name__]
