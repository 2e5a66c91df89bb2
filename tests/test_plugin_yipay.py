"""The built-in yipay (易支付 / EPay) gateway plugin, against a local EPay gateway (tests/peers/epay_server.py)
that follows the protocol's documentation and sends the asynchronous notification back.

Two ways in: through the running server's RPCs (CreatePluginInterface, CheckPluginHealth,
GetPluginAdminPage, CallPluginAction) and in process through rustbill.domain.Channels (create_payment,
verify_notify with replay protection) on a real database, with a small HTTP receiver standing in for
the billing core's notify endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest
from helpers import (
    SHIPPED_PLUGINS,
    Databases,
    PluginHost,
    ServerProcess,
    create_interface,
    free_port,
    md,
    plugin_def_id,
    raises_code,
    unique,
)
from peers.epay_server import EpayServer, epay_sign
from sqlalchemy import func, select
from web import TLS

from rustbill import errors
from rustbill.db import Database, PaymentNotification
from rustbill.pb import integration_pb2 as pb
from rustbill.plugins import load_plugin

PID = "1001"
KEY = "Zq8vN3kT5yW2pLr7"  # the merchant key: must never show up in pages, results or logs
PLUGIN = SHIPPED_PLUGINS / "yipay.py"


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def epay() -> Iterator[EpayServer]:
    srv = EpayServer({PID: KEY, "1002": "another-merchant-key"}, notify_interval=0.1).start()
    yield srv
    srv.stop()


def config(epay: EpayServer, **kw: Any) -> dict[str, Any]:
    return {"api_url": epay.url, "pid": PID, "key": KEY, "sitename": "RustBill", **kw}


class Host(PluginHost):
    """The billing core's side in process (see helpers.PluginHost)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, "yipay", call_timeout=20)

    async def paid_rows(self, iid: uuid.UUID) -> int:
        async with self.db.read() as s:
            q = select(func.count()).select_from(PaymentNotification).where(PaymentNotification.interface_id == iid)
            return int((await s.execute(q)).scalar_one())


@pytest.fixture(scope="module")
def db_url(databases: Databases) -> str:
    """One database for this module's in-process tests (each test makes its own interfaces)."""
    return databases.new()


@pytest.fixture
async def host(db_url: str) -> AsyncIterator[Host]:
    db = Database(db_url)
    await db.migrate()
    h = Host(db)
    yield h
    await h.close()  # (its workers, the SDK's client, its temporary folder)
    await db.dispose()


def order(epay_or_url: Any, **kw: Any) -> dict[str, Any]:
    notify = epay_or_url if isinstance(epay_or_url, str) else "http://127.0.0.1:9/notify"
    return {
        "order_id": f"RB{uuid.uuid4().hex[:20]}",
        "amount": "12.50",
        "currency": "CNY",
        "subject": "VPS 2C4G monthly",
        "channel": "alipay",
        "notify_url": notify,
        "return_url": "https://shop.example.com/orders/return",
        "client_ip": "203.0.113.7",
        **kw,
    }


