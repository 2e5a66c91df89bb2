"""The loaded plugins of this process, keyed by plugin id, and the workers that run them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .host import Workers
from .loader import LoadedPlugin

__all__ = ["PluginRegistry"]

Listener = Callable[[str], None]


class PluginRegistry:
    """plugin_id → the last good ``LoadedPlugin``. Listeners hear of every change by plugin id.

    A replaced or removed version's worker process stops once its calls in flight have ended."""

    def __init__(self, workers: Workers | None = None) -> None:
        self.workers = workers or Workers()
        self._plugins: dict[str, LoadedPlugin] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        # plugin_id → why its file's current content does not load (set by the scanner).
        self.load_errors: dict[str, str] = {}

    async def load(self, path: Path, data: bytes, plugin_id: str, *, seconds: float | None = None) -> LoadedPlugin:
        """Execute ``data`` (the content of ``path``) in a new worker process; PluginLoadError
        says why it cannot be used. Not registered until ``put``."""
        return await self.workers.load(path, data, plugin_id, seconds=seconds)

    def get(self, plugin_id: str) -> LoadedPlugin | None:
        return self._plugins.get(plugin_id)

    def ids(self) -> set[str]:
        return set(self._plugins)

    def put(self, plugin: LoadedPlugin) -> None:
        with self._lock:
            old = self._plugins.get(plugin.plugin_id)
            self._plugins[plugin.plugin_id] = plugin
        if old is not None and old is not plugin:
            self.workers.retire(old)
        self._changed(plugin.plugin_id)

    def remove(self, plugin_id: str) -> None:
        with self._lock:
            gone = self._plugins.pop(plugin_id, None)
        if gone is not None:
            self.workers.retire(gone)
            self._changed(plugin_id)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, plugin_id: str) -> None:
        for listener in self._listeners:
            listener(plugin_id)

    async def close(self) -> None:
        """Stop every worker process (the server is stopping)."""
        await self.workers.close()
