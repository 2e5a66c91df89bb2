"""Gateways and notifiers: payments, payment notifications and messages.

The spec has no RPC for these yet (the billing core calls them in-process, and admins reach them
through the plugins' ``admin_*`` actions); this is the one place that calls the plugin functions,
checks their results and keeps a replayed payment notification from crediting an order twice.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..db import Database, PaymentNotification
from ..errors import FailedPrecondition, InvalidArgument
from ..money import to_money_text
from ..plugins import Binding, PluginRuntime
from ..plugins.contract import check_notify_result, check_payment, check_send_result

__all__ = ["Channels"]

_ORDER_KEYS = ("order_id", "amount", "currency", "subject", "channel", "notify_url", "return_url", "client_ip")


class Channels:
    def __init__(self, db: Database, runtime: PluginRuntime) -> None:
        self._db = db
        self._runtime = runtime

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
        b = await self._bind(interface_id, "gateway")
        return await self._runtime.call(b, "create_payment", full, check=check_payment)  # type: ignore[no-any-return]

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
        result["duplicate"] = False
        if not result["paid"]:
            return result
        expected = req["order"] if isinstance(req["order"], dict) else None
        if expected is not None and not _matches(expected, result):
            # Defence in depth: the plugin checked the order, the host checks again.
            return {**result, "paid": False, "reply": "fail",
                    "error": "notification does not match the expected order (order_id or amount)"}  # fmt: skip
        if not result["trade_no"]:
            raise FailedPrecondition(f"plugin {b.plugin_id!r} reported a payment without a trade_no")
        try:
            async with self._db.write() as s:
                s.add(
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
        return await self._runtime.call(b, "send", msg, check=check_send_result)  # type: ignore[no-any-return]


def _matches(expected: dict[str, Any], result: dict[str, Any]) -> bool:
    try:
        same_amount = Decimal(result["amount"]) == Decimal(str(expected.get("amount")))
    except ArithmeticError:
        return False
    return same_amount and str(expected.get("order_id", "")) == result["order_id"]
