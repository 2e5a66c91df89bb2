"""Health of interfaces: on demand (CheckPluginHealth) and in the background."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..db import Database, PluginInterface
from ..errors import InterfaceDisabled, Internal, NotFound, PluginNotLoaded, RustBillError
from ..ids import utcnow
from ..plugins import PluginRuntime
from ..plugins.contract import check_health_result
from ..vault import SecretsKeyError
from .background import every
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
        self._soon: set[asyncio.Task[None]] = set()

    def check_soon(self, interface_id: uuid.UUID) -> None:
        """Check a new or re-enabled interface now, in the background, instead of showing it
        unhealthy until the next round (a client filtering providers by health would hide it)."""

        async def run() -> None:
            try:
                await self.check(interface_id)
            except RustBillError as exc:
                log.info("first health check of interface %s: %s", interface_id, exc.message)
            except Exception:
                log.exception("first health check of interface %s failed", interface_id)

        task = asyncio.get_running_loop().create_task(run(), name=f"health-check-{interface_id}")
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    async def close(self) -> None:
        """Cancel checks started by ``check_soon`` that are still running."""
        for t in list(self._soon):
            t.cancel()
        await asyncio.gather(*self._soon, return_exceptions=True)

    async def check(self, interface_id: uuid.UUID) -> HealthResult:
        """Run the interface's ``health_check`` and store the outcome.

        A plugin without ``health_check`` counts as healthy. A failing check is an answer
        (unhealthy, with the reason), not an RPC error; an unknown or disabled interface is.
        """
        result = await self._run(interface_id)
        await self._store({interface_id: result})
        return result

    async def _run(self, interface_id: uuid.UUID) -> HealthResult:
        """Unknown (NotFound) and disabled (InterfaceDisabled) interfaces are errors; an interface
        that cannot be bound (its plugin not loaded, its secrets or stored config unreadable) is
        unhealthy, with why: that is what an admin looking at its health must see."""
        try:
            binding = await self._runtime.bind(interface_id, require_enabled=False)
        except (PluginNotLoaded, SecretsKeyError, Internal) as exc:  # (Internal: its stored config unreadable)
            return HealthResult(False, exc.message, utcnow())
        if not binding.enabled:
            raise InterfaceDisabled(binding.display_name)
        error = None
        if self._runtime.has(binding, "health_check"):
            try:
                error = await self._runtime.call(binding, "health_check", check=check_health_result)
            except RustBillError as exc:
                error = exc.message
        else:
            error = self._runtime.trouble(binding)  # (a plugin suspended after faults is not healthy)
        return HealthResult(error is None, error, utcnow())

    async def _store(self, results: dict[uuid.UUID, HealthResult]) -> None:
        """Write results in one transaction (each only over an older one); tell the listings when a
        state changed."""
        changed: list[uuid.UUID] = []
        async with self._db.write() as s:
            rows = (await s.execute(select(PluginInterface).where(PluginInterface.id.in_(list(results))))).scalars()
            for row in rows:
                r = results[row.id]
                if row.last_check_at is not None and row.last_check_at > r.checked_at:
                    continue  # a check that started later (CheckPluginHealth during a round) was stored first
                if row.is_healthy != r.is_healthy or row.health_error != r.error:
                    changed.append(row.id)
                row.is_healthy, row.health_error, row.last_check_at = r.is_healthy, r.error, r.checked_at
        self._catalog.rows_checked(list(results))
        for iid in changed:
            self._catalog.health_changed(iid)

    async def check_all(self) -> int:
        """Check every enabled interface concurrently (at most ``concurrency`` at once), then store
        all results in one transaction; returns how many were checked."""
        async with self._db.read() as s:
            ids = list((await s.execute(select(PluginInterface.id).where(PluginInterface.enabled.is_(True)))).scalars())
        sem = asyncio.Semaphore(self._concurrency)
        results: dict[uuid.UUID, HealthResult] = {}

        async def one(iid: uuid.UUID) -> None:
            async with sem:
                try:
                    results[iid] = await self._run(iid)
                except (NotFound, InterfaceDisabled):
                    pass  # deleted or disabled meanwhile
                except Exception:
                    log.exception("health check of interface %s failed", iid)

        await asyncio.gather(*(one(i) for i in ids))
        if results:
            await self._store(results)
        return len(results)

    async def run(self, interval: float) -> None:
        """Check all enabled interfaces every ``interval`` seconds. With PostgreSQL, only one
        process does a round at a time (advisory lock)."""
        await every(interval, lambda: self._db.one_at_a_time(_HEALTH_LOCK, self.check_all), "background health round")