class NotifyReceiver:
    """The billing core's notify endpoint: each GET goes to Channels.verify_notify together with the
    order the core expects for its out_trade_no; the reply body is the result's ``reply``."""

    def __init__(self, host: Host, iid: uuid.UUID, loop: asyncio.AbstractEventLoop) -> None:
        self.host, self.iid, self.loop = host, iid, loop
        self.orders: dict[str, dict[str, Any]] = {}
        self.results: list[dict[str, Any]] = []
        self.fail_next = 0  # answer HTTP 500 to this many requests first (the core was down)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True))
                status, body = receiver.handle(query, dict(self.headers))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/notify/yipay"

    def handle(self, query: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, "busy"
        expected = self.orders.get(query.get("out_trade_no", ""))
        request = {
            "method": "GET",
            "query": query,
            "headers": headers,
            "body": "",
            "order": None if expected is None else {k: expected[k] for k in ("order_id", "amount", "currency")},
        }
        fut = asyncio.run_coroutine_threadsafe(self.host.channels.verify_notify(self.iid, request), self.loop)
        try:
            result = fut.result(60)
        except errors.RustBillError as exc:
            return 500, exc.message
        self.results.append(result)
        return 200, result["reply"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
async def receiver_for(host: Host) -> AsyncIterator[Any]:
    made: list[NotifyReceiver] = []

    def make(iid: uuid.UUID) -> NotifyReceiver:
        r = NotifyReceiver(host, iid, asyncio.get_running_loop())
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


async def submit(pay_url: str) -> httpx.Response:
    """The customer's browser opening the payment URL."""
    async with httpx.AsyncClient(timeout=10, verify=TLS) as client:
        return await client.get(pay_url)


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(urllib.parse.parse_qsl(parts.query))


async def get(url: str, params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30, verify=TLS) as client:
        return await client.get(url, params=params)


# ---------------------------------------------------------------- signatures


def test_sign_matches_the_documented_algorithm() -> None:
    """Sorted, non-empty, without sign/sign_type, unencoded, key appended; the variants of clones."""
    mod = load_plugin(PLUGIN, PLUGIN.read_bytes(), "yipay").module
    params = {"pid": "1001", "name": "VPS 月付 & more", "money": "1.00", "param": "", "sign": "x", "sign_type": "MD5"}
    text = "money=1.00&name=VPS 月付 & more&pid=1001"
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    assert mod.sign(params, "KEY") == md5(text + "KEY")
    assert mod.sign(params, "KEY", "plain_upper") == md5(text + "KEY").upper()
    assert mod.sign(params, "KEY", "amp_key") == md5(text + "&key=KEY")
    assert mod.sign(params, "KEY", "amp_key_upper") == md5(text + "&key=KEY").upper()
    for variant in ("plain", "plain_upper", "amp_key", "amp_key_upper"):
        assert mod.sign(params, "KEY", variant) == epay_sign(params, "KEY", variant)


async def test_redirect_url_is_signed_and_accepted_by_the_gateway(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay))
    o = order(epay, amount="12.5")
    pay = await host.channels.create_payment(iid, o)
    base, params = split(pay["pay_url"])
    assert base == epay.url + "submit.php"
    assert params == {
        "pid": PID,
        "type": "alipay",
        "out_trade_no": o["order_id"],
        "notify_url": o["notify_url"],
        "return_url": o["return_url"],
        "name": "VPS 2C4G monthly",
        "money": "12.50",
        "sitename": "RustBill",
        "sign": params["sign"],
        "sign_type": "MD5",
    }
    assert params["sign"] == epay_sign(params, KEY)  # checked with the peer's own signing code
    assert pay["extra"]["out_trade_no"] == o["order_id"] and pay["qrcode"] == "" and pay["trade_no"] == ""
    assert KEY not in pay["pay_url"]

    resp = await submit(pay["pay_url"])  # the browser goes there: the gateway accepts it
    assert resp.status_code == 302 and resp.headers["location"].startswith("/pay/alipay/")
    assert epay.find(o["order_id"]).money == "12.50"


@pytest.mark.parametrize("variant", ["plain", "plain_upper", "amp_key", "amp_key_upper"])
async def test_sign_variants_against_a_gateway_of_that_variant(host: Host, epay: EpayServer, variant: str) -> None:
    epay.merchants[PID].sign_variant = variant
    good = await host.interface(config(epay, sign_variant=variant))
    pay = await host.channels.create_payment(good, order(epay))
    resp = await submit(pay["pay_url"])
    assert resp.status_code == 302, resp.text
    _, params = split(pay["pay_url"])
    assert params["sign"] == epay_sign(params, KEY, variant)

    other = "amp_key" if variant == "plain" else "plain"
    wrong = await host.interface(config(epay, sign_variant=other))
    resp = await submit((await host.channels.create_payment(wrong, order(epay)))["pay_url"])
    assert resp.status_code == 200 and "签名校验失败" in resp.text


async def test_cashier_chooses_the_channel_when_none_is_given(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay))
    pay = await host.channels.create_payment(iid, order(epay, channel=""))
    assert "type" not in split(pay["pay_url"])[1]
    resp = await submit(pay["pay_url"])
    assert resp.status_code == 302 and resp.headers["location"].startswith("/cashier.php")
    with_default = await host.interface(config(epay, default_channel="wxpay"))
    pay = await host.channels.create_payment(with_default, order(epay, channel=""))
    assert split(pay["pay_url"])[1]["type"] == "wxpay"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"currency": "USD"}, "takes CNY; the order is in USD"),
        ({"channel": "paypal"}, r"channel 'paypal' is not enabled on this interface \(allowed: alipay, wxpay\)"),
        ({"amount": "12.345"}, "more than two decimals"),
        ({"order_id": "RB 1&x=2"}, "cannot be an EPay out_trade_no"),
        ({"notify_url": ""}, "notify_url .* is required"),
    ],
)
async def test_create_payment_refuses_what_the_gateway_cannot_take(
    host: Host, epay: EpayServer, change: dict[str, str], match: str
) -> None:
    iid = await host.interface(config(epay, channels=["alipay", "wxpay"]))
    with pytest.raises(errors.InvalidArgument, match=match):
        await host.channels.create_payment(iid, order(epay, **change))
    assert epay.requests == []


