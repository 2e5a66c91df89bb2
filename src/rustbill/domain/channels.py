"""Gateways and notifiers: payments, payment notifications and messages.

The spec has no RPC for these yet (the billing core calls them in-process, and admins reach them
through the plugins' ``admin_*`` actions); this is the one place that calls the plugin functions,
checks their results and keeps a replayed payment notification from crediting an order twice.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..db import Database, PaymentNotification, PaymentRequest
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..money import to_money_text
from ..plugins import Binding, PluginRuntime
from ..plugins.contract import check_notify_result, check_payment, check_send_result

__all__ = ["Channels"]

_ORDER_KEYS = ("order_id", "amount", "currency", "subject", "channel", "notify_url", "return_url", "client_ip")


class Channels:
    def __init__(self, db: Database, runtime: PluginRuntime, *, public_url: str = "") -> None:
        self._db = db
        self._runtime = runtime
        # Where gateways reach /pay/notify/<interface_id> (``[http] public_url``).
        self.public_url = public_url.rstrip("/")

    def notify_url(self, interface_id: uuid.UUID) -> str:
        return f"{self.public_url}/pay/notify/{interface_id}" if self.public_url else ""

    async def accepts_notifications(self, interface_id: uuid.UUID) -> bool:
        """True when ``interface_id`` is an enabled gateway interface (what /pay/notify serves)."""
        try:
            b = await self._runtime.bind(interface_id)
        except (NotFound, FailedPrecondition):
            return False
        return b.plugin_type == "gateway"

    async def _bind(self, interface_id: uuid.UUID, plugin_type: str) -> Binding:
        b = await self._runtime.bind(interface_id)
        if b.plugin_type != plugin_type:
            raise FailedPrecondition(f"interface {b.display_name!r} is a {b.plugin_type}, not a {plugin_type}")
        return b

    async def create_payment(self, interface_id: uuid.UUID, order: dict[str, Any]) -> dict[str, Any]:
        """Ask a gateway for a payment (URL, QR code or instructions) for ``order``."""
        unknown = set(order) - set(_ORDER_KEYS)
        if unknown:
            raise InvalidArgument(f"order has unknown keys: {', '.join(sorted(unknown))}")
        if not str(order.get("order_id", "")).strip():
            raise InvalidArgument("order.order_id is required")
        try:
            amount = Decimal(to_money_text(order.get("amount"), "order.amount"))
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if amount <= 0:
            raise InvalidArgument("order.amount must be positive")
        full = {k: str(order.get(k, "")) for k in _ORDER_KEYS}
        full["amount"] = format(amount, "f")
        if not full["notify_url"]:
            full["notify_url"] = self.notify_url(interface_id)
        b = await self._bind(interface_id, "gateway")
        payment: dict[str, Any] = await self._runtime.call(b, "create_payment", full, check=check_payment)
        await self._remember(interface_id, full["order_id"], amount, full["currency"])
        return payment

    async def _remember(self, interface_id: uuid.UUID, order_id: str, amount: Decimal, currency: str) -> None:
        """Keep the order asked for, so that a notification on /pay/notify can be checked against it
        (asking again for the same order replaces its amount)."""
        values = {"interface_id": interface_id, "order_id": order_id, "amount": amount, "currency": currency}
        async with self._db.write() as s:
            dialect = sqlite if self._db.is_sqlite else postgresql
            stmt = dialect.insert(PaymentRequest).values(id=uuid.uuid4(), **values)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["interface_id", "order_id"], set_={"amount": amount, "currency": currency}
                )
            )

    async def expected_order(self, interface_id: uuid.UUID, order_id: str) -> dict[str, Any] | None:
        """The order asked of this gateway under ``order_id`` (None when it never was)."""
        async with self._db.read() as s:
            row = (
                await s.execute(
                    select(PaymentRequest).where(
                        PaymentRequest.interface_id == interface_id, PaymentRequest.order_id == order_id
                    )
                )
            ).scalar_one_or_none()
        if row is None:
            return None
        return {"order_id": row.order_id, "amount": format(row.amount, "f"), "currency": row.currency}

    async def verify_notify(self, interface_id: uuid.UUID, request: dict[str, Any]) -> dict[str, Any]:
        """Check a gateway's notification. A paid result is recorded once per gateway trade; a
        replay of it comes back with ``paid`` false, ``duplicate`` true and the same ``reply``
        (so that the gateway stops retrying) — the order is never credited twice."""
        req = {
            "method": str(request.get("method", "GET")).upper(),
            "query": {str(k): str(v) for k, v in (request.get("query") or {}).items()},
            "form": {str(k): str(v) for k, v in (request.get("form") or {}).items()},
            "headers": {str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()},
            "body": str(request.get("body", "")),
            "order": request.get("order"),
        }
        b = await self._bind(interface_id, "gateway")
        result: dict[str, Any] = await self._runtime.call(b, "verify_notify", req, check=check_notify_result)
        stored = None
        if req["order"] is None and request.get("check_stored_order") and result["valid"] and result["order_id"]:
            # A gateway's callback (HTTP) names its order only inside the notification: look up the
            # payment we asked for under that order id, and let the plugin check against it.
            stored = await self.expected_order(interface_id, result["order_id"])
            if stored is None:
                error = f"notification for an order this gateway was never asked for: {result['order_id']!r}"
                return {**result, "paid": False, "duplicate": False, "reply": "fail", "error": error}
            if not result["paid"]:
                req["order"] = stored
                result = await self._runtime.call(b, "verify_notify", req, check=check_notify_result)
        result["duplicate"] = False
        if not result["paid"]:
            return result
        expected = req["order"] if isinstance(req["order"], dict) else stored
        if expected is not None and not _matches(expected, result):
            # Defence in depth: the plugin checked the order, the host checks again.
            return {**result, "paid": False, "reply": "fail",
                    "error": "notification does not match the expected order (order_id or amount)"}  # fmt: skip
        if not result["trade_no"]:
            raise FailedPrecondition(f"plugin {b.plugin_id!r} reported a payment without a trade_no")
        try:
            await self._db.add(
                PaymentNotification(
                    interface_id=interface_id,
                    trade_no=result["trade_no"],
                    order_id=result["order_id"],
                    amount=Decimal(result["amount"] or "0"),
                )
            )
        except IntegrityError:
            result["paid"] = False
            result["duplicate"] = True
            result["error"] = f"notification for trade {result['trade_no']} was already processed"
        return result

    async def send(self, interface_id: uuid.UUID, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` through a notifier. ``id`` defaults to a new UUID (receivers may use it
        to drop duplicates)."""
        to = message.get("to", [])
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, (list, tuple)) or not all(isinstance(t, str) for t in to):
            raise InvalidArgument("message.to must be a list of addresses")
        msg_id = str(message.get("id") or uuid.uuid4())
        if not 1 <= len(msg_id) <= 200 or not msg_id.isprintable() or " " in msg_id:
            raise InvalidArgument("message.id must be 1 to 200 printable characters without spaces")
        msg = {
            "id": msg_id,
            "event": str(message.get("event", "")),
            "subject": str(message.get("subject", "")),
            "text": str(message.get("text", "")),
            "html": str(message.get("html", "")),
            "to": list(to),
            "data": dict(message.get("data") or {}),
        }
        if not (msg["subject"] or msg["text"] or msg["html"] or msg["data"]):
            raise InvalidArgument("message is empty: give a subject, text, html or data")
        b = await self._bind(interface_id, "notifier")
        return await self._runtime.call(b, "send", msg, check=check_send_result)


def _matches(expected: dict[str, Any], result: dict[str, Any]) -> bool:
    try:
        same_amount = Decimal(result["amount"]) == Decimal(str(expected.get("amount")))
    except ArithmeticError:
        return False
    return same_amount and str(expected.get("order_id", "")) == result["order_id"]
