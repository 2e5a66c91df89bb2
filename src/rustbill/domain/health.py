"""Health of interfaces: on demand (CheckPluginHealth) and in the background."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text

from ..db import Database, PluginInterface
from ..errors import RustBillError
from ..ids import utcnow
from ..plugins import PluginRuntime
from ..plugins.contract import check_health_result
from .catalog import Catalog

__all__ = ["HealthResult", "HealthService"]

log = logging.getLogger(__name__)
_HEALTH_LOCK = 0x52424843  # "RBHC": one background round at a time across processes


@dataclass(frozen=True, slots=True)
class HealthResult:
    is_healthy: bool
    error: str | None
    checked_at: datetime


class HealthService:
    def __init__(self, db: Database, runtime: PluginRuntime, catalog: Catalog, *, concurrency: int = 32) -> None:
        self._db = db
        self._runtime = runtime
        self._catalog = catalog
        self._concurrency = concurrency

    async def check(self, interface_id: uuid.UUID) -> HealthResult:
        """Run the interface's ``health_check`` and store the outcome.

        A plugin without ``health_check`` counts as healthy. A failing check is an answer
        (unhealthy, with the reason), not an RPC error; an unknown or disabled interface is.
        """
        binding = None
        try:
            binding = await self._runtime.bind(interface_id)
        except RustBillError as exc:
            if exc.code.name != "FAILED_PRECONDITION" or "disabled" in exc.message:
                raise
            error: str | None = exc.message  # plugin not loaded: unhealthy, with why
        if binding is not None:
            error = None
            if self._runtime.has(binding, "health_check"):
                try:
                    error = await self._runtime.call(binding, "health_check", check=check_health_result)
                except RustBillError as exc:
                    error = exc.message
        result = HealthResult(error is None, error, utcnow())
        await self._store(interface_id, result)
        return result

    async def _store(self, interface_id: uuid.UUID, r: HealthResult) -> None:
        async with self._db.write() as s:
            row = await s.get(PluginInterface, interface_id)
            if row is None:
                return
            changed = row.is_healthy != r.is_healthy or row.health_error != r.error
            row.is_healthy, row.health_error, row.last_check_at = r.is_healthy, r.error, r.checked_at
        if changed:
            self._catalog.health_changed(interface_id)

    async def check_all(self) -> int:
        """Check every enabled interface concurrently (bounded); returns how many were checked."""
        async with self._db.read() as s:
            ids = list((await s.execute(select(PluginInterface.id).where(PluginInterface.enabled.is_(True)))).scalars())
        sem = asyncio.Semaphore(self._concurrency)

        async def one(iid: uuid.UUID) -> None:
            async with sem:
                try:
                    await self.check(iid)
                except RustBillError:
                    pass  # deleted or disabled meanwhile
                except Exception:
                    log.exception("health check of interface %s failed", iid)

        await asyncio.gather(*(one(i) for i in ids))
        return len(ids)

    async def run(self, interval: float) -> None:
        """Check all enabled interfaces every ``interval`` seconds. With PostgreSQL, only one
        process does a round at a time (advisory lock)."""
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background health round failed")
            await asyncio.sleep(interval)

    async def _round(self) -> None:
        if self._db.is_sqlite:
            await self.check_all()
            return
        async with self._db.engine.connect() as conn:
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _HEALTH_LOCK})).scalar()
            await conn.commit()
            if not got:
                return
            try:
                await self.check_all()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _HEALTH_LOCK})
                await conn.commit()
