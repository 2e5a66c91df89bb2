"""Cache invalidation between processes sharing one PostgreSQL database (LISTEN/NOTIFY).

Each process caches interface bindings and listings. When one process changes an interface it
sends ``NOTIFY rustbill_cache, '<interface id>'``; every process (itself included, harmlessly)
evicts that interface. On SQLite there is a single process and nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

__all__ = ["PgInvalidation"]

log = logging.getLogger(__name__)
CHANNEL = "rustbill_cache"


class PgInvalidation:
    def __init__(self, url: str, on_change: Callable[[uuid.UUID | None], None]) -> None:
        u = make_url(url)
        self._dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_change = on_change
        self._listen: asyncpg.Connection | None = None
        self._send: asyncpg.Connection | None = None
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        self._listen = await asyncpg.connect(self._dsn)
        await self._listen.add_listener(CHANNEL, self._received)
        self._listen.add_termination_listener(self._lost)

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_change(uuid.UUID(payload) if payload else None)
        except ValueError:
            self._on_change(None)

    def _lost(self, _conn: object) -> None:
        if self._closing:
            return
        log.warning("cache invalidation connection lost; evicting everything and reconnecting")
        self._on_change(None)
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self.start()
                self._on_change(None)
                return
            except Exception as exc:
                log.warning("cache invalidation reconnect failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    def publish(self, interface_id: uuid.UUID) -> None:
        self._spawn(self._notify(str(interface_id)))

    async def _notify(self, payload: str) -> None:
        try:
            async with self._send_lock:
                if self._send is None or self._send.is_closed():
                    self._send = await asyncpg.connect(self._dsn)
                await self._send.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        except Exception as exc:
            log.warning("cache invalidation notify failed: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for t in list(self._tasks):
            t.cancel()
        for conn in (self._listen, self._send):
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()