# ---------------------------------------------------------------- api mode (mapi.php)


async def test_api_mode_returns_the_gateway_answer(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay, mode="api"))
    o = order(epay, channel="wxpay")
    pay = await host.channels.create_payment(iid, o)
    gw = epay.find(o["order_id"])
    assert pay["qrcode"] == f"weixin://wxpay/bizpayurl?pr={gw.trade_no}" and pay["trade_no"] == gw.trade_no
    assert gw.clientip == "203.0.113.7" and gw.money == "12.50"
    method, path, sent = epay.requests[-1]
    assert (method, path) == ("POST", "/mapi.php") and sent["sign"] == epay_sign(sent, KEY)

    pay = await host.channels.create_payment(iid, order(epay, channel="alipay"))
    assert pay["pay_url"].startswith(epay.url + "pay/alipay/") and pay["qrcode"] == ""

    with pytest.raises(errors.InvalidArgument, match="client_ip is required"):
        await host.channels.create_payment(iid, order(epay, client_ip=""))


async def test_api_mode_gateway_refusal_and_failures(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay, mode="api", timeout=1))
    o = order(epay)
    await host.channels.create_payment(iid, o)
    epay.pay(o["order_id"]).wait()  # nobody listens at its notify_url: fine here
    with pytest.raises(errors.FailedPrecondition, match="the gateway refused the payment: '该订单已支付"):
        await host.channels.create_payment(iid, o)

    epay.delay = 3
    with pytest.raises(errors.DeadlineExceeded, match=r"did not answer mapi.php within 1s"):
        await host.channels.create_payment(iid, order(epay))
    epay.delay = 0

    gone = await host.interface(config(epay, mode="api", api_url=f"http://127.0.0.1:{free_port()}/"))
    with pytest.raises(errors.Unavailable, match=r"cannot reach the EPay gateway at http://127\.0\.0\.1"):
        await host.channels.create_payment(gone, order(epay))


# ---------------------------------------------------------------- the notification


async def test_paid_once_although_the_notification_arrives_twice(
    host: Host, epay: EpayServer, receiver_for: Any
) -> None:
    iid = await host.interface(config(epay))
    receiver = receiver_for(iid)
    o = order(receiver.url)
    receiver.orders[o["order_id"]] = o
    pay = await host.channels.create_payment(iid, o)
    assert (await submit(pay["pay_url"])).status_code == 302

    job = await asyncio.to_thread(epay.pay(o["order_id"]).wait)
    assert job.acknowledged and job.deliveries == [(200, "success")]
    first = receiver.results[-1]
    assert first["paid"] and not first["duplicate"] and first["order_id"] == o["order_id"]
    assert first["trade_no"] == epay.find(o["order_id"]).trade_no and first["amount"] == "12.50"

    # the gateway sends it again (its retry, or 重新通知), and someone replays the URL by hand
    again = await asyncio.to_thread(epay.renotify(first["trade_no"]).wait)
    assert again.acknowledged and again.deliveries == [(200, "success")]
    replay = await get(receiver.url, epay.notification(epay.find(o["order_id"])))
    assert replay.text == "success"
    assert [r["paid"] for r in receiver.results] == [True, False, False]
    assert all(r["duplicate"] for r in receiver.results[1:])
    assert await host.paid_rows(iid) == 1


