"""Payment notifications on the HTTP listener, end to end: the EPay gateway in tests/peers calls
``/pay/notify/<interface_id>`` of a real server (an ``App`` in this process, so that the test can be
the billing core that asks for the payment), replays and tampered notifications included."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SHIPPED_PLUGINS, Databases, query_db
from peers.epay_server import EpayServer, epay_sign
from web import TLS

from rustbill import sdk
from rustbill.config import Settings
from rustbill.server import App

PID, KEY = "1001", "Zq8vN3kT5yW2pLr7"


@pytest.fixture
def epay() -> Iterator[EpayServer]:
    srv = EpayServer({PID: KEY}, notify_interval=0.1).start()
    yield srv
    srv.stop()


@pytest.fixture
async def app(tmp_path: Path, databases: Databases) -> AsyncIterator[App]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in ("yipay.py", "demo_cloud.py"):
        shutil.copy(SHIPPED_PLUGINS / name, plugins / name)
    settings = Settings(
        db={"url": databases.new()},
        server={"listen": "127.0.0.1:0", "uvloop": False},
        http={"listen": "127.0.0.1:0"},
        plugins={"dir": plugins, "health_interval_seconds": 0},
        data={"dir": tmp_path},
        bootstrap={"admin_password": "not-used-here"},
    )
    a = App(settings)
    await a.start()
    yield a
    await a.stop(1)
    await sdk.aclose()


async def interface(app: App, plugin_id: str, config: str, enabled: bool = True) -> uuid.UUID:
    plugin = next(p.row for p in await app.catalog.list_plugins(None) if p.row.plugin_id == plugin_id)
    row = await app.catalog.create_interface(plugin.id, f"{plugin_id}-{uuid.uuid4().hex[:6]}", config)
    if not enabled:
        await app.catalog.toggle_interface(row.id, False)
    return row.id  # type: ignore[no-any-return]


async def paid_rows(app: App, iid: uuid.UUID) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(
        query_db,
        app.settings.database_url,
        "SELECT order_id, amount, trade_no FROM payment_notifications WHERE interface_id = :i",
        i=iid.hex if app.db.is_sqlite else iid,
    )


async def test_epay_notifies_the_http_port_and_the_order_is_paid_once(app: App, epay: EpayServer) -> None:
    cfg = f'{{"api_url": "{epay.url}", "pid": "{PID}", "key": "{KEY}"}}'
    iid = await interface(app, "yipay", cfg)
    order = {"order_id": f"RB{uuid.uuid4().hex[:16]}", "amount": "12.50", "currency": "CNY", "subject": "VPS",
             "channel": "alipay", "return_url": "https://shop.example.com/r", "client_ip": "203.0.113.7"}  # fmt: skip
    payment = await app.channels.create_payment(iid, order)
    async with httpx.AsyncClient(verify=TLS) as client:
        assert (await client.get(payment["pay_url"])).status_code == 302  # the buyer opens the cashier
    gw = epay.find(order["order_id"])
    # The notify URL handed to the gateway was built from the listener's address.
    assert gw.notify_url == f"http://127.0.0.1:{app.http_port}/pay/notify/{iid}"

    job = await asyncio.to_thread(epay.pay(order["order_id"]).wait)
    assert job.acknowledged and job.deliveries == [(200, "success")]
    rows = await paid_rows(app, iid)
    assert len(rows) == 1 and rows[0][0] == order["order_id"] and rows[0][2] == gw.trade_no

    # The gateway's retry and a replay by hand: acknowledged, never paid twice.
    again = await asyncio.to_thread(epay.renotify(gw.trade_no).wait)
    assert again.deliveries == [(200, "success")]
    async with httpx.AsyncClient(verify=TLS) as client:
        replay = await client.get(gw.notify_url, params=epay.notification(gw))
        assert replay.text == "success"
        # Tampered: the amount changed (bad signature), and re-signed with another key.
        forged = {**epay.notification(gw), "money": "0.01"}
        assert (await client.get(gw.notify_url, params=forged)).text == "fail"
        other = {k: v for k, v in epay.notification(gw).items() if k not in ("sign", "sign_type")}
        other["sign"] = epay_sign(other, "another-key")
        assert (await client.post(gw.notify_url, data=other)).text == "fail"
    assert len(await paid_rows(app, iid)) == 1
    async with httpx.AsyncClient(verify=TLS) as client:  # (the server runs on this event loop: never block it)
        metrics = (await client.get(f"http://127.0.0.1:{app.http_port}/metrics")).text
    assert 'rustbill_payment_notifications_total{result="paid"} 1.0' in metrics
    assert 'rustbill_payment_notifications_total{result="duplicate"} 2.0' in metrics


async def test_a_signed_notification_for_an_order_never_asked_for_is_not_paid(app: App, epay: EpayServer) -> None:
    cfg = f'{{"api_url": "{epay.url}", "pid": "{PID}", "key": "{KEY}"}}'
    iid = await interface(app, "yipay", cfg)
    params = {"pid": PID, "trade_no": "T1", "out_trade_no": "RBnever", "type": "alipay", "name": "x",
              "money": "12.50", "trade_status": "TRADE_SUCCESS"}  # fmt: skip
    params["sign"] = epay_sign(params, KEY)
    params["sign_type"] = "MD5"
    async with httpx.AsyncClient(verify=TLS) as client:  # (the server runs on this event loop: never block it)
        r = await client.get(f"http://127.0.0.1:{app.http_port}/pay/notify/{iid}", params=params)
    assert (r.status_code, r.text) == (200, "fail")
    assert (await paid_rows(app, iid)) == []


async def test_unknown_disabled_or_non_gateway_interfaces_are_404(app: App) -> None:
    base = f"http://127.0.0.1:{app.http_port}/pay/notify/"
    disabled = await interface(app, "yipay", '{"api_url": "https://pay.example.com", "pid": "1", "key": "k"}', False)
    provider = await interface(app, "demo_cloud", "{}")
    async with httpx.AsyncClient(verify=TLS) as client:
        for target in (uuid.uuid4(), "not-a-uuid", disabled, provider):
            for method in ("GET", "POST"):
                r = await client.request(method, f"{base}{target}", params={"trade_no": "1"})
                assert (r.status_code, r.text) == (404, ""), (target, method)
