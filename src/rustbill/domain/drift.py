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

A condition is kept in ``drift_findings`` while it lasts: it is reported when it appears and again
only after it went away and came back, never on every round. Every finding is logged (WARNING) and
sent in one message per interface and round through the notifier interfaces (``[drift]
notifiers``, or every enabled one). With PostgreSQL one process does a round at a time (advisory
lock).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select

from ..db import Database, DriftFinding, Instance, PluginInterface, Product
from ..errors import RustBillError
from ..ids import utcnow
from ..money import money_text
from ..plugins import PluginRuntime
from .background import every
from .channels import Channels
from .providers import Providers

__all__ = ["DriftWatch", "Finding"]

log = logging.getLogger("rustbill.drift")
_DRIFT_LOCK = 0x52424446  # "RBDF": one round at a time across processes


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # price, removed, offered_again, new, orphan, gone, low_balance
    key: str  # what identifies it (a condition is remembered by it while it lasts)
    message: str

    @property
    def lasting(self) -> bool:
        return self.kind in ("orphan", "gone", "low_balance")


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

    # ---- one interface

    async def check(self, interface_id: uuid.UUID) -> list[Finding]:
        """Compare one upstream interface with this server; the findings not reported before."""
        binding = await self._runtime.bind_provider(interface_id)
        found = await self._products(interface_id)
        lasting = await self._instances(interface_id)
        low = binding.config.get("low_balance")
        if low not in (None, ""):
            bal = await self._providers.balance(interface_id)
            if Decimal(bal["balance"]) < Decimal(str(low)):
                lasting.append(
                    Finding(
                        "low_balance",
                        "low_balance",
                        f"the balance upstream is {bal['balance']} {bal['currency']}, below the {low} set as "
                        "low_balance: top it up before orders fail",
                    )
                )
        return found + await self._new_conditions(interface_id, lasting)

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
                    out.append(Finding("new", f"new:{p.upstream_product_id}", f"new product {p.name!r}"))
                continue
            if old.price != p.price or (old.billing_cycles or {}) != (p.billing_cycles or {}):
                cycles = "" if (old.billing_cycles or {}) == (p.billing_cycles or {}) else " (billing cycles too)"
                out.append(
                    Finding(
                        "price",
                        f"price:{p.upstream_product_id}",
                        f"the price of {p.name!r} changed from {money_text(old.price)} to {money_text(p.price)} "
                        f"{p.currency}{cycles}",
                    )
                )
            if not old.active:
                out.append(Finding("offered_again", f"back:{p.upstream_product_id}",
                                   f"{p.name!r} is offered again"))  # fmt: skip
        for pid, old in before.items():
            if old.active and pid not in offered:
                out.append(
                    Finding(
                        "removed",
                        f"removed:{pid}",
                        f"{old.name!r} is no longer offered upstream: deactivated here (not deleted)",
                    )
                )
        return out

    async def _instances(self, interface_id: uuid.UUID) -> list[Finding]:
        upstream = {i["instance_id"]: i for i in await self._providers.upstream_instances(interface_id)}
        async with self._db.read() as s:
            local = set(
                (
                    await s.execute(
                        select(Instance.provider_instance_id).where(
                            Instance.interface_id == interface_id, Instance.provider_instance_id.is_not(None)
                        )
                    )
                ).scalars()
            )
        out = [
            Finding(
                "orphan",
                f"orphan:{iid}",
                f"instance {iid} ({upstream[iid]['status']}, {upstream[iid]['ip_address'] or 'no IP'}) exists "
                "upstream but not here: ImportUpstreamInstance takes it in",
            )
            for iid in sorted(set(upstream) - local)
        ]
        out += [
            Finding("gone", f"gone:{iid}", f"instance {iid} is recorded here but the upstream no longer knows it")
            for iid in sorted(local - set(upstream))
        ]
        return out

    async def _new_conditions(self, interface_id: uuid.UUID, now: list[Finding]) -> list[Finding]:
        """Record the conditions that hold now; return those that were not recorded before, and
        forget those that went away (they are reported again if they come back)."""
        current = {f.key: f for f in now}
        async with self._db.write() as s:
            known = set(
                (await s.execute(select(DriftFinding.key).where(DriftFinding.interface_id == interface_id))).scalars()
            )
            gone = known - set(current)
            if gone:
                await s.execute(
                    delete(DriftFinding).where(DriftFinding.interface_id == interface_id, DriftFinding.key.in_(gone))
                )
            new = [f for k, f in current.items() if k not in known]
            for f in new:
                s.add(DriftFinding(interface_id=interface_id, key=f.key, message=f.message, created_at=utcnow()))
        for key in sorted(gone):
            log.info("drift at interface %s resolved: %s", interface_id, key)
        return new

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
            for f in findings:
                log.warning("drift at upstream %r (%s): %s", name, iid, f.message)
            if findings:
                await self._send(iid, name, findings)
            total += len(findings)
        return total

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
        await every(interval, lambda: self._db.one_at_a_time(_DRIFT_LOCK, self.round), "drift round", first_now=False)
