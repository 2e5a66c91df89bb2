"""The loaded plugins of this process, keyed by plugin id."""

from __future__ import annotations

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

    def get(self, plugin_id: str) -> LoadedPlugin | None:
        return self._plugins.get(plugin_id)

    def ids(self) -> set[str]:
        return set(self._plugins)

    def put(self, plugin: LoadedPlugin) -> None:
        with self._lock:
            self._plugins[plugin.plugin_id] = plugin
        self._changed(plugin.plugin_id)

    def remove(self, plugin_id: str) -> None:
        with self._lock:
            gone = self._plugins.pop(plugin_id, None)
        if gone is not None:
            self._changed(plugin_id)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, plugin_id: str) -> None:
        for listener in self._listeners:
            listener(plugin_id)
