"""The built-in webhook notifier, against a local Standard Webhooks receiver (tests/peers/webhook_receiver.py)
that verifies every request with its own copy of the secret, as the spec tells consumers to.

Two ways in: in process through rustbill.domain.Channels.send (and Providers for the admin page and
actions) on a real database, and through the running server's RPCs (CreatePluginInterface,
CheckPluginHealth, CallPluginAction, GetPluginAdminPage).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from helpers import (
    SHIPPED_PLUGINS,
    Databases,
    PluginHost,
    ServerProcess,
    create_interface,
    free_port,
    md,
    raises_code,
)
from peers.webhook_receiver import WebhookReceiver, new_secret, sign

from rustbill import errors
from rustbill.db import Database
from rustbill.pb import integration_pb2 as pb
from rustbill.plugins import load_plugin

PLUGIN = SHIPPED_PLUGINS / "webhook.py"
SECRET = new_secret()  # the endpoint's secret: must never show up in pages, results or logs
OTHER_SECRET = new_secret()


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET).start()
    yield r
    r.stop()


def config(receiver: WebhookReceiver | str, **kw: Any) -> dict[str, Any]:
    url = receiver if isinstance(receiver, str) else receiver.url
    return {"url": url, "secret": SECRET, "backoff_seconds": 0.05, **kw}


class Host(PluginHost):
    """The billing core's side in process (see helpers.PluginHost)."""

    def __init__(self, db: Database, call_timeout: float = 30) -> None:
        super().__init__(db, "webhook", call_timeout=call_timeout)


@pytest.fixture(scope="module")
def db_url(databases: Databases) -> str:
    return databases.new()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
async def host(db: Database) -> AsyncIterator[Host]:
    h = Host(db)
    yield h
    await h.close()  # (its workers, the SDK's client, its temporary folder)


def message(**kw: Any) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "event": "invoice.paid",
        "subject": "Invoice 2024-0042 paid",
        "text": "Thank you, 12.50 CNY received.",
        "data": {"invoice": "2024-0042", "amount": Decimal("12.50"), "currency": "CNY"},
        **kw,
    }


# ---------------------------------------------------------------- signing


def test_signature_matches_the_spec_test_vector() -> None:
    """The test vector of the Standard Webhooks reference libraries (libraries/python/tests)."""
    mod = load_plugin(PLUGIN, PLUGIN.read_bytes(), "webhook").module
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    key = mod._key(secret, "secret")
    assert mod.signature([key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected  # the peer agrees
    two = mod.signature([key, mod._key(OTHER_SECRET, "x")], "m", 1, b"{}").split(" ")
    assert len(two) == 2 and two[0] == sign(secret, "m", 1, b"{}") and two[1] == sign(OTHER_SECRET, "m", 1, b"{}")


# ---------------------------------------------------------------- send through Channels


async def test_send_is_signed_and_verified_by_the_receiver(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, headers={"X-Tenant": "shop-1"}))
    msg = message(to=["ops@example.com"])
    before = int(time.time())
    result = await host.channels.send(iid, msg)
    assert result == {"delivered": True, "id": msg["id"], "error": ""}

    assert len(receiver.posts()) == 1 and len(receiver.deliveries) == 1
    got = receiver.deliveries[0]
    assert got.status == 200 and got.reason == "accepted"
    assert got.headers["webhook-id"] == msg["id"]  # the message id is the idempotency key
    assert before - 1 <= int(got.headers["webhook-timestamp"]) <= int(time.time()) + 1
    assert got.headers["content-type"] == "application/json" and got.headers["x-tenant"] == "shop-1"
    assert "authorization" not in got.headers
    body = got.json
    assert body["type"] == "invoice.paid" and body["id"] == msg["id"]
    assert body["timestamp"].endswith("Z")
    assert body["data"] == {
        "invoice": "2024-0042",
        "amount": "12.50",  # money stays a decimal string
        "currency": "CNY",
        "subject": "Invoice 2024-0042 paid",
        "text": "Thank you, 12.50 CNY received.",
        "to": ["ops@example.com"],
    }
    assert got.body == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()  # sent as signed

    # the same message again: same webhook-id, so the receiver recognises the duplicate
    await host.channels.send(iid, msg)
    assert receiver.duplicates == 1 and len(receiver.deliveries) == 1

    # Channels gives a message without an id a fresh one
    result = await host.channels.send(iid, {"event": "user.created", "data": {"user": "alice"}})
    assert result["delivered"] and uuid.UUID(result["id"])
    assert receiver.deliveries[-1].headers["webhook-id"] == result["id"]


async def test_wrong_secret_is_refused_once_and_never_retried(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, secret=OTHER_SECRET, max_attempts=5))
    with pytest.raises(errors.FailedPrecondition, match=r"refused the webhook with HTTP 401.*check that secret") as ei:
        await host.channels.send(iid, message())
    assert len(receiver.posts()) == 1  # exactly one attempt
    assert receiver.posts()[0].status == 401 and receiver.deliveries == []
    assert OTHER_SECRET not in ei.value.message and SECRET not in ei.value.message