async def test_the_gateway_retries_until_it_reads_success(host: Host, epay: EpayServer, receiver_for: Any) -> None:
    iid = await host.interface(config(epay))
    receiver = receiver_for(iid)
    o = order(receiver.url)
    receiver.orders[o["order_id"]] = o
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    receiver.fail_next = 2
    job = await asyncio.to_thread(epay.pay(o["order_id"]).wait)
    assert [s for s, _ in job.deliveries] == [500, 500, 200] and job.acknowledged
    assert [r["paid"] for r in receiver.results] == [True]
    assert await host.paid_rows(iid) == 1


def _flip(sign: str) -> str:
    return sign[:-1] + ("0" if sign[-1] != "0" else "1")


def _resigned(params: dict[str, str], key: str = KEY, **change: str) -> dict[str, str]:
    out = {**params, **change}
    out["sign"] = epay_sign(out, key)
    return out


@pytest.mark.parametrize(
    ("tamper", "valid", "error"),
    [
        (lambda p: {**p, "money": "0.01"}, False, "signature does not match"),
        (lambda p: {**p, "sign": _flip(p["sign"])}, False, "signature does not match"),
        (lambda p: _resigned(p, key="another-merchant-key"), False, "signature does not match"),
        (lambda p: _resigned(p, pid="1002"), False, "for merchant '1002', not '1001'"),
        (lambda p: _resigned(p, money="0.01"), True, "amount 0.01 does not match the order's 12.50"),
        (lambda p: {k: v for k, v in p.items() if k != "sign"}, False, "no sign parameter"),
        (lambda p: {**p, "sign_type": "RSA"}, False, "sign_type 'RSA' is not supported"),
    ],
    ids=["money-changed", "sign-changed", "other-key", "wrong-pid", "wrong-amount", "no-sign", "rsa"],
)
async def test_bad_notifications_are_refused(
    host: Host, epay: EpayServer, receiver_for: Any, tamper: Any, valid: bool, error: str
) -> None:
    iid = await host.interface(config(epay))
    receiver = receiver_for(iid)
    o = order(receiver.url)
    receiver.orders[o["order_id"]] = o
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    gw = epay.find(o["order_id"])
    gw.status = 1  # paid, but the notification below is forged or wrong
    resp = await get(receiver.url, tamper(epay.notification(gw)))
    assert resp.status_code == 200 and resp.text == "fail"
    result = receiver.results[-1]
    assert not result["paid"] and result["valid"] is valid and error in result["error"]
    assert await host.paid_rows(iid) == 0

    # the genuine one still goes through afterwards
    assert (await get(receiver.url, epay.notification(gw))).text == "success"
    assert await host.paid_rows(iid) == 1


@pytest.mark.parametrize("status", ["WAIT_BUYER_PAY", "TRADE_CLOSED", "TRADE_FAIL", ""])
async def test_a_signed_notification_that_is_not_a_payment_is_acknowledged_and_never_paid(
    host: Host, epay: EpayServer, receiver_for: Any, status: str
) -> None:
    """A clone that notifies other trade states: answered ``success`` (``fail`` makes the gateway
    resend it for ever), recorded, never paid; the payment that follows still counts, once."""
    iid = await host.interface(config(epay))
    receiver = receiver_for(iid)
    o = order(receiver.url)
    receiver.orders[o["order_id"]] = o
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    gw = epay.find(o["order_id"])

    job = await asyncio.to_thread(epay.renotify(gw.trade_no, trade_status=status).wait)
    assert job.acknowledged and job.deliveries == [(200, "success")]  # delivered once: the gateway stops
    (result,) = receiver.results
    shown = status or "(none)"
    assert result["valid"] is True and result["paid"] is False and result["reply"] == "success"
    assert f"trade_status is {shown!r}, not TRADE_SUCCESS" in result["error"]
    assert (result["order_id"], result["trade_no"], result["amount"]) == (o["order_id"], gw.trade_no, "12.50")
    assert await host.paid_rows(iid) == 0
    html, _ = await host.providers.admin_page(iid)
    assert "Notifications that were not payments" in html and f"<td>{shown}</td>" in html
    assert f"<td>{gw.trade_no}</td>" in html

    # a forged one of the same kind is still refused (and not acknowledged)
    forged = {**epay.notification(gw, status), "money": "0.01"}
    assert (await get(receiver.url, forged)).text == "fail"
    assert not receiver.results[-1]["valid"] and await host.paid_rows(iid) == 0

    # the customer pays: credited once; a late non-success state for the paid trade pays nothing more
    paid = await asyncio.to_thread(epay.pay(o["order_id"]).wait)
    assert paid.acknowledged and receiver.results[-1]["paid"]
    late = await asyncio.to_thread(epay.renotify(gw.trade_no, trade_status="TRADE_CLOSED").wait)
    assert late.deliveries == [(200, "success")] and not receiver.results[-1]["paid"]
    assert await host.paid_rows(iid) == 1


