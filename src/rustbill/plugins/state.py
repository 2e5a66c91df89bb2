"""Per-interface persistent state for plugins (``sdk.state()``), stored in ``plugin_state``.

Plugins run in worker processes; their ``sdk.state()`` requests come to the server, which owns
the database, with the interface of the call they belong to (``StateStore.handle``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..db import Database, PluginState, rowcount
from ..ids import utcnow

__all__ = ["StateStore"]

MAX_KEY = 200
MAX_VALUE_BYTES = 64 * 1024


def _encode(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state values must be JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise ValueError(f"state value larger than {MAX_VALUE_BYTES // 1024} KiB")
    return text


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
        raise ValueError(f"state keys must be strings of 1 to {MAX_KEY} characters")
    return key


class StateStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def handle(self, interface_id: str, op: str, args: dict[str, Any]) -> Any:
        """One ``sdk.state()`` request of a worker: ``op`` is get, set, add, delete or items."""
        iid = uuid.UUID(interface_id)
        if op == "get":
            return await self.get(iid, args["key"], args.get("default"))
        if op == "set":
            return await self.set(iid, args["key"], args.get("value"))
        if op == "add":
            return await self.add(iid, args["key"], args.get("value"))
        if op == "delete":
            return await self.delete(iid, args["key"])
        if op == "items":
            return await self.items(iid, args.get("prefix", ""))
        raise ValueError(f"unknown state operation {op!r}")

    async def get(self, interface_id: uuid.UUID, key: str, default: Any = None) -> Any:
        async with self._db.read() as s:
            row = await s.get(PluginState, (interface_id, _check_key(key)))
        return default if row is None else json.loads(row.value)

    async def set(self, interface_id: uuid.UUID, key: str, value: Any) -> None:
        text = _encode(value)
        for _ in range(3):
            try:
                async with self._db.write() as s:
                    row = await s.get(PluginState, (interface_id, _check_key(key)))
                    if row is None:
                        s.add(PluginState(interface_id=interface_id, key=key, value=text, updated_at=utcnow()))
                    else:
                        row.value, row.updated_at = text, utcnow()
                return
            except IntegrityError:
                continue  # inserted concurrently: update it
        raise RuntimeError(f"state key {key!r} could not be written")

    async def add(self, interface_id: uuid.UUID, key: str, value: Any) -> bool:
        """Insert ``key`` only if absent; True when this call inserted it (atomic across processes)."""
        text = _encode(value)
        try:
            await self._db.add(
                PluginState(interface_id=interface_id, key=_check_key(key), value=text, updated_at=utcnow())
            )
        except IntegrityError:
            return False
        return True

    async def delete(self, interface_id: uuid.UUID, key: str) -> bool:
        async with self._db.write() as s:
            res = await s.execute(
                delete(PluginState).where(PluginState.interface_id == interface_id, PluginState.key == _check_key(key))
            )
        return bool(rowcount(res))

    async def items(self, interface_id: uuid.UUID, prefix: str = "") -> dict[str, Any]:
        q = select(PluginState).where(PluginState.interface_id == interface_id).order_by(PluginState.key)
        if prefix:
            q = q.where(PluginState.key.startswith(prefix, autoescape=True))
        async with self._db.read() as s:
            return {r.key: json.loads(r.value) for r in (await s.execute(q)).scalars()}