async def test_500_then_200_is_retried_and_delivered(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, max_attempts=3))
    receiver.fail_next = [500]
    msg = message()
    assert (await host.channels.send(iid, msg))["delivered"]
    posts = receiver.posts()
    assert [p.status for p in posts] == [500, 200]
    assert {p.headers["webhook-id"] for p in posts} == {msg["id"]}  # the same id on every attempt
    assert posts[0].body == posts[1].body  # only the attempt's timestamp and signature may change


async def test_persistent_500_ends_unavailable_after_max_attempts(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, max_attempts=3))
    receiver.always = 503
    with pytest.raises(errors.Unavailable, match=r"not delivered after 3 attempts: last error: .* HTTP 503"):
        await host.channels.send(iid, message())
    assert [p.status for p in receiver.posts()] == [503, 503, 503]


async def test_slow_receiver_times_out_and_is_retried(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, timeout=1, max_attempts=2))
    receiver.delay = 4
    with pytest.raises(errors.DeadlineExceeded, match=r"after 2 attempts: last error: .* did not answer within 1s"):
        await host.channels.send(iid, message())
    assert len(receiver.posts()) == 2


async def test_unreachable_port(host: Host) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks"
    iid = await host.interface(config(url, max_attempts=2))
    with pytest.raises(errors.Unavailable, match=rf"after 2 attempts: last error: cannot reach {url}: ConnectError"):
        await host.channels.send(iid, message())


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [
        (404, errors.FailedPrecondition, r"HTTP 404.*no webhook endpoint at this url"),
        (410, errors.FailedPrecondition, r"HTTP 410 Gone: the receiver no longer wants these webhooks"),
        (429, errors.ResourceExhausted, r"HTTP 429 Too Many Requests"),
        (302, errors.FailedPrecondition, r"HTTP 302 \(redirect to /hooks/rustbill/moved\).*set url"),
        (400, errors.FailedPrecondition, r"refused the webhook with HTTP 400"),
    ],
)
async def test_3xx_and_4xx_are_never_retried(
    host: Host, receiver: WebhookReceiver, status: int, error: type[Exception], match: str
) -> None:
    iid = await host.interface(config(receiver, max_attempts=4))
    receiver.always = status
    with pytest.raises(error, match=match):
        await host.channels.send(iid, message())
    assert len(receiver.posts()) == 1


async def test_retry_after_beyond_the_time_limit_stops_early(host: Host, receiver: WebhookReceiver) -> None:
    """The plugin never runs past max_total_seconds, whatever the receiver asks for."""
    iid = await host.interface(config(receiver, max_attempts=5, max_total_seconds=5))
    receiver.always, receiver.retry_after = 503, "60"
    start = time.monotonic()
    with pytest.raises(errors.Unavailable, match=r"after 1 attempt: .*HTTP 503.*stopped to stay within max_total"):
        await host.channels.send(iid, message())
    assert time.monotonic() - start < 5 and len(receiver.posts()) == 1


async def test_the_host_call_timeout_cuts_a_too_long_retry_budget(db: Database, receiver: WebhookReceiver) -> None:
    """max_total_seconds above the server's call timeout: the server stops the call (documented)."""
    h = Host(db, call_timeout=1.5)
    try:
        iid = await h.interface(config(receiver, max_attempts=10, backoff_seconds=1, max_total_seconds=60))
        receiver.always = 500
        with pytest.raises(errors.DeadlineExceeded, match=r"plugin 'webhook' send did not finish within 1.5s"):
            await h.channels.send(iid, message())
    finally:
        await h.close()


async def test_secret_rotation_signs_with_both_secrets(host: Host) -> None:
    old_only = WebhookReceiver(OTHER_SECRET).start()  # a receiver that has not switched yet
    try:
        iid = await host.interface(config(old_only, previous_secret=OTHER_SECRET))
        assert (await host.channels.send(iid, message()))["delivered"]
        sigs = old_only.deliveries[0].headers["webhook-signature"].split(" ")
        assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    finally:
        old_only.stop()