async def test_a_notification_that_is_not_a_payment_with_a_bad_amount_is_still_acknowledged(
    host: Host, epay: EpayServer
) -> None:
    iid = await host.interface(config(epay))
    o = order(epay)
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    note = _resigned(epay.notification(epay.find(o["order_id"])), trade_status="TRADE_CLOSED", money="abc")
    result = await host.channels.verify_notify(iid, {"method": "GET", "query": note, "order": o})
    assert result["valid"] and not result["paid"] and result["reply"] == "success" and result["amount"] == ""


async def test_a_notification_for_another_order_or_without_one_is_refused(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay))
    o = order(epay)
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    note = epay.notification(epay.find(o["order_id"]))
    req = {"method": "GET", "query": note}
    other = {**req, "order": {"order_id": "RBsomethingelse", "amount": "12.50", "currency": "CNY"}}
    result = await host.channels.verify_notify(iid, other)
    assert not result["paid"] and result["reply"] == "fail" and "not the expected 'RBsomethingelse'" in result["error"]
    result = await host.channels.verify_notify(iid, {**req, "order": None})
    assert not result["paid"] and "no expected order" in result["error"]
    usd = {**req, "order": {"order_id": o["order_id"], "amount": "12.50", "currency": "USD"}}
    assert "settles CNY" in (await host.channels.verify_notify(iid, usd))["error"]
    ok = {**req, "order": {"order_id": o["order_id"], "amount": "12.5", "currency": "CNY"}}  # compared as Decimal
    assert (await host.channels.verify_notify(iid, ok))["paid"]


async def test_confirm_with_query_asks_the_gateway(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay, confirm_with_query=True))
    o = order(epay)
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    gw = epay.find(o["order_id"])
    req = {"method": "GET", "query": epay.notification(gw), "order": o}
    # correctly signed (say, a leaked key) but the gateway says it is unpaid
    result = await host.channels.verify_notify(iid, req)
    assert not result["paid"] and "api.php does not confirm trade" in result["error"] and "unpaid" in result["error"]
    epay.pay(o["order_id"]).wait()
    assert (await host.channels.verify_notify(iid, req))["paid"]
    epay.stop()
    with pytest.raises(errors.Unavailable, match="cannot reach the EPay gateway"):
        await host.channels.verify_notify(iid, {**req, "query": _resigned(req["query"], trade_no="x1")})


# ---------------------------------------------------------------- the spec's configuration


SPEC_CONFIG = {"api_url": "https://pay.example.com", "key": "xxx"}  # the spec's CreatePluginInterface example


