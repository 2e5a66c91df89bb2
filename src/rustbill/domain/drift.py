"""Drift between an upstream and this server, watched for the operator.

Every ``[drift] interval_seconds``, for each enabled ``upstream_provider`` interface:

- its products are synced (``Providers.sync_products``) and compared with what was stored before:
  a changed price or billing cycle, a product the upstream no longer offers (deactivated here,
  never deleted), one offered again, and a new one (not on the first sync) are **events**,
  reported when they happen;
- its instances upstream are compared with the local ones: an instance that exists upstream but
  not here (an orphan: ImportUpstreamInstance takes it in) and a local one the upstream no longer
  knows are **conditions**;
- its balance is compared with the interface config's ``low_balance`` (when set): below it is a
  condition.

Both are kept in ``drift_findings`` (key ``<kind>:<upstream id>``, or ``low_balance``), which the
console's Upstream page lists (``DriftService``):

- a condition while it lasts: it is reported when it appears and again only after it went away and
  came back, never on every round; it leaves the list by itself when it stops holding;
- an event until an admin acknowledges it (the operator has to act on a price change, and a
  notification alone is easily missed); the same event again (a second price change) replaces it,
  and a product offered again replaces its "removed" finding and vice versa.

Every new finding is logged (WARNING) and sent in one message per interface and round through the
notifier interfaces (``[drift] notifiers``, or every enabled one). With PostgreSQL one process
compares at a time (advisory lock); within a process, a round and a check asked for from the
console take turns.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select

from ..db import Database, DriftFinding, Instance, PluginInterface, Product, rowcount
from ..errors import FailedPrecondition, NotFound, RustBillError, Unavailable
from ..ids import utcnow
from ..money import money_text
from ..plugins import PluginRuntime
from .background import every
from .channels import Channels
from .providers import Providers

__all__ = ["CONDITIONS", "DriftWatch", "Finding", "kind_of", "subject_of"]

log = logging.getLogger("rustbill.drift")
_DRIFT_LOCK = 0x52424446  # "RBDF": one round at a time across processes


# Kinds that last until they stop holding; every other kind is an event.
CONDITIONS = frozenset({"orphan", "gone", "low_balance"})
# A product's events that replace each other's finding.
_SUPERSEDES = {"removed": "offered_again", "offered_again": "removed"}


def kind_of(key: str) -> str:
    return key.partition(":")[0]


def subject_of(key: str) -> str:
    """The upstream instance or product id a finding is about ("" for low_balance)."""
    return key.partition(":")[2]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # price, removed, offered_again, new, orphan, gone, low_balance
    key: str  # "<kind>:<upstream id>" or "low_balance": the finding's identity at its interface
    message: str

    @classmethod
    def of(cls, kind: str, subject: str, message: str) -> Finding:
        return cls(kind, f"{kind}:{subject}" if subject else kind, message)

    @property
    def lasting(self) -> bool:
        return self.kind in CONDITIONS


class DriftWatch:
    def __init__(
        self,
        db: Database,
        runtime: PluginRuntime,
        providers: Providers,
        channels: Channels,
        *,
        notifiers: list[str] | None = None,
    ) -> None:
        self._db = db
        self._runtime = runtime
        self._providers = providers
        self._channels = channels
        self._notifiers = [uuid.UUID(n) for n in notifiers or []]
        self._turn = asyncio.Lock()  # a round and a console's check in this process take turns

    # ---- one interface

    async def check(self, interface_id: uuid.UUID) -> list[Finding]:
        """Compare one upstream interface with this server; the findings not reported before."""
        binding = await self._runtime.bind_provider(interface_id)
        events = await self._products(interface_id)
        lasting = await self._instances(interface_id)
        low = binding.config.get("low_balance")
        if low not in (None, ""):
            bal = await self._providers.balance(interface_id)
            if Decimal(bal["balance"]) < Decimal(str(low)):
                lasting.append(
                    Finding.of(
                        "low_balance",
                        "",
                        f"the balance upstream is {bal['balance']} {bal['currency']}, below the {low} set as "
                        "low_balance: top it up before orders fail",
                    )
                )
        return await self._record(interface_id, events, lasting)

    async def _products(self, interface_id: uuid.UUID) -> list[Finding]:
        async with self._db.read() as s:
            before = {
                r.upstream_product_id: r
                for r in (
                    await s.execute(
                        select(
                            Product.upstream_product_id, Product.name, Product.price, Product.billing_cycles,
                            Product.active,
                        ).where(Product.interface_id == interface_id)
                    )
                ).all()
            }  # fmt: skip
        result = await self._providers.sync_products(interface_id)
        out: list[Finding] = []
        offered = set()
        for p in result.products:
            offered.add(p.upstream_product_id)
            old = before.get(p.upstream_product_id)
            if old is None:
                if before:
                    out.append(Finding.of("new", p.upstream_product_id, f"new product {p.name!r}"))
                continue
            if old.price != p.price or (old.billing_cycles or {}) != (p.billing_cycles or {}):
                cycles = "" if (old.billing_cycles or {}) == (p.billing_cycles or {}) else " (billing cycles too)"
                out.append(
                    Finding.of(
                        "price",
                        p.upstream_product_id,
                        f"the price of {p.name!r} changed from {money_text(old.price)} to {money_text(p.price)} "
                        f"{p.currency}{cycles}",
                    )
                )
            if not old.active:
                out.append(Finding.of("offered_again", p.upstream_product_id, f"{p.name!r} is offered again"))
        for pid, old in before.items():
            if old.active and pid not in offered:
                out.append(
                    Finding.of(
                        "removed",
                        pid,
                        f"{old.name!r} is no longer offered upstream: deactivated here (not deleted)",
                    )
                )
        return out

    async def _instances(self, interface_id: uuid.UUID) -> list[Finding]:
        upstream = {i["instance_id"]: i for i in await self._providers.upstream_instances(interface_id)}
        async with self._db.read() as s:
            rows = await s.execute(
                select(Instance.provider_instance_id).where(
                    Instance.interface_id == interface_id, Instance.provider_instance_id.is_not(None)
                )
            )
            local = {p for p in rows.scalars() if p is not None}  # (the query's filter, for the type checker)
        out = [
            Finding.of(
                "orphan",
                iid,
                f"instance {iid} ({upstream[iid]['status']}, {upstream[iid]['ip_address'] or 'no IP'}) exists "
                "upstream but not here: ImportUpstreamInstance takes it in",
            )
            for iid in sorted(set(upstream) - local)
        ]
        out += [
            Finding.of("gone", iid, f"instance {iid} is recorded here but the upstream no longer knows it")
            for iid in sorted(local - set(upstream))
        ]
        return out

    async def _record(self, interface_id: uuid.UUID, events: list[Finding], now: list[Finding]) -> list[Finding]:
        """Keep ``events`` and the conditions that hold ``now``; return the events and the
        conditions not recorded before, and forget the conditions that went away (they are reported
        again if they come back)."""
        current = {f.key: f for f in now}
        async with self._db.write() as s:
            known = set(
                (await s.execute(select(DriftFinding.key).where(DriftFinding.interface_id == interface_id))).scalars()
            )
            gone = {k for k in known if kind_of(k) in CONDITIONS} - set(current)
            replaced = {f.key for f in events} | {
                f"{_SUPERSEDES[f.kind]}:{subject_of(f.key)}" for f in events if f.kind in _SUPERSEDES
            }
            dropped = gone | (replaced & known)
            if dropped:
                await s.execute(
                    delete(DriftFinding).where(DriftFinding.interface_id == interface_id, DriftFinding.key.in_(dropped))
                )
            new = [f for k, f in current.items() if k not in known]
            for f in events + new:
                s.add(DriftFinding(interface_id=interface_id, key=f.key, message=f.message, created_at=utcnow()))
        for key in sorted(gone):
            log.info("drift at interface %s resolved: %s", interface_id, key)
        return events + new

    # ---- what the console shows (DriftService)

    async def findings(self, interface_id: uuid.UUID | None) -> list[DriftFinding]:
        """The open findings of one interface (None: of all), newest first. An orphan imported
        since the last comparison is left out (the next comparison forgets it)."""
        q = select(DriftFinding).order_by(DriftFinding.created_at.desc(), DriftFinding.key)
        if interface_id is not None:
            q = q.where(DriftFinding.interface_id == interface_id)
        async with self._db.read() as s:
            rows = list((await s.execute(q)).scalars())
            orphans = {(f.interface_id, subject_of(f.key)) for f in rows if kind_of(f.key) == "orphan"}
            taken: set[tuple[uuid.UUID, str | None]] = set()
            if orphans:
                local = await s.execute(
                    select(Instance.interface_id, Instance.provider_instance_id).where(
                        Instance.interface_id.in_({i for i, _ in orphans}),
                        Instance.provider_instance_id.in_({p for _, p in orphans}),
                    )
                )
                taken = {(i, p) for i, p in local.all()}
        return [f for f in rows if kind_of(f.key) != "orphan" or (f.interface_id, subject_of(f.key)) not in taken]

    async def check_now(self, interface_id: uuid.UUID) -> list[DriftFinding]:
        """Compare one interface now, reported like a round's findings; its open findings."""
        async with self._db.read() as s:
            row = await s.get(PluginInterface, interface_id)
        if row is None:
            raise NotFound(f"plugin interface {interface_id} not found")
        if row.plugin_type != "upstream_provider":
            raise FailedPrecondition(
                f"interface {row.display_name!r} is a {row.plugin_type}: drift is watched at upstream_provider "
                "interfaces only"
            )
        if not row.enabled:
            raise FailedPrecondition(f"interface {row.display_name!r} is disabled: enable it to compare it")

        async def compare() -> None:
            await self._report(interface_id, row.display_name, await self.check(interface_id))

        async with self._turn:
            if not await self._db.one_at_a_time(_DRIFT_LOCK, compare):
                raise Unavailable("another process is comparing the upstreams right now; try again", retry_after=5)
        return await self.findings(interface_id)

    async def acknowledge(self, interface_id: uuid.UUID, key: str) -> None:
        """Take an event off the list; a condition is refused (it leaves when it stops holding)."""
        kind = kind_of(key)
        if kind in CONDITIONS:
            how = {
                "orphan": "import the instance (ImportUpstreamInstance) or delete it upstream",
                "gone": "settle the local record of the instance",
                "low_balance": "top up the balance upstream or lower low_balance",
            }[kind]
            raise FailedPrecondition(
                f"{key!r} is a condition, not an event: it leaves the list when it stops holding ({how})"
            )
        async with self._db.write() as s:
            result = await s.execute(
                delete(DriftFinding).where(DriftFinding.interface_id == interface_id, DriftFinding.key == key)
            )
            if rowcount(result) != 1:
                raise NotFound(f"no drift finding {key!r} at interface {interface_id}")

    # ---- rounds

    async def round(self) -> int:
        """Check every enabled upstream interface; report what is new. Returns how many findings."""
        async with self._db.read() as s:
            rows = (
                await s.execute(
                    select(PluginInterface.id, PluginInterface.display_name).where(
                        PluginInterface.enabled.is_(True), PluginInterface.plugin_type == "upstream_provider"
                    )
                )
            ).all()
        total = 0
        for iid, name in rows:
            try:
                findings = await self.check(iid)
            except RustBillError as exc:
                log.warning("drift check of upstream %r (%s) failed: %s", name, iid, exc.message)
                continue
            await self._report(iid, name, findings)
            total += len(findings)
        return total

    async def _report(self, interface_id: uuid.UUID, name: str, findings: list[Finding]) -> None:
        for f in findings:
            log.warning("drift at upstream %r (%s): %s", name, interface_id, f.message)
        if findings:
            await self._send(interface_id, name, findings)

    async def _send(self, interface_id: uuid.UUID, name: str, findings: list[Finding]) -> None:
        targets = self._notifiers
        if not targets:
            async with self._db.read() as s:
                targets = list(
                    (
                        await s.execute(
                            select(PluginInterface.id).where(
                                PluginInterface.enabled.is_(True), PluginInterface.plugin_type == "notifier"
                            )
                        )
                    ).scalars()
                )
        message: dict[str, Any] = {
            "id": f"drift-{uuid.uuid4()}",
            "event": "upstream.drift",
            "subject": f"Upstream {name!r}: {len(findings)} change(s) to look at",
            "text": "\n".join(f"- {f.message}" for f in findings),
            "data": {
                "interface_id": str(interface_id),
                "interface": name,
                "findings": [{"kind": f.kind, "message": f.message} for f in findings],
            },
        }
        for target in targets:
            try:
                await self._channels.send(target, message)
            except RustBillError as exc:
                log.error("drift findings of %r not sent through notifier %s: %s", name, target, exc.message)

    async def run(self, interval: float) -> None:
        await every(interval, self._locked_round, "drift round", first_now=False)

    async def _locked_round(self) -> bool:
        """One round, when it is this process's turn (rounds and "Compare now" take turns; across
        processes, through the database): False when another process has it."""
        async with self._turn:
            return await self._db.one_at_a_time(_DRIFT_LOCK, self.round)
