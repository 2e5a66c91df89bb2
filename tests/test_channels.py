"""Gateways and notifiers through the host's Channels service, on a real database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import TEST_PLUGINS, Databases

from rustbill.db import Database, Plugin, PluginInterface
from rustbill.domain import Channels
from rustbill.errors import FailedPrecondition, InvalidArgument
from rustbill.ids import utcnow
from rustbill.plugins import PluginRegistry, PluginRuntime

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def host(databases: Databases, tmp_path: Path) -> AsyncIterator[tuple[Channels, dict[str, object]]]:
    db = Database(databases.new())
    await db.migrate()
    registry = PluginRegistry()
    runtime = PluginRuntime(db, registry)
    ids = {}
    now = utcnow()
    async with db.write() as s:
        for pid in ("t_gateway", "t_notifier"):
            path = TEST_PLUGINS / f"{pid}.py"
            loaded = await registry.load(path, path.read_bytes(), pid)
            registry.put(loaded)
            plugin = Plugin(plugin_id=pid, plugin_type=loaded.plugin_type, content_hash=loaded.content_hash,
                            version=loaded.version, created_at=now, updated_at=now)  # fmt: skip
            s.add(plugin)
            await s.flush()
            config = json.dumps({"api_url": "https://pay.example", "key": "k-123"})
            iface = PluginInterface(plugin_def_id=plugin.id, plugin_type=loaded.plugin_type, plugin_id=pid,
                                    display_name=pid, enabled=True, config_schema="{}", created_at=now,
                                    updated_at=now, config_json=config)  # fmt: skip
            s.add(iface)
            await s.flush()
            ids[pid] = iface.id
    yield Channels(db, runtime), ids
    await runtime.close()
    await db.dispose()


def notify(money: str, trade_no: str = "T1", order_amount: str = "12.50") -> dict[str, object]:
    return {
        "query": {"trade_status": "TRADE_SUCCESS", "out_trade_no": "O1", "trade_no": trade_no, "money": money},
        "order": {"order_id": "O1", "amount": order_amount, "currency": "CNY"},
    }


async def test_a_paid_notification_counts_once(host) -> None:  # type: ignore[no-untyped-def]
    channels, ids = host
    first = await channels.verify_notify(ids["t_gateway"], notify("12.5"))
    assert first["paid"] and not first["duplicate"] and first["reply"] == "success"
    again = await channels.verify_notify(ids["t_gateway"], notify("12.50"))
    assert not again["paid"] and again["duplicate"] and again["reply"] == "success"


async def test_the_host_checks_amount_and_order_even_when_the_plugin_does_not(host) -> None:  # type: ignore[no-untyped-def]
    channels, ids = host
    wrong = await channels.verify_notify(ids["t_gateway"], notify("0.01", trade_no="T2"))
    assert not wrong["paid"] and wrong["reply"] == "fail" and "does not match" in wrong["error"]
    # the refused trade is not recorded: the genuine notification for it still counts
    right = await channels.verify_notify(ids["t_gateway"], notify("12.50", trade_no="T2"))
    assert right["paid"]


async def test_create_payment_and_send(host) -> None:  # type: ignore[no-untyped-def]
    channels, ids = host
    pay = await channels.create_payment(ids["t_gateway"], {"order_id": "O9", "amount": "3.10", "currency": "CNY"})
    assert pay["pay_url"].endswith("out_trade_no=O9")
    with pytest.raises(InvalidArgument, match=r"order\.amount must be a Decimal or a decimal string, not float"):
        await channels.create_payment(ids["t_gateway"], {"order_id": "O9", "amount": 3.1})
    with pytest.raises(InvalidArgument, match="unknown keys: colour"):
        await channels.create_payment(ids["t_gateway"], {"order_id": "O9", "amount": "1", "colour": "red"})
    with pytest.raises(FailedPrecondition, match="is a notifier, not a gateway"):
        await channels.create_payment(ids["t_notifier"], {"order_id": "O9", "amount": "1"})
    sent = await channels.send(ids["t_notifier"], {"subject": "Invoice paid", "to": ["a@example.com"]})
    assert sent == {"delivered": True, "id": "", "error": ""}
    with pytest.raises(InvalidArgument, match=r"message\.to must be a list"):
        await channels.send(ids["t_notifier"], {"subject": "x", "to": [1]})
    with pytest.raises(InvalidArgument, match=r"message\.id must be"):
        await channels.send(ids["t_notifier"], {"subject": "x", "id": "a b"})
    with pytest.raises(InvalidArgument, match="message is empty"):
        await channels.send(ids["t_notifier"], {})
