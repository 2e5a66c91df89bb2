"""A customer's CreateUpstreamInstance: priced, debited and opened as one unit.

The money rules, in order:

1. A retry of a keyed order (an ``idempotency-key`` this customer already used at this interface)
   is neither priced nor debited again: ``Providers.create_instance`` returns (or resumes) the
   first order.
2. A new order is priced with the provider's ``query_price`` for the same spec **when it is
   placed**: that is what is debited and what the ledger entry's note shows, whatever an earlier
   QueryPrice said (a quote is not a reservation; the provider may have changed its prices since).
   A caller that must not pay more than it was quoted sends a ``max-price`` request header (a
   decimal in the balance currency): a price above it is FAILED_PRECONDITION, with nothing opened
   and nothing debited. The price must be in the balance currency (``[billing] currency``), not
   negative, with at most 8 decimal places; the debit is exactly that amount (no rounding here: a
   provider that wants cents quotes cents).
3. The debit is written in the same transaction that reserves the instance row (``on_reserve``):
   when the balance does not cover it, FAILED_PRECONDITION, and there is neither a row nor a debit
   and the provider is not asked. One "order" entry per instance row (a database constraint).
4. When the provider fails for good, ``Providers`` removes the row, and the debit is given back
   with a "refund" entry right away; if this process stops before that, the refund sweep
   (``Ledger.refund_failed_orders``, at start and every ``[billing] refund_sweep_seconds``) does it.
   An order whose outcome is unknown keeps its row (status "unknown") and its debit: the instance
   may exist, and a retry with the same key settles it.

Admins' orders are not charged (they order for the house).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..auth import Principal
from ..db import Database, Instance
from ..errors import FailedPrecondition, InvalidArgument
from .ledger import Ledger, parse_amount
from .providers import Providers

__all__ = ["OrderRequest", "Orders"]

log = logging.getLogger("rustbill.orders")


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as its caller placed it (CreateUpstreamInstance)."""

    interface_id: uuid.UUID
    spec: dict[str, Any]
    has_spec: bool  # (a request without server_spec is a retry's, answered from its key alone)
    idempotency_key: str | None
    principal: Principal | None  # None or an admin: ordered without a debit
    max_price: str | None = None  # the ``max-price`` header as sent (rule 2)


class _Order(TypedDict):
    """What every ``Providers.create_instance`` call of one order passes as ``**order``, typed so
    that the type checker matches each key against that method's keywords."""

    has_spec: bool
    idempotency_key: str | None


class Orders:
    def __init__(self, db: Database, providers: Providers, ledger: Ledger) -> None:
        self._db = db
        self._providers = providers
        self._ledger = ledger
        self._running: set[asyncio.Task[Instance]] = set()

    async def create(self, request: OrderRequest) -> Instance:
        """Place an order. It runs to its end even when the caller goes away (a reseller whose
        request timed out, a dropped connection): its outcome is then settled, and a retry with the
        same key finds it instead of an order left half-done."""
        sent = request.max_price
        limit = parse_amount(sent.strip(), "max-price") if sent is not None else None
        if limit is not None and limit < 0:
            raise InvalidArgument(f"max-price must not be negative, got {limit}")
        task = asyncio.ensure_future(self._create(request, limit))
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Instance]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # read here: when its caller went away, nobody else reads the error

    async def drain(self, grace: float) -> None:
        """At shutdown: let orders in progress finish (within ``grace`` seconds)."""
        if self._running:
            log.info("waiting up to %.0fs for %d order(s) in progress", grace, len(self._running))
            await asyncio.wait(list(self._running), timeout=grace)

    async def _create(self, request: OrderRequest, max_price: Decimal | None) -> Instance:
        interface_id, spec, principal = request.interface_id, request.spec, request.principal
        idempotency_key = request.idempotency_key
        order: _Order = {"has_spec": request.has_spec, "idempotency_key": idempotency_key}
        if principal is None or principal.is_admin:
            customer = principal.user_id if principal is not None else None
            return await self._providers.create_instance(interface_id, spec, customer_id=customer, **order)
        customer = principal.user_id
        if idempotency_key:
            prior = await self._prior(interface_id, customer, idempotency_key)
            if prior is not None:  # a retry: charged (or refunded) when it was first placed
                try:
                    return await self._providers.create_instance(interface_id, spec, customer_id=customer, **order)
                except Exception:
                    await self._refund_if_gone(prior, principal)
                    raise
        if not request.has_spec:
            raise InvalidArgument("server_spec is required")
        amount, quote = await self._price(interface_id, spec)
        if max_price is not None and amount > max_price:
            raise FailedPrecondition(
                f"the price is now {quote}, above the max-price {max_price} you sent: nothing was ordered or debited"
            )
        reserved: list[uuid.UUID] = []

        async def charge(s: AsyncSession, row: Instance) -> None:
            note = f"instance {row.id} at interface {interface_id}: {quote}"
            await self._ledger.charge(s, customer, amount, instance_id=row.id, note=note)
            reserved.append(row.id)

        try:
            inst = await self._providers.create_instance(
                interface_id, spec, customer_id=customer, on_reserve=charge, **order
            )
        except Exception:
            if reserved:
                await self._refund_if_gone(reserved[0], principal)
            raise
        log.info("order %s by %s: %s debited, instance %s", inst.id, principal.username, amount, inst.status)
        return inst

    async def _price(self, interface_id: uuid.UUID, spec: dict[str, Any]) -> tuple[Decimal, str]:
        price = await self._providers.query_price(interface_id, spec)
        currency = price.get("currency", "").upper()
        if currency and currency != self._ledger.currency:
            raise FailedPrecondition(
                f"this provider prices in {currency}, but balances are kept in {self._ledger.currency}"
            )
        try:
            amount = parse_amount(price["amount"], "the provider's price")
        except InvalidArgument as exc:
            raise FailedPrecondition(exc.message) from None
        if amount < 0:
            raise FailedPrecondition(f"the provider's price is negative: {amount}")
        cycle = price.get("billing_cycle", "")
        return amount, f"{price['amount']} {currency or self._ledger.currency}{' ' + cycle if cycle else ''}"

    async def _prior(self, interface_id: uuid.UUID, customer: uuid.UUID, key: str) -> uuid.UUID | None:
        async with self._db.read() as s:
            return (
                await s.execute(
                    select(Instance.id).where(
                        Instance.interface_id == interface_id,
                        Instance.customer_id == customer,
                        Instance.idempotency_key == key,
                    )
                )
            ).scalar_one_or_none()

    async def _refund_if_gone(self, instance_id: uuid.UUID, principal: Principal) -> None:
        """After a failed order: give the debit back if the order is gone (never raises: the
        caller's error is what the customer must see; the sweep retries a refund that failed)."""
        try:
            await self._ledger.refund_if_gone(instance_id, reason=f"order {instance_id} failed")
        except Exception:
            log.exception(
                "refund of order %s (customer %s) failed; the sweep will retry", instance_id, principal.username
            )

    async def run_refund_sweep(self, interval: float) -> None:
        """Refund failed orders at start, then every ``interval`` seconds (0: once)."""
        while True:
            try:
                n = await self._ledger.refund_failed_orders()
            except Exception:
                log.exception("refund sweep failed; trying again in %.0fs", interval)
            else:
                if n:
                    log.warning("refund sweep: gave back %d order debit(s) of failed orders", n)
            if interval <= 0:
                return
            await asyncio.sleep(interval)