async def test_the_spec_config_is_saved_and_a_missing_pid_is_said_not_refused(host: Host, epay: EpayServer) -> None:
    """The spec names the config api_url and key, without a merchant id: it is accepted; what needs
    the merchant id says to fill it in, and nothing reaches the gateway without it."""
    iid = await host.interface(SPEC_CONFIG)
    assert (await host.health(iid) or "").startswith("the merchant id is not set: fill in pid (商户ID")
    with pytest.raises(errors.FailedPrecondition, match="the merchant id is not set: fill in pid"):
        await host.channels.create_payment(iid, order(epay))
    note = epay.notification(epay.find((await _paid_order(host, epay))["order_id"]))
    with pytest.raises(errors.FailedPrecondition, match="the merchant id is not set"):
        await host.channels.verify_notify(iid, {"method": "GET", "query": note})
    html, _ = await host.providers.admin_page(iid)
    assert "(not set)" in html and "the merchant id is not set" in html and "xxx" not in html
    with pytest.raises(errors.FailedPrecondition, match="the merchant id is not set"):
        await host.action(iid, "admin_merchant_info")
    assert not [r for r in epay.requests if "api.php" in r[1]]
    # with pid filled in (the other names unchanged), the same interface works
    ok = await host.interface({**SPEC_CONFIG, "api_url": epay.url, "key": KEY, "pid": PID})
    assert await host.health(ok) is None


async def _paid_order(host: Host, epay: EpayServer) -> dict[str, Any]:
    """An order created through a complete interface (for a genuine notification)."""
    iid = await host.interface(config(epay))
    o = order(epay)
    await submit((await host.channels.create_payment(iid, o))["pay_url"])
    return o


def test_the_spec_examples_through_the_server(stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    """CreatePluginInterface and UpdatePluginInterface with the spec's own config_json, verbatim."""
    created = stub.CreatePluginInterface(
        pb.CreatePluginInterfaceRequest(
            plugin_def_id=plugin_def_id(stub, admin_token, "yipay"),
            display_name=unique("易支付-生产"),
            config_json='{"api_url":"https://pay.example.com","key":"xxx"}',
        ),
        metadata=md(admin_token),
    ).interface
    assert json.loads(created.config_json)["api_url"] == "https://pay.example.com"
    reply = _health(stub, admin_token, created)
    assert not reply.is_healthy and reply.error.startswith("the merchant id is not set: fill in pid")
    updated = stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(
            interface_id=created.id, config_json='{"api_url":"https://pay2.example.com","key":"yyy"}'
        ),
        metadata=md(admin_token),
    ).interface
    assert json.loads(updated.config_json)["api_url"] == "https://pay2.example.com"
    assert "fill in pid" in _health(stub, admin_token, updated).error


# ---------------------------------------------------------------- health and admin, in process


async def test_health_check_says_what_is_wrong(host: Host, epay: EpayServer) -> None:
    assert await host.health(await host.interface(config(epay))) is None
    bad_key = await host.health(await host.interface(config(epay, key="wrong-key-123")))
    assert bad_key == (
        "merchant query: the gateway says 'KEY校验失败' (code -3): pid 1001 and this key are not accepted; "
        "check pid and key"
    )
    asked = len(epay.requests)
    unset = await host.health(await host.interface({"api_url": epay.url, "key": KEY}))
    assert unset is not None and unset.startswith("the merchant id is not set: fill in pid")
    assert len(epay.requests) == asked  # said without asking the gateway
    no_pid = await host.health(await host.interface(config(epay, pid="4242")))
    assert no_pid is not None and "PID不存在" in no_pid and "check pid and key" in no_pid
    port = free_port()
    closed = await host.health(await host.interface(config(epay, api_url=f"http://127.0.0.1:{port}/")))
    assert closed is not None and closed.startswith(
        f"cannot reach the EPay gateway at http://127.0.0.1:{port}/: Connect"
    )
    html_site = await host.health(await host.interface(config(epay, api_url=epay.url + "html/")))
    assert html_site is not None and "did not answer JSON" in html_site and "not an EPay gateway" in html_site
    missing = await host.health(await host.interface(config(epay, api_url=epay.url + "nothing/")))
    assert (
        missing
        == f"{epay.url}nothing/api.php answered HTTP 404: api_url does not look like the base URL of an EPay gateway"
    )
    epay.merchants[PID].active = 0
    assert "is disabled on the gateway" in (await host.health(await host.interface(config(epay))) or "")
    epay.merchants[PID].active = 1
    epay.delay = 3
    slow = await host.health(await host.interface(config(epay, timeout=1)))
    assert slow == f"the EPay gateway at {epay.url} did not answer api.php within 1s"


