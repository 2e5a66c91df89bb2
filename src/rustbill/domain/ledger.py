"""Customer balances and their append-only ledger.

Every change of a balance is one ``balance_transactions`` row (the ledger) and an update of the
customer's ``balances`` row, in one transaction, so ``balances.balance`` is always the sum of the
customer's ledger (the tests check it) and is read in O(1). The ``balances`` row is also the lock
that serialises one customer's money operations: it is read ``FOR UPDATE`` on PostgreSQL, and
SQLite write transactions are serialised anyway (``BEGIN IMMEDIATE``), so two concurrent orders
can never both spend the same money. Amounts are ``Decimal`` with at most 8 decimal places (the
column is NUMERIC(20, 8)); arithmetic never happens in SQL (SQLite would do it in floats).

The ledger is never changed: an order that fails is given back with a "refund" entry, and the
database refuses UPDATE and DELETE on it (migration 0007). An ordered instance has at most one
"order" and one "refund" entry (a unique constraint), whatever retries happen.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import Balance, BalanceTransaction, Database, Instance, User
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..ids import utcnow
from ..money import money_text as _text
from ..money import to_money_text
from .paging import Page, PageMeta, fetch_page

__all__ = ["BalanceView", "Ledger", "parse_amount"]

log = logging.getLogger("rustbill.ledger")

KINDS = ("credit", "debit", "order", "refund")
_LIMIT = Decimal("1e12")  # NUMERIC(20, 8): 12 digits before the point


def parse_amount(value: Any, what: str = "amount") -> Decimal:
    """A money amount from a caller or a plugin: a Decimal (or decimal string) with at most 8
    decimal places and less than 10^12 in size. Raises InvalidArgument naming ``what``."""
    try:
        d = Decimal(to_money_text(value, what))
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if abs(d) >= _LIMIT:
        raise InvalidArgument(f"{what} is too large: {d}")
    if d != d.quantize(Decimal("1e-8")):
        raise InvalidArgument(f"{what} has more than 8 decimal places: {d}")
    return d


@dataclass(frozen=True, slots=True)
class BalanceView:
    customer_id: uuid.UUID
    balance: Decimal
    credit_limit: Decimal
    currency: str


class Ledger:
    def __init__(self, db: Database, *, currency: str) -> None:
        self._db = db
        self.currency = currency

    # ---- reading ----

    async def customer(self, username: str) -> User:
        """The customer called ``username`` (balances belong to customers, not admins)."""
        async with self._db.read() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is None:
            raise NotFound(f"user {username!r} not found")
        if user.role != "customer":
            raise InvalidArgument(f"user {username!r} is an {user.role}; balances belong to customers")
        return user

    async def balance(self, customer_id: uuid.UUID) -> BalanceView:
        async with self._db.read() as s:
            row = await s.get(Balance, customer_id)
        if row is None:
            return BalanceView(customer_id, Decimal(0), Decimal(0), self.currency)
        return BalanceView(customer_id, row.balance, row.credit_limit, self.currency)

    async def transactions(self, customer_id: uuid.UUID, page: Page) -> tuple[list[BalanceTransaction], PageMeta]:
        query = (
            select(BalanceTransaction)
            .where(BalanceTransaction.customer_id == customer_id)
            .order_by(BalanceTransaction.id.desc())  # ids are time-ordered (UUIDv7)
        )
        async with self._db.read() as s:
            return await fetch_page(s, query, page)

    # ---- an admin's changes ----

    async def credit(self, customer_id: uuid.UUID, amount: Decimal, *, note: str, by: str) -> BalanceTransaction:
        """Add ``amount`` (positive) to the balance, e.g. a payment received."""
        if amount <= 0:
            raise InvalidArgument("a credit must be a positive amount")
        async with self._db.write() as s:
            return await self._post(s, customer_id, amount, "credit", note=note, by=by)

    async def debit(self, customer_id: uuid.UUID, amount: Decimal, *, note: str, by: str) -> BalanceTransaction:
        """Take ``amount`` (positive) from the balance, e.g. a correction; refused when it would
        take the balance below the credit limit."""
        if amount <= 0:
            raise InvalidArgument("a debit must be a positive amount")
        async with self._db.write() as s:
            return await self._post(s, customer_id, -amount, "debit", note=note, by=by, check_funds=True)

    async def set_credit_limit(self, customer_id: uuid.UUID, limit: Decimal) -> None:
        if limit < 0:
            raise InvalidArgument("the credit limit cannot be negative")
        async with self._db.write() as s:
            row = await self._lock(s, customer_id)
            row.credit_limit, row.updated_at = limit, utcnow()

    # ---- orders (domain.orders) ----

    async def charge(
        self, s: AsyncSession, customer_id: uuid.UUID, amount: Decimal, *, instance_id: uuid.UUID, note: str
    ) -> BalanceTransaction:
        """Debit an order in the caller's transaction (the one that reserves the instance row), or
        raise FailedPrecondition when the balance does not cover it."""
        return await self._post(
            s, customer_id, -amount, "order", instance_id=instance_id, note=note, by="system", check_funds=True
        )

    async def refund_if_gone(self, instance_id: uuid.UUID, *, reason: str) -> BalanceTransaction | None:
        """Give back the order debit of ``instance_id`` when that order failed for good (its
        instance row was removed) and it was not given back yet. None when there is nothing to do.
        Safe to call any number of times, from any process."""
        try:
            async with self._db.write() as s:
                if await s.get(Instance, instance_id) is not None:
                    return None  # opened, or its outcome is not known yet: the debit stands
                entries = {
                    e.kind: e
                    for e in (
                        await s.execute(select(BalanceTransaction).where(BalanceTransaction.instance_id == instance_id))
                    ).scalars()
                }
                order = entries.get("order")
                if order is None or "refund" in entries:
                    return None
                entry = await self._post(
                    s, order.customer_id, -order.amount, "refund", instance_id=instance_id, note=reason, by="system"
                )
        except IntegrityError:
            return None  # another process refunded it at the same moment
        log.info("refunded %s to customer %s: order %s %s", entry.amount, entry.customer_id, instance_id, reason)
        return entry

    async def refund_failed_orders(self) -> int:
        """Refund every order debit whose instance row is gone (a failure whose refund was cut short
        by a crash, or an order an operator or reconciler removed). Returns how many."""
        refunded = select(BalanceTransaction.instance_id).where(BalanceTransaction.kind == "refund")
        query = select(BalanceTransaction.instance_id).where(
            BalanceTransaction.kind == "order",
            BalanceTransaction.instance_id.not_in(refunded),
            BalanceTransaction.instance_id.not_in(select(Instance.id)),
        )
        async with self._db.read() as s:
            ids = [i for i in (await s.execute(query)).scalars() if i is not None]
        done = 0
        for iid in ids:
            if await self.refund_if_gone(iid, reason="the order failed (found by the refund sweep)") is not None:
                done += 1
        return done

    # ---- the one place a balance changes ----

    async def _lock(self, s: AsyncSession, customer_id: uuid.UUID) -> Balance:
        """The customer's balance row, locked until the transaction ends (created at zero)."""
        q = select(Balance).where(Balance.customer_id == customer_id).with_for_update()
        row = (await s.execute(q)).scalar_one_or_none()
        if row is None:
            dialect = sqlite if self._db.is_sqlite else postgresql
            zero = Decimal(0)
            await s.execute(
                dialect.insert(Balance)
                .values(customer_id=customer_id, balance=zero, credit_limit=zero, updated_at=utcnow())
                .on_conflict_do_nothing(index_elements=["customer_id"])
            )
            row = (await s.execute(q)).scalar_one()
        return row

    async def _post(
        self,
        s: AsyncSession,
        customer_id: uuid.UUID,
        amount: Decimal,
        kind: str,
        *,
        note: str,
        by: str,
        instance_id: uuid.UUID | None = None,
        check_funds: bool = False,
    ) -> BalanceTransaction:
        assert kind in KINDS
        row = await self._lock(s, customer_id)
        after = row.balance + amount
        if check_funds and amount < 0 and after < -row.credit_limit:
            limit = f" (credit limit {_text(row.credit_limit)})" if row.credit_limit else ""
            raise FailedPrecondition(
                f"insufficient balance: {_text(-amount)} {self.currency} needed, "
                f"{_text(row.balance)} {self.currency} available{limit}"
            )
        if abs(after) >= _LIMIT:
            raise FailedPrecondition("the balance would exceed 10^12")
        now = utcnow()
        row.balance, row.updated_at = after, now
        entry = BalanceTransaction(
            customer_id=customer_id,
            amount=amount,
            balance_after=after,
            kind=kind,
            instance_id=instance_id,
            note=note[:1000],
            created_by=by,
            created_at=now,
        )
        s.add(entry)
        await s.flush()
        return entry