async def test_authorization_header_is_sent(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, authorization="Bearer hook-token-123"))
    await host.channels.send(iid, message())
    assert receiver.deliveries[0].headers["authorization"] == "Bearer hook-token-123"


async def test_message_ids_that_cannot_be_signed_are_refused(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver))
    for bad in ("a.b", "has space", "x" * 201):
        with pytest.raises(errors.InvalidArgument, match=r"cannot be a webhook-id|message\.id must be"):
            await host.channels.send(iid, message(id=bad))
    with pytest.raises(errors.InvalidArgument, match="cannot be sent as JSON"):
        await host.channels.send(iid, message(data={"blob": b"\x00"}))
    assert receiver.requests == []


async def test_reserved_extra_headers_are_refused(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, headers={"Webhook-Id": "forged"}))
    with pytest.raises(errors.FailedPrecondition, match="'Webhook-Id' is set by the plugin"):
        await host.channels.send(iid, message())
    assert receiver.requests == []
    assert "'Webhook-Id' is set by the plugin" in (await host.health(iid) or "")


# ---------------------------------------------------------------- health, admin page and actions in process


async def test_health_check_says_what_is_wrong(host: Host, receiver: WebhookReceiver) -> None:
    assert await host.health(await host.interface(config(receiver))) is None
    ping = receiver.deliveries[-1]
    assert ping.json["type"] == "ping" and ping.headers["webhook-id"].startswith("ping_")

    wrong = await host.health(await host.interface(config(receiver, secret=OTHER_SECRET)))
    assert wrong and "HTTP 401" in wrong and "check that secret" in wrong

    port = free_port()
    gone = await host.health(await host.interface(config(f"http://127.0.0.1:{port}/h")))
    assert gone and f"cannot reach http://127.0.0.1:{port}/h: ConnectError" in gone

    missing = await host.health(await host.interface(config(receiver.url + "/nope")))
    assert missing and "HTTP 404" in missing

    receiver.delay = 3
    slow = await host.health(await host.interface(config(receiver, timeout=1)))
    assert slow and "did not answer within 1s" in slow
    receiver.delay = 0

    n = len(receiver.posts())
    options = await host.interface(config(receiver, health_check="options", secret=OTHER_SECRET))
    assert await host.health(options) is None  # OPTIONS is not signed: reachability only
    assert len(receiver.posts()) == n and receiver.requests[-1].method == "OPTIONS"
    gone_options = await host.health(await host.interface(config(f"http://127.0.0.1:{port}/h", health_check="options")))
    assert gone_options and "cannot reach" in gone_options


async def test_admin_send_test_and_the_recent_deliveries(host: Host, receiver: WebhookReceiver) -> None:
    iid = await host.interface(config(receiver, authorization="Bearer sekrit-token"))
    result = await host.action(iid, "admin_send_test")
    assert result["delivered"] and result["status"] == 200 and result["attempts"] == 1
    assert result["id"].startswith("test_") and result["url"] == receiver.url
    assert receiver.deliveries[-1].json["type"] == "test"

    msg = message()
    await host.channels.send(iid, msg)
    receiver.always = 500
    with pytest.raises(errors.Unavailable):
        await host.channels.send(iid, message(id="msg_failed_1"))
    with pytest.raises(errors.Unavailable, match="after 1 attempt"):  # a test is one attempt
        await host.action(iid, "admin_send_test")

    recent = (await host.action(iid, "admin_recent"))["recent"]
    outcomes = [(r["kind"], r["delivered"]) for r in recent]
    assert outcomes == [("test", False), ("send", False), ("send", True), ("test", True)]
    assert recent[1]["id"] == "msg_failed_1" and recent[1]["attempts"] == 3 and "HTTP 500" in recent[1]["error"]
    assert recent[2]["id"] == msg["id"] and recent[2]["status"] == 200

    page, title = await host.providers.admin_page(iid)
    assert title == "Webhook"
    assert receiver.url in page and "msg_failed_1" in page and msg["id"] in page and "admin_send_test" in page
    assert SECRET not in page and "sekrit-token" not in page and "Authorization header</th><td>set" in page

    with pytest.raises(errors.InvalidArgument, match="cannot override configuration field"):
        await host.action(iid, "admin_send_test", url="http://evil.example/")