async def test_admin_actions_in_process(host: Host, epay: EpayServer) -> None:
    iid = await host.interface(config(epay))
    orders = [order(epay, amount=a) for a in ("10.00", "20.00", "30.00")]
    for o in orders:
        await submit((await host.channels.create_payment(iid, o))["pay_url"])
    epay.pay(orders[1]["order_id"]).wait()

    info = await host.action(iid, "admin_merchant_info")
    assert info["pid"] == PID and info["balance"] == "20.00" and info["active"] == "1" and info["orders"] == "1"
    assert KEY not in json.dumps(info) and "key" not in info

    got = await host.action(iid, "admin_query_order", out_trade_no=orders[1]["order_id"])
    assert got["status"] == "paid" and got["money"] == "20.00" and got["trade_no"]
    by_trade = await host.action(iid, "admin_query_order", trade_no=got["trade_no"])
    assert by_trade["out_trade_no"] == orders[1]["order_id"]
    assert (await host.action(iid, "admin_query_order", out_trade_no=orders[0]["order_id"]))["status"] == "unpaid"

    recent = await host.action(iid, "admin_recent_orders", limit=2)
    assert [r["out_trade_no"] for r in recent["orders"]] == [orders[2]["order_id"], orders[1]["order_id"]]
    page2 = await host.action(iid, "admin_recent_orders", limit=2, page=2)
    assert [r["out_trade_no"] for r in page2["orders"]] == [orders[0]["order_id"]]


# ---------------------------------------------------------------- through the server


@pytest.fixture(scope="module")
def gateway() -> Iterator[EpayServer]:
    srv = EpayServer({PID: KEY}).start()
    yield srv
    srv.stop()


def server_config(gw: EpayServer, **kw: Any) -> str:
    return json.dumps({"api_url": gw.url, "pid": int(PID), "key": KEY, **kw})


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"api_url": "http://x/", "pid": "10 01", "key": KEY}, r"config_json\.pid: "),
        ({"api_url": "http://x/", "pid": PID}, r"config_json\.key: is required"),
        ({"api_url": "ftp://pay.example.com", "pid": PID, "key": KEY}, r"config_json\.api_url: "),
        ({"api_url": "http://x/", "pid": PID, "key": ""}, r"config_json\.key: fails 'minLength'"),
        ({"api_url": "http://x/", "pid": PID, "key": KEY, "sign_variant": "sha1"}, r"config_json\.sign_variant: "),
        ({"api_url": "http://x/", "pid": PID, "key": KEY, "mode": "qr"}, r"config_json\.mode: "),
        ({"api_url": "http://x/", "pid": PID, "key": KEY, "timeout": 0}, r"config_json\.timeout: "),
        ({"api_url": "http://x/", "pid": PID, "key": KEY, "channels": []}, r"config_json\.channels: "),
        ({"apiurl": "http://x/", "api_url": "http://x/", "pid": PID, "key": KEY}, r"'apiurl' was unexpected"),
    ],
)
def test_create_interface_validates_the_config(stub, admin_token: str, cfg: dict[str, Any], match: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, match) as info:
        create_interface(stub, admin_token, "yipay", json.dumps(cfg))
    assert KEY not in info["details"]


def _health(stub, token: str, iface) -> pb.CheckPluginHealthResponse:  # type: ignore[no-untyped-def]
    return stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token), timeout=30)


