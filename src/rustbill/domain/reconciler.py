"""The reconciler: settles orders whose outcome is unknown without waiting for their buyer.

Every ``plugins.reconcile_interval_seconds`` (in one process at a time: a PostgreSQL advisory lock)
it looks at the orders that have no provider instance id and no attempt running — left "unknown"
(timeout, lost connection, cancelled call) or "provisioning" by a process that died — and asks
the provider's optional ``find_instance(config, request_id)``:

- an instance → it is recorded (provider instance id, status, IP);
- None → the provider has nothing for the order: the reservation is deleted (the order is released),
  but only once its last create_instance attempt is ``plugins.release_after_seconds`` old (a remote
  provider may still act on a request it received before this side gave up); a younger order is left
  "unknown" and asked about again next round;
- an error → the order is left as it is and asked about again next round (logged once).

A plugin without ``find_instance`` cannot be asked: its orders stay "unknown" for a keyed retry
(which asks ``create_instance`` again with the same request_id) or an operator (logged once). The
reconciler never calls ``create_instance``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter

from sqlalchemy import select

from ..db import Database, Instance
from ..errors import RustBillError
from ..plugins import PluginRuntime
from .background import every
from .processes import ProcessRegistry
from .providers import PROVISIONING, UNKNOWN, UNSETTLED, Providers

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)
_RECONCILE_LOCK = 0x52425243  # "RBRC": one reconciler round at a time across processes
_BATCH = 500


class Reconciler:
    def __init__(
        self,
        db: Database,
        runtime: PluginRuntime,
        providers: Providers,
        processes: ProcessRegistry,
        *,
        concurrency: int = 8,
    ) -> None:
        self._db = db
        self._runtime = runtime
        self._providers = providers
        self._processes = processes
        self._concurrency = concurrency
        # (order id, what was said): each thing is logged once per order, not every round
        self._said: set[tuple[uuid.UUID, str]] = set()

    async def run(self, interval: float) -> None:
        """A round now (orders orphaned by a crash are settled at start), then every ``interval``;
        with PostgreSQL, one process at a time does a round."""
        await every(interval, lambda: self._db.one_at_a_time(_RECONCILE_LOCK, self.reconcile), "reconciler round")

    async def reconcile(self) -> Counter[str]:
        """One round; returns how many orders ended how (found, released, error, left, skipped, busy)."""
        await self._processes.reap()
        alive = await self._processes.alive()
        async with self._db.read() as s:
            rows = list(
                (
                    await s.execute(
                        select(Instance)
                        .where(
                            Instance.provider_instance_id.is_(None),
                            Instance.status.in_(UNSETTLED),
                            Instance.origin == "created",
                        )
                        .order_by(Instance.updated_at)
                        .limit(_BATCH)
                    )
                ).scalars()
            )
        due = [r for r in rows if self._providers.settleable(r, alive)]
        seen = {r.id for r in rows}
        self._said = {k for k in self._said if k[0] in seen}  # settled or gone: forget
        counts: Counter[str] = Counter()
        sem = asyncio.Semaphore(self._concurrency)

        async def one(row: Instance) -> None:
            async with sem:
                try:
                    counts[await self._one(row)] += 1
                except Exception:
                    log.exception("reconciling order %s failed", row.id)
                    counts["error"] += 1

        await asyncio.gather(*(one(r) for r in due))
        return counts

    def _once(self, row: Instance, what: str) -> bool:
        key = (row.id, what)
        if key in self._said:
            return False
        self._said.add(key)
        return True

    async def _one(self, row: Instance) -> str:
        try:
            b = await self._runtime.bind_provider(row.interface_id)
        except RustBillError as exc:
            if self._once(row, "bind"):
                log.warning("order %s cannot be reconciled now: %s (tried again every round)", row.id, exc.message)
            return "skipped"
        if not self._runtime.has(b, "find_instance"):
            if row.status == PROVISIONING:
                await self._providers.mark_unknown(row)
            if self._once(row, "no find_instance"):
                log.warning(
                    "order %s at provider %s: outcome unknown, and plugin %r has no find_instance to ask; left %r "
                    "for a keyed retry (create_instance again with the same request_id) or an operator",
                    row.id, b.display_name, b.plugin_id, UNKNOWN,
                )  # fmt: skip
            return "left"
        try:
            outcome = await self._providers.settle(b, row)
        except RustBillError as exc:
            if self._once(row, "error"):
                log.warning(
                    "order %s at provider %s could not be reconciled: %s; left %r, asked again every round",
                    row.id, b.display_name, exc.message, UNKNOWN,
                )  # fmt: skip
                self._providers.observe("error", "reconciler")
            return "error"
        if outcome == "waiting" and self._once(row, "waiting"):
            log.info(
                "order %s at provider %s: the provider has nothing for it yet; left %r and asked again every "
                "round, released if it still has nothing %.0f s after its last attempt",
                row.id, b.display_name, UNKNOWN, self._providers.release_after,
            )  # fmt: skip
        return outcome