# ---------------------------------------------------------------- through the server


def server_config(receiver: WebhookReceiver | str, **kw: Any) -> str:
    return json.dumps(config(receiver, **kw))


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"secret": SECRET}, r"config_json\.url: is required"),
        ({"url": "ftp://x/hook", "secret": SECRET}, r"config_json\.url: "),
        ({"url": "http://x/hook"}, r"config_json\.secret: is required"),
        ({"url": "http://x/hook", "secret": SECRET.removeprefix("whsec_")}, r"config_json\.secret: fails 'pattern'"),
        ({"url": "http://x/hook", "secret": "whsec_c2hvcnQ="}, r"config_json\.secret: fails 'pattern'"),
        ({"url": "http://x/hook", "secret": SECRET, "max_attempts": 0}, r"config_json\.max_attempts: "),
        ({"url": "http://x/hook", "secret": SECRET, "timeout": 0.5}, r"config_json\.timeout: "),
        ({"url": "http://x/hook", "secret": SECRET, "headers": {"Bad Name": "x"}}, r"config_json\.headers: "),
        ({"url": "http://x/hook", "secret": SECRET, "health_check": "head"}, r"config_json\.health_check: "),
        ({"url": "http://x/hook", "secret": SECRET, "retries": 3}, r"'retries' was unexpected"),
    ],
)
def test_create_interface_validates_the_config(stub, admin_token: str, cfg: dict[str, Any], match: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, match) as info:
        create_interface(stub, admin_token, "webhook", json.dumps(cfg))
    assert SECRET not in info["details"] and SECRET.removeprefix("whsec_") not in info["details"]


def _health(stub, token: str, iface) -> pb.CheckPluginHealthResponse:  # type: ignore[no-untyped-def]
    return stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token), timeout=30)


def test_health_through_the_server(server: ServerProcess, stub, admin_token: str, receiver: WebhookReceiver) -> None:  # type: ignore[no-untyped-def]
    good = create_interface(stub, admin_token, "webhook", server_config(receiver))
    assert good.plugin_version == "1.0.0" and good.has_admin_page and good.plugin_type == "notifier"
    reply = _health(stub, admin_token, good)
    assert reply.is_healthy, reply.error
    assert receiver.deliveries[-1].json["type"] == "ping"

    bad = create_interface(stub, admin_token, "webhook", server_config(receiver, secret=OTHER_SECRET))
    reply = _health(stub, admin_token, bad)
    assert not reply.is_healthy and "HTTP 401" in reply.error and "check that secret" in reply.error
    got = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=bad.id), metadata=md(admin_token))
    assert got.interface.health_error == reply.error

    port = free_port()
    gone = create_interface(stub, admin_token, "webhook", server_config(f"http://127.0.0.1:{port}/h"))
    reply = _health(stub, admin_token, gone)
    assert not reply.is_healthy and f"cannot reach http://127.0.0.1:{port}/h" in reply.error
    assert SECRET not in server.log and OTHER_SECRET not in server.log


def _action(stub, token: str, iface, function: str, **args: Any) -> Any:  # type: ignore[no-untyped-def]
    req = pb.CallPluginActionRequest(interface_id=iface.id, function=function, args_json=json.dumps(args))
    return json.loads(stub.CallPluginAction(req, metadata=md(token), timeout=30).result_json)


def test_send_test_and_admin_page_through_the_server(stub, admin_token: str, receiver: WebhookReceiver) -> None:  # type: ignore[no-untyped-def]
    iface = create_interface(stub, admin_token, "webhook", server_config(receiver))
    result = _action(stub, admin_token, iface, "admin_send_test", text="hello from the admin page")
    assert result["delivered"] and result["status"] == 200
    # (the interface's first health check, started at once in the background, may have sent a ping too)
    got = next(d for d in receiver.deliveries if d.headers["webhook-id"] == result["id"])
    assert got.json["data"]["text"] == "hello from the admin page"

    receiver.always = 401
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"HTTP 401"):
        _action(stub, admin_token, iface, "admin_send_test")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"cannot override configuration field\(s\): secret"):
        _action(stub, admin_token, iface, "admin_send_test", secret=OTHER_SECRET)

    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(admin_token))
    assert page.title == "Webhook"
    html = page.html_content
    assert receiver.url in html and result["id"] in html and "Send test event" in html and "HTTP 401" in html
    assert ">failed<" in html and ">delivered<" in html and SECRET not in html
