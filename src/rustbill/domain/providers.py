"""Calls to providers (prices, products, instances, balance) and plugin admin pages/actions."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import Database, Instance, Product, rowcount
from ..errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RustBillError,
    Unavailable,
)
from ..ids import new_id, utcnow
from ..inputs import loads_strict, shown
from ..plugins import Binding, PluginRuntime
from ..plugins.contract import (
    Price,
    ProviderInstance,
    ShapeError,
    UpstreamBalance,
    check_admin_page,
    check_balance,
    check_found_instance,
    check_instance,
    check_instance_list,
    check_json_result,
    check_price,
    check_products,
)
from .processes import ProcessRegistry
from .templates import spec_template

__all__ = ["PROVISIONING", "UNKNOWN", "Providers", "SyncResult", "validate_spec"]

log = logging.getLogger(__name__)

PROVISIONING = "provisioning"
# A create_instance call that ended without an answer (timeout, lost connection, cancelled), or an
# order whose process died while asking: the provider may or may not have opened the instance.
UNKNOWN = "unknown"
# Statuses of an order that has no provider instance id yet (an unsettled order).
UNSETTLED = (PROVISIONING, UNKNOWN)
# A keyed retry that finds another request of the same order settling it waits this long.
_BUSY_RETRY_SECONDS = 2
_ACTION_RE = re.compile(r"^admin_[A-Za-z0-9_]{1,100}$")
_SPEC_LIMITS = {
    "cpu_cores": (1, 1024),
    "memory_gb": (1, 65536),
    "disk_gb": (1, 1_000_000),
    "bandwidth_mbps": (0, 1_000_000),
}
_PRODUCT_FIELDS = ("name", "description", "price", "currency", "group_id", "specs", "billing_cycles")


@dataclass(slots=True)
class SyncResult:
    created: int
    updated: int
    deactivated: int
    unchanged: int
    products: list[ProductRecord]


def validate_spec(spec: dict[str, Any], template: dict[str, Any] | None = None) -> None:
    """Check a ServerSpec's numbers, and, when the provider has a spec template, its fields
    (required, allowed options, min/max)."""
    for key, (lo, hi) in _SPEC_LIMITS.items():
        v = spec.get(key, 0)
        if not lo <= v <= hi:
            raise InvalidArgument(f"{key} must be between {lo} and {hi}, got {v}")
    for key in ("region", "os"):
        if len(spec.get(key, "")) > 200:
            raise InvalidArgument(f"{key} is longer than 200 characters")
    extra = spec.get("extra_specs", {})
    if len(extra) > 64:
        raise InvalidArgument("extra_specs has more than 64 entries")
    for k, v in extra.items():
        if not k or len(k) > 100 or len(v) > 1000:
            raise InvalidArgument(f"extra_specs entry {shown(k)} is empty or too long")
    if not template:
        return
    for f in template.get("fields", []):
        key = f["key"]
        if key in _SPEC_LIMITS or key in ("region", "os"):
            value: Any = spec.get(key)
            present = value not in (None, "", 0)
        else:
            value = extra.get(key)
            present = value not in (None, "")
        if not present:
            if f["required"]:
                raise InvalidArgument(f"{key} is required by this provider")
            continue
        if f["options"] and str(value) not in f["options"]:
            raise InvalidArgument(f"{key} must be one of {', '.join(f['options'])}; got {shown(value)}")
        if f["min"] or f["max"]:
            try:
                n = Decimal(str(value))
            except ArithmeticError:
                raise InvalidArgument(f"{key} must be a number, got {shown(value)}") from None
            if n < f["min"] or (f["max"] and n > f["max"]):
                raise InvalidArgument(f"{key} must be between {f['min']} and {f['max']}, got {value}")


class Providers:
    def __init__(
        self,
        db: Database,
        runtime: PluginRuntime,
        *,
        processes: ProcessRegistry | None = None,
        reconcile_interval: float = 10.0,
        release_after: float = 600.0,
    ) -> None:
        self._db = db
        self._runtime = runtime
        # Who is alive; ``processes.id`` is the owner this process writes on the orders it opens.
        self.processes = processes if processes is not None else ProcessRegistry(db)
        # The background reconciler's period (0: off): the "retry in N s" of an order it will settle.
        self.reconcile_interval = reconcile_interval
        # The reconciler releases an order the provider has nothing for only when its last
        # create_instance attempt is at least this many seconds old: a remote provider (another
        # RustBill) may still be acting on a request it received before this side gave up.
        self.release_after = release_after
        # Called with (outcome, by) for every order settled: the metrics.
        self.observer: Callable[[str, str], None] | None = None
        # Orders this process is working on (opening, or settling): never touched twice at once.
        self._busy: set[uuid.UUID] = set()
        self._late: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop waiting for late answers of cut-off create_instance calls."""
        for t in list(self._late):
            t.cancel()
        await asyncio.gather(*self._late, return_exceptions=True)

    # ---- admin page and actions ----

    async def admin_page(self, interface_id: uuid.UUID) -> tuple[str, str]:
        b = await self._runtime.bind(interface_id)
        if not self._runtime.has(b, "admin_page"):
            raise NotFound(f"plugin {b.plugin_id!r} has no admin page")
        return await self._runtime.call(b, "admin_page", check=lambda r: check_admin_page(r, b.display_name))

    async def call_action(self, interface_id: uuid.UUID, function: str, args_json: str) -> str:
        if not function.startswith("admin_"):
            raise PermissionDenied(f"only admin_* functions can be called as actions; {shown(function)} cannot")
        if function == "admin_page":
            raise InvalidArgument("admin_page is not an action; use GetPluginAdminPage")
        if not _ACTION_RE.match(function):
            raise InvalidArgument(f"function name {shown(function)} is not valid")
        args = loads_strict(args_json, "args_json") if args_json.strip() else {}
        if not isinstance(args, dict):
            raise InvalidArgument(f"args_json must be a JSON object, not {type(args).__name__}")
        b = await self._runtime.bind(interface_id)
        # Arguments join the config, but never replace a configured field: an action must not be
        # able to point the interface's credentials at another host.
        clash = sorted(set(args) & (set(b.config) | set(b.plugin.config_schema.get("properties") or {})))
        if clash:
            raise InvalidArgument(f"args_json cannot override configuration field(s): {', '.join(clash)}")
        merged = {**b.config, **args}
        return await self._runtime.call(b, function, config=merged, check=lambda r: check_json_result(r, function))

    # ---- provider calls ----

    async def query_price(self, interface_id: uuid.UUID, spec: dict[str, Any]) -> Price:
        validate_spec(spec)
        b = await self._runtime.bind_provider(interface_id)
        validate_spec(spec, await spec_template(self._runtime, b))
        return await self._runtime.call(b, "query_price", spec, check=check_price)

    async def balance(self, interface_id: uuid.UUID) -> UpstreamBalance:
        b = await self._runtime.bind_provider(interface_id)
        return await self._runtime.call(b, "get_upstream_balance", check=check_balance)

    async def instance_status(self, interface_id: uuid.UUID, instance_id: str) -> ProviderInstance:
        instance_id = _check_instance_id(instance_id)
        b = await self._runtime.bind_provider(interface_id)
        return await self._status(b, instance_id)

    async def _status(self, b: Binding, instance_id: str) -> ProviderInstance:
        result = await self._runtime.call(
            b,
            "get_instance_status",
            instance_id,
            check=lambda r: None if r is None else check_instance(r, "get_instance_status", need_id=False),
        )
        if result is None:
            raise NotFound(f"instance {shown(instance_id)} not found at provider {b.display_name!r}")
        return result

    async def upstream_instances(self, interface_id: uuid.UUID) -> list[ProviderInstance]:
        """The provider's instances; local instances linked to them get their status and IP."""
        b = await self._runtime.bind_provider(interface_id)
        items: list[ProviderInstance] = await self._runtime.call(
            b, "sync_upstream_instances", check=check_instance_list
        )
        by_id = {i["instance_id"]: i for i in items}
        async with self._db.write() as s:
            rows = (
                await s.execute(
                    select(Instance).where(
                        Instance.interface_id == interface_id, Instance.provider_instance_id.in_(list(by_id))
                    )
                )
            ).scalars()
            now = utcnow()
            for row in rows:
                item = by_id[row.provider_instance_id or ""]
                if (row.status, row.ip_address) != (item["status"], item["ip_address"]):
                    row.status, row.ip_address, row.updated_at = item["status"], item["ip_address"], now
        return items

    async def import_instance(self, interface_id: uuid.UUID, instance_id: str) -> Instance:
        instance_id = _check_instance_id(instance_id)
        b = await self._runtime.bind_provider(interface_id)
        async with self._db.read() as s:
            existing = (
                await s.execute(
                    select(Instance.id).where(
                        Instance.interface_id == interface_id, Instance.provider_instance_id == instance_id
                    )
                )
            ).scalar_one_or_none()
        if existing is not None:
            raise AlreadyExists(f"instance {shown(instance_id)} is already imported as {existing}")
        st = await self._status(b, instance_id)
        now = utcnow()
        row = Instance(
            id=new_id(),
            interface_id=interface_id,
            provider_instance_id=instance_id,
            status=st["status"],
            ip_address=st["ip_address"],
            server_spec={},
            origin="imported",
            created_at=now,
            updated_at=now,
        )
        try:
            await self._db.add(row)
        except IntegrityError:
            raise AlreadyExists(f"instance {shown(instance_id)} is already imported") from None
        return row

    async def create_instance(
        self,
        interface_id: uuid.UUID,
        spec: dict[str, Any],
        *,
        has_spec: bool,
        idempotency_key: str | None,
        customer_id: uuid.UUID | None,
        on_reserve: Callable[[AsyncSession, Instance], Awaitable[None]] | None = None,
    ) -> Instance:
        """Open an instance at the provider and record it locally.

        A row is reserved first (status "provisioning"), so that an instance the provider opened is
        never forgotten even if this process dies mid-call; it is filled in when the provider answers
        and removed when the provider fails. With an ``idempotency-key`` a retry returns the same
        instance instead of opening a second one.

        ``on_reserve(session, row)`` runs in the reservation's transaction (only when a new row is
        reserved, never for a retry); when it raises, nothing is reserved and the provider is not
        asked. ``domain.orders`` debits the order there.
        """
        if not has_spec:
            raise InvalidArgument("server_spec is required")
        validate_spec(spec)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise InvalidArgument("idempotency-key must be 1 to 200 characters")
        b = await self._runtime.bind_provider(interface_id)
        validate_spec(spec, await spec_template(self._runtime, b))

        if idempotency_key:
            prior = await self._by_key(interface_id, customer_id, idempotency_key)
            if prior is not None:
                return await self._resume(b, prior, idempotency_key)
        now = utcnow()
        row = Instance(
            id=new_id(),
            interface_id=interface_id,
            provider_instance_id=None,
            status=PROVISIONING,
            ip_address="",
            server_spec=spec,
            origin="created",
            customer_id=customer_id,
            idempotency_key=idempotency_key,
            owner=self.processes.id,
            attempted_at=now,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._db.write() as s:
                s.add(row)
                if on_reserve is not None:
                    await s.flush()  # a concurrent order with the same key fails here, before on_reserve
                    await on_reserve(s, row)
        except IntegrityError:
            prior = await self._by_key(interface_id, customer_id, idempotency_key or "")
            if prior is None:
                raise
            return await self._resume(b, prior, idempotency_key or "")
        self._busy.add(row.id)
        return await self._open(b, row)

    async def _resume(self, b: Binding, prior: Instance, key: str) -> Instance:
        """A retry of a keyed order (docs/plugins.md, section 10):

        - recorded → that instance;
        - an attempt still running (its process is alive) → UNAVAILABLE "still being opened";
        - otherwise the order is settled now: with ``find_instance``, the provider's instance is
          recorded and returned, or, when the provider has none, the order is opened again with the
          same ``request_id``; if ``find_instance`` fails → UNAVAILABLE "being reconciled". A plugin
          without ``find_instance`` is asked ``create_instance`` again with the same ``request_id``.
        """
        if prior.provider_instance_id is not None:
            return prior
        if await self._attempt_running(prior):
            if prior.status == PROVISIONING:
                n = self._open_hint(prior)
                raise Unavailable(f"order {shown(key)} is still being opened; retry in {n} s", retry_after=n)
            n = self._reconcile_hint()
            raise Unavailable(f"order {shown(key)} is being reconciled; retry in {n} s", retry_after=n)
        if not await self._claim(prior):  # another request or the reconciler is settling it right now
            n = _BUSY_RETRY_SECONDS
            raise Unavailable(f"order {shown(key)} is being reconciled; retry in {n} s", retry_after=n)
        if not self._runtime.has(b, "find_instance"):
            # The plugin cannot say what the lost attempt did: ask create_instance again with the same
            # request_id (an idempotent plugin returns what it opened); the row stays "unknown" on failure.
            await self._attempting(prior)
            return await self._open(b, prior)
        try:
            found = await self._find(b, prior)
        except RustBillError as exc:
            n = self._reconcile_hint()
            log.warning(
                "order %s (key %s) at provider %s is not settled: %s; left %r for the reconciler",
                prior.id, shown(key), b.display_name, exc.message, UNKNOWN,
            )  # fmt: skip
            raise Unavailable(f"order {shown(key)} is being reconciled; retry in {n} s", retry_after=n) from None
        if found is not None:
            return await self._record(b, prior, found, by="retry")
        # The provider has nothing for it: open it again, same request_id, as a fresh attempt.
        await self._attempting(prior, status=PROVISIONING)
        log.info("order %s at provider %s: not opened by the lost attempt; opening it again", prior.id, b.display_name)
        self.observe("reopened", "retry")
        return await self._open(b, prior)

    async def _attempting(self, row: Instance, *, status: str | None = None) -> None:
        """A claimed order is about to be asked ``create_instance`` again: note when (and its new status)."""
        now = utcnow()
        values: dict[str, Any] = {"attempted_at": now, "updated_at": now}
        if status is not None:
            values["status"] = status
        async with self._db.write() as s:
            await s.execute(
                update(Instance).where(Instance.id == row.id, Instance.owner == self.processes.id).values(**values)
            )
        for k, v in values.items():
            setattr(row, k, v)

    async def _open(self, b: Binding, row: Instance) -> Instance:
        """Ask ``create_instance`` for the reserved (or claimed) ``row``, owned by this process, and
        record the outcome."""
        abandoned: list[asyncio.Future[Any]] = []
        try:
            result = await self._runtime.call(
                b,
                "create_instance",
                {**row.server_spec, "request_id": str(row.id)},
                check=lambda r: check_instance(r, "create_instance", need_id=True),
                on_abandoned=abandoned.append,
            )
        except BaseException as exc:
            running = bool(abandoned)  # the call still runs in the plugin's worker until it ends or is killed
            try:
                if _maybe_done(exc) or row.status == UNKNOWN:
                    # (a retry of an order that ended without an answer must not forget that earlier attempt)
                    # The provider may have opened it: keep the row, so that nothing is forgotten. While
                    # the plugin's code still runs the row stays ours (its late answer is recorded);
                    # after that the reconciler or a keyed retry settles it.
                    async with self._db.write() as s:
                        await s.execute(
                            update(Instance)
                            .where(Instance.id == row.id)
                            .values(status=UNKNOWN, owner=self.processes.id if running else None, updated_at=utcnow())
                        )
                    log.error(
                        "order %s at provider %s ended without an answer (%s); recorded as %r%s",
                        row.id, b.display_name, getattr(exc, "message", type(exc).__name__), UNKNOWN,
                        "; the plugin's call still runs, its answer is awaited" if running
                        else " for the reconciler or a keyed retry",
                    )  # fmt: skip
                else:
                    async with self._db.write() as s:
                        await s.execute(delete(Instance).where(Instance.id == row.id))
            finally:
                if running:
                    self._await_late_answer(b, row, abandoned[0])
                else:
                    self._busy.discard(row.id)
            raise
        values = _settled(result)
        try:
            async with self._db.write() as s:
                res = await s.execute(update(Instance).where(Instance.id == row.id).values(**values))
            if rowcount(res) == 0:
                await self._record_again(b, row, values)
        except IntegrityError:
            log.error(
                "provider %s returned instance id %r which is already recorded; local row %s left as %r",
                b.display_name, result["instance_id"], row.id, UNKNOWN,
            )  # fmt: skip
            await self._unclaim(row, status=UNKNOWN)
            raise FailedPrecondition(
                f"provider returned instance {result['instance_id']!r}, which is already recorded locally"
            ) from None
        finally:
            self._busy.discard(row.id)
        for k, v in values.items():
            setattr(row, k, v)
        return row

    async def _record_again(self, b: Binding, row: Instance, values: dict[str, Any]) -> None:
        """The provider opened the order's instance, but its row is gone: this process was taken for
        dead (no heartbeat) and the order released meanwhile. An opened instance is never forgotten:
        the row is written again (without its idempotency-key if a new order took the key)."""
        log.error(
            "order %s at provider %s: instance %s was opened after the order had been released (was this "
            "process without heartbeat?); recording it again", row.id, b.display_name, values["provider_instance_id"],
        )  # fmt: skip
        fields = {
            c: getattr(row, c)
            for c in ("id", "interface_id", "server_spec", "origin", "customer_id", "idempotency_key", "created_at")
        }
        for key in (fields["idempotency_key"], None):
            try:
                await self._db.add(Instance(**{**fields, "idempotency_key": key, **values}))
                return
            except IntegrityError:
                if key is None:
                    raise

    # ---- settling orders whose outcome is unknown (keyed retries and the reconciler) ----

    def observe(self, outcome: str, by: str) -> None:
        if self.observer is not None:
            self.observer(outcome, by)

    def _reconcile_hint(self) -> int:
        return max(1, math.ceil(self.reconcile_interval)) if self.reconcile_interval > 0 else 10

    def _open_hint(self, row: Instance) -> int:
        left = self._runtime.timeout_for("create_instance") - (utcnow() - row.updated_at).total_seconds()
        return max(1, math.ceil(left)) if left > 0 else self._reconcile_hint()

    def _legacy_in_flight(self, row: Instance) -> bool:
        """A "provisioning" row without owner was reserved by a version before owners were kept:
        in flight until the create_instance timeout + 60 s have passed (the old rule)."""
        limit = timedelta(seconds=self._runtime.timeout_for("create_instance") + 60)
        return row.status == PROVISIONING and utcnow() - row.updated_at <= limit

    def settleable(self, row: Instance, alive: set[uuid.UUID]) -> bool:
        """Whether no attempt of this unsettled order can still be running, given the ids of the
        processes that are alive: its owner is dead, or it has none, or it is this process and this
        process is not working on it."""
        if row.id in self._busy:
            return False
        if row.owner is None:
            return not self._legacy_in_flight(row)
        if row.owner == self.processes.id:
            return row.id not in self._busy
        return row.owner not in alive

    async def _attempt_running(self, row: Instance) -> bool:
        if row.owner is None or row.owner == self.processes.id:
            return not self.settleable(row, set())
        return await self.processes.is_alive(row.owner)

    async def _claim(self, row: Instance) -> bool:
        """Make this process the owner of an unsettled order whose attempts are over (compare and
        set on the owner seen), so that nobody else settles or opens it meanwhile. Its status
        becomes "unknown": the earlier attempt's outcome is not known."""
        if row.id in self._busy:
            return False
        seen = Instance.owner.is_(None) if row.owner is None else Instance.owner == row.owner
        now = utcnow()
        async with self._db.write() as s:
            res = await s.execute(
                update(Instance)
                .where(
                    Instance.id == row.id,
                    Instance.provider_instance_id.is_(None),
                    Instance.status.in_(UNSETTLED),
                    seen,
                )
                .values(owner=self.processes.id, status=UNKNOWN, updated_at=now)
            )
        if rowcount(res) != 1:
            return False
        self._busy.add(row.id)
        row.owner, row.status, row.updated_at = self.processes.id, UNKNOWN, now
        return True

    async def _unclaim(self, row: Instance, *, status: str = UNKNOWN, keep_busy: bool = False) -> None:
        try:
            async with self._db.write() as s:
                await s.execute(
                    update(Instance)
                    .where(Instance.id == row.id, Instance.owner == self.processes.id)
                    .values(owner=None, status=status)
                )
            row.owner, row.status = None, status
        finally:
            if not keep_busy:
                self._busy.discard(row.id)

    async def _find(self, b: Binding, row: Instance) -> ProviderInstance | None:
        """``find_instance`` for a claimed order; any failure gives the claim back. While a
        find_instance cut off by its timeout still runs in the plugin's worker, this process asks no
        more about that order."""
        abandoned: list[asyncio.Future[Any]] = []
        try:
            return await self._runtime.call(
                b, "find_instance", str(row.id), check=check_found_instance, on_abandoned=abandoned.append
            )
        except BaseException:
            await asyncio.shield(self._unclaim(row, keep_busy=bool(abandoned)))
            if abandoned:  # (an asyncio future: its callbacks run on this loop)
                abandoned[0].add_done_callback(lambda _f: self._busy.discard(row.id))
            raise

    async def _record(self, b: Binding, row: Instance, found: ProviderInstance, *, by: str) -> Instance:
        """The provider has the claimed order's instance: record it."""
        values = _settled(found)
        try:
            async with self._db.write() as s:
                res = await s.execute(
                    update(Instance).where(Instance.id == row.id, Instance.owner == self.processes.id).values(**values)
                )
            if rowcount(res) == 0:
                # (only if this process was taken for dead and the order settled by another meanwhile)
                self._busy.discard(row.id)
                raise Unavailable(f"order {row.id} was settled by another process meanwhile; retry", retry_after=1)
        except IntegrityError:
            await self._unclaim(row)
            log.error(
                "order %s at provider %s: its instance %r is already recorded locally (imported?); left %r for "
                "an operator", row.id, b.display_name, found["instance_id"], UNKNOWN,
            )  # fmt: skip
            raise FailedPrecondition(
                f"the provider's instance {found['instance_id']!r} of this order is already recorded locally"
            ) from None
        self._busy.discard(row.id)
        for k, v in values.items():
            setattr(row, k, v)
        log.info(
            "order %s settled (%s): provider %s has instance %s (status %s, ip %s); recorded",
            row.id, by, b.display_name, row.provider_instance_id, row.status, row.ip_address or "-",
        )  # fmt: skip
        self.observe("found", by)
        return row

    async def _release(self, b: Binding, row: Instance, *, by: str) -> None:
        """The provider has no instance for the claimed order: delete its reservation."""
        try:
            async with self._db.write() as s:
                res = await s.execute(
                    delete(Instance).where(Instance.id == row.id, Instance.owner == self.processes.id)
                )
        finally:
            self._busy.discard(row.id)
        if rowcount(res) == 0:
            return  # (settled by another process meanwhile)
        log.info(
            "order %s settled (%s): provider %s has no instance for it; the order is released",
            row.id, by, b.display_name,
        )  # fmt: skip
        self.observe("released", by)

    def _too_young_to_release(self, row: Instance) -> bool:
        """Whether the order's last create_instance attempt is less than ``release_after`` old."""
        last = row.attempted_at or row.created_at
        return (utcnow() - last).total_seconds() < self.release_after

    async def settle(self, b: Binding, row: Instance, *, by: str = "reconciler") -> str:
        """Settle an unsettled order whose attempts are over with the plugin's ``find_instance``:
        "found" (recorded), "released" (deleted), "waiting" (the provider has nothing for it yet,
        but its last attempt is younger than ``release_after``: left "unknown", asked again) or
        "busy" (someone else is settling it). A failing ``find_instance`` raises its error and
        leaves the order as it was."""
        if not await self._claim(row):
            return "busy"
        found = await self._find(b, row)
        if found is None:
            if self._too_young_to_release(row):
                await self._unclaim(row)
                return "waiting"
            await self._release(b, row, by=by)
            return "released"
        await self._record(b, row, found, by=by)
        return "found"

    async def mark_unknown(self, row: Instance) -> bool:
        """An orphaned "provisioning" order of a plugin without ``find_instance``: record it as
        "unknown" (for a keyed retry or an operator)."""
        if not await self._claim(row):
            return False
        await self._unclaim(row)
        return True

    def _await_late_answer(self, b: Binding, row: Instance, ended: asyncio.Future[Any]) -> None:
        """When a cut-off create_instance call ends in the plugin's worker (it answers late, or the
        worker is killed at its deadline), record its answer (or give the order to the reconciler).
        (``ended`` is an asyncio future: its callbacks run on this loop.)"""

        def spawn(_f: asyncio.Future[Any]) -> None:
            task = asyncio.get_running_loop().create_task(
                self._late_answer(b, row, ended), name=f"late-answer-{row.id}"
            )
            self._late.add(task)
            task.add_done_callback(self._late.discard)

        ended.add_done_callback(spawn)

    async def _late_answer(self, b: Binding, row: Instance, ended: asyncio.Future[Any]) -> None:
        mine = (Instance.id == row.id, Instance.owner == self.processes.id, Instance.provider_instance_id.is_(None))
        try:
            result = None
            if not ended.cancelled() and ended.exception() is None:
                try:
                    result = check_instance(ended.result(), "create_instance", need_id=True)
                except ShapeError as exc:
                    log.warning("order %s: the late answer of create_instance is not usable: %s", row.id, exc)
            if result is not None:
                values = {
                    "provider_instance_id": result["instance_id"],
                    "status": result["status"] or "creating",
                    "ip_address": result["ip_address"],
                    "owner": None,
                    "updated_at": utcnow(),
                }
                try:
                    async with self._db.write() as s:
                        res = await s.execute(update(Instance).where(*mine).values(**values))
                        gone = rowcount(res) == 0 and await s.get(Instance, row.id) is None
                    if gone:
                        await self._record_again(b, row, values)
                    if rowcount(res) or gone:
                        log.info(
                            "order %s settled (late answer): provider %s answered create_instance after the "
                            "host stopped waiting: instance %s recorded", row.id, b.display_name, result["instance_id"],
                        )  # fmt: skip
                        self.observe("found", "late_answer")
                        return
                except IntegrityError:
                    log.error("order %s: late instance %r is already recorded locally", row.id, result["instance_id"])
            # The call is over without a usable answer: the reconciler (or a keyed retry) settles it.
            async with self._db.write() as s:
                await s.execute(update(Instance).where(*mine).values(owner=None))
        except Exception:
            log.exception("order %s: recording the late answer of create_instance failed", row.id)
        finally:
            self._busy.discard(row.id)

    async def _by_key(self, interface_id: uuid.UUID, customer_id: uuid.UUID | None, key: str) -> Instance | None:
        """The order ``customer_id`` placed at ``interface_id`` under ``key`` (keys are per caller)."""
        caller = Instance.customer_id.is_(None) if customer_id is None else Instance.customer_id == customer_id
        async with self._db.read() as s:
            return (
                await s.execute(
                    select(Instance).where(
                        Instance.interface_id == interface_id, caller, Instance.idempotency_key == key
                    )
                )
            ).scalar_one_or_none()

    # ---- products ----

    async def sync_products(self, interface_id: uuid.UUID) -> SyncResult:
        """Upsert the provider's products in one transaction; a re-run with nothing new writes nothing."""
        b = await self._runtime.bind_provider(interface_id)
        offered = await self._runtime.call(b, "sync_products", check=check_products)
        for attempt in range(3):
            try:
                return await self._apply_products(interface_id, offered)
            except IntegrityError:
                if attempt == 2:
                    raise
                continue  # a concurrent sync inserted the same products: compare again
        raise AssertionError("unreachable")

    async def _apply_products(self, interface_id: uuid.UUID, offered: list[dict[str, Any]]) -> SyncResult:
        now = utcnow()
        # Compare in a read transaction first: an unchanged catalogue writes nothing and never
        # takes the write lock (on SQLite, BEGIN IMMEDIATE would block other writers meanwhile).
        async with self._db.read() as s:
            existing = await _load_products(s, interface_id)
        plan = _plan(existing, offered, interface_id, now)
        if plan.writes:
            async with self._db.write() as s:
                existing = await _load_products(s, interface_id)  # again, under the write lock
                plan = _plan(existing, offered, interface_id, now)
                if plan.inserts:
                    await s.execute(insert(Product), plan.inserts)
                if plan.updates:
                    await s.execute(update(Product), plan.updates)
                if plan.gone:
                    await s.execute(
                        update(Product).where(Product.id.in_(plan.gone)).values(active=False, updated_at=now),
                        execution_options={"synchronize_session": False},
                    )
        return SyncResult(
            created=len(plan.inserts),
            updated=len(plan.updates),
            deactivated=len(plan.gone),
            unchanged=plan.unchanged,
            products=sorted(plan.result, key=lambda p: p.upstream_product_id),
        )


@dataclass(slots=True)
class ProductRecord:
    """A product as stored (read with a plain SELECT: cheaper than ORM objects for 10,000 rows)."""

    id: uuid.UUID
    interface_id: uuid.UUID
    upstream_product_id: str
    name: str
    description: str
    price: Decimal
    currency: str
    group_id: str
    specs: dict[str, str]
    billing_cycles: dict[str, str]
    active: bool
    created_at: datetime
    updated_at: datetime


_PRODUCT_COLUMNS = [Product.__table__.c[f] for f in ProductRecord.__slots__]


async def _load_products(s: Any, interface_id: uuid.UUID) -> dict[str, ProductRecord]:
    rows = await s.execute(select(*_PRODUCT_COLUMNS).where(Product.interface_id == interface_id))
    return {r.upstream_product_id: ProductRecord(*r) for r in rows}


@dataclass(slots=True)
class _Plan:
    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    gone: list[uuid.UUID]
    unchanged: int
    result: list[ProductRecord]

    @property
    def writes(self) -> bool:
        return bool(self.inserts or self.updates or self.gone)


def _plan(
    existing: dict[str, ProductRecord], offered: list[dict[str, Any]], interface_id: uuid.UUID, now: datetime
) -> _Plan:
    """What a sync must write, and the products as they will be stored."""
    plan = _Plan([], [], [], 0, [])
    for item in offered:
        row = existing.get(item["upstream_product_id"])
        if row is None:
            new = {"id": new_id(), "interface_id": interface_id, **item, "active": True,
                   "created_at": now, "updated_at": now}  # fmt: skip
            plan.inserts.append(new)
            plan.result.append(ProductRecord(**new))
        elif row.active and all(getattr(row, f) == item[f] for f in _PRODUCT_FIELDS):
            plan.unchanged += 1
            plan.result.append(row)
        else:
            changes = {f: item[f] for f in _PRODUCT_FIELDS}
            plan.updates.append({"id": row.id, **changes, "active": True, "updated_at": now})
            plan.result.append(replace(row, **changes, active=True, updated_at=now))
    offered_ids = {i["upstream_product_id"] for i in offered}
    plan.gone = [p.id for pid, p in existing.items() if pid not in offered_ids and p.active]
    return plan


def _settled(instance: ProviderInstance) -> dict[str, Any]:
    """The columns of an order once its provider has answered with its instance (no owner: settled)."""
    return {
        "provider_instance_id": instance["instance_id"],
        "status": instance["status"] or "creating",
        "ip_address": instance["ip_address"],
        "owner": None,
        "updated_at": utcnow(),
    }


def _check_instance_id(instance_id: str) -> str:
    instance_id = instance_id.strip()
    if not instance_id:
        raise InvalidArgument("instance_id is required")
    if len(instance_id) > 200:
        raise InvalidArgument("instance_id is longer than 200 characters")
    return instance_id


def _maybe_done(exc: BaseException) -> bool:
    """Whether a failed create_instance may still have opened the instance: a timeout, a
    cancelled call, or a connection lost after the request may have been sent."""
    if isinstance(exc, (asyncio.CancelledError, DeadlineExceeded)):
        return True
    return isinstance(exc, Unavailable) and exc.request_may_have_been_sent