def test_health_through_the_server(server: ServerProcess, stub, admin_token: str, gateway: EpayServer) -> None:  # type: ignore[no-untyped-def]
    good = create_interface(stub, admin_token, "yipay", server_config(gateway))
    assert good.plugin_version == "1.1.0" and good.has_admin_page
    reply = _health(stub, admin_token, good)
    assert reply.is_healthy, reply.error

    bad = create_interface(stub, admin_token, "yipay", server_config(gateway, key="not-the-key"))
    reply = _health(stub, admin_token, bad)
    assert not reply.is_healthy and "KEY校验失败" in reply.error and "check pid and key" in reply.error
    got = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=bad.id), metadata=md(admin_token))
    assert got.interface.health_error == reply.error

    port = free_port()
    gone = create_interface(stub, admin_token, "yipay", server_config(gateway, api_url=f"http://127.0.0.1:{port}/"))
    reply = _health(stub, admin_token, gone)
    assert not reply.is_healthy and f"cannot reach the EPay gateway at http://127.0.0.1:{port}/" in reply.error

    other = create_interface(stub, admin_token, "yipay", server_config(gateway, api_url=gateway.url + "html/"))
    assert "did not answer JSON" in _health(stub, admin_token, other).error

    slow_gw = EpayServer({PID: KEY}).start()
    try:
        slow_gw.delay = 5
        slow = create_interface(stub, admin_token, "yipay", server_config(slow_gw, timeout=1))
        reply = _health(stub, admin_token, slow)
        # the plugin's own 1 s limit, or on a very busy machine the server's 2 s limit for health_check
        assert not reply.is_healthy
        assert "did not answer api.php within 1s" in reply.error or "did not finish within 2s" in reply.error
    finally:
        slow_gw.stop()
    assert KEY not in server.log  # httpx logs request URLs; api.php takes the key in its query


def test_admin_page_through_the_server(stub, admin_token: str, gateway: EpayServer) -> None:  # type: ignore[no-untyped-def]
    iface = create_interface(stub, admin_token, "yipay", server_config(gateway))
    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(admin_token))
    assert page.title == "易支付 / EPay"
    html = page.html_content
    assert "<td>1001</td>" in html and "<td>active</td>" in html and "0.00 CNY" in html and "测试商户" in html
    assert 'id="lookup"' in html and "admin_query_order" in html
    assert KEY not in html

    bad = create_interface(stub, admin_token, "yipay", server_config(gateway, key="not-the-key"))
    html = stub.GetPluginAdminPage(
        pb.GetPluginAdminPageRequest(interface_id=bad.id), metadata=md(admin_token)
    ).html_content
    assert "Cannot read the merchant account" in html and "KEY校验失败" in html and "not-the-key" not in html


def _action(stub, token: str, iface, function: str, **args: Any) -> Any:  # type: ignore[no-untyped-def]
    req = pb.CallPluginActionRequest(interface_id=iface.id, function=function, args_json=json.dumps(args))
    return json.loads(stub.CallPluginAction(req, metadata=md(token), timeout=30).result_json)


def test_admin_actions_through_the_server(stub, admin_token: str, gateway: EpayServer) -> None:  # type: ignore[no-untyped-def]
    iface = create_interface(stub, admin_token, "yipay", server_config(gateway))
    # an order placed and paid at the gateway (the browser's side of create_payment)
    params = {
        "pid": PID,
        "type": "alipay",
        "out_trade_no": unique("RB"),
        "notify_url": "http://127.0.0.1:9/n",
        "name": "VPS",
        "money": "88.80",
    }
    params |= {"sign": epay_sign(params, KEY), "sign_type": "MD5"}
    assert httpx.get(gateway.url + "submit.php", params=params, timeout=10).status_code == 302
    gateway.notify_attempts = 1
    gateway.pay(params["out_trade_no"]).wait()

    info = _action(stub, admin_token, iface, "admin_merchant_info")
    assert info["pid"] == PID and Decimal(info["balance"]) >= Decimal("88.80") and KEY not in json.dumps(info)
    got = _action(stub, admin_token, iface, "admin_query_order", out_trade_no=params["out_trade_no"])
    assert got["status"] == "paid" and got["money"] == "88.80"
    recent = _action(stub, admin_token, iface, "admin_recent_orders", limit=5)
    assert recent["orders"][0]["out_trade_no"] == params["out_trade_no"]

    def call(function: str, **args: Any) -> None:
        _action(stub, admin_token, iface, function, **args)

    with raises_code(grpc.StatusCode.NOT_FOUND, "订单号不存在"):
        call("admin_query_order", out_trade_no="RBnope")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "give trade_no or out_trade_no"):
        call("admin_query_order")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "limit must be between 1 and 50"):
        call("admin_recent_orders", limit=51)
