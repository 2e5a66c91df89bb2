"""Every shipped plugin × every contract function it defines, called in process with sample
arguments; each result is checked with the contract's own checker (src/rustbill/plugins/contract.py;
for version() and config_schema(), the loader's rules).

The calls go through PluginRuntime.call on a real interface (config validated against the plugin's
schema, on a fresh database, as helpers.PluginHost makes it) — the checker is applied here, so that
a bad shape fails with the checker's own message. Plugins that talk to a remote system are called
against the local peers: libvirt's test driver (kvm), tests/peers/incus_server.py (incus),
tests/peers/epay_server.py (yipay), tests/peers/webhook_receiver.py (webhook), aiosmtpd (email),
another RustBill server (rustbill).

The list of cases is computed from the plugins folder and the contract: a new plugin or a new
contract function fails ``test_every_plugin_function_has_a_sample`` until it has a sample here.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from helpers import (
    SHIPPED_PLUGINS,
    TEST_PLUGINS,
    Databases,
    PluginHost,
    ServerProcess,
    create_interface,
    free_port,
    md,
)
from peers.epay_server import EpayServer
from peers.incus_server import IncusServer
from peers.webhook_receiver import WebhookReceiver, new_secret

from rustbill import errors
from rustbill.db import Database
from rustbill.pb.product_pb2 import SyncProductsRequest
from rustbill.plugins import load_plugin
from rustbill.plugins.contract import (
    CHECKERS,
    FUNCTIONS_BY_TYPE,
    check_found_instance,
    check_instance,
)
from rustbill.plugins.loader import plugin_id_for

try:
    import libvirt  # noqa: F401

    HAVE_LIBVIRT = True
except ImportError:  # pragma: no cover - CI has libvirt-python
    HAVE_LIBVIRT = False

NODE_XML = Path(__file__).resolve().parent / "peers" / "libvirt_node.xml"


# ---------------------------------------------------------------- the contract's checkers
#
# contract.CHECKERS: function -> the checker the host applies to its result (for version() and
# config_schema(), the loader's rules).

NO_CONFIG = ("version", "config_schema")  # called without arguments


def _shipped() -> dict[str, Any]:
    out = {}
    for path in sorted(SHIPPED_PLUGINS.glob("*.py")):
        pid = plugin_id_for(path)
        if pid is not None:
            out[pid] = load_plugin(path, path.read_bytes(), pid)
    return out


SHIPPED = _shipped()
PAIRS = [
    (pid, fn)
    for pid, loaded in SHIPPED.items()
    for fn in FUNCTIONS_BY_TYPE[loaded.plugin_type]
    if loaded.function(fn) is not None
]


# ---------------------------------------------------------------- one interface per case


@dataclass
class Bed:
    """One interface of one plugin, on a fresh database, with its peer running."""

    host: PluginHost
    iid: uuid.UUID
    peer: Any
    binding: Any = None
    made: dict[str, Any] = field(default_factory=dict)  # what a sample made first (an instance, an order)

    async def call(self, function: str, *args: Any, config: dict[str, Any] | None = None) -> Any:
        if self.binding is None:
            self.binding = await self.host.runtime.bind(self.iid)
        return await self.host.runtime.call(self.binding, function, *args, config=config)

    async def call_bare(self, function: str) -> Any:
        """version() and config_schema(): called by the loader in the plugin's worker process,
        which sent back what they returned (the loader's own checks passed)."""
        return {"version": self.host.loaded.version, "config_schema": self.host.loaded.config_schema}[function]


Setup = Callable[[Path], Any]  # tmp_path -> async context manager yielding (config, peer)


@asynccontextmanager
async def _fixed(config: dict[str, Any]) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    yield config, None


EPAY_PID, EPAY_KEY = "1001", "Zq8vN3kT5yW2pLr7"


@asynccontextmanager
async def _yipay(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    epay = EpayServer({EPAY_PID: EPAY_KEY}, notify_attempts=1).start()
    try:
        yield {"api_url": epay.url, "pid": EPAY_PID, "key": EPAY_KEY}, epay
    finally:
        epay.stop()


WEBHOOK_SECRET = new_secret()


@asynccontextmanager
async def _webhook(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    receiver = WebhookReceiver(WEBHOOK_SECRET).start()
    try:
        yield {"url": receiver.url, "secret": WEBHOOK_SECRET, "backoff_seconds": 0.05}, receiver
    finally:
        receiver.stop()


class _Relay:
    """An SMTP relay (aiosmtpd, no TLS, no login) that keeps what it accepts."""

    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope)
        return "250 2.0.0 Ok: queued"


@asynccontextmanager
async def _email(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    relay = _Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    try:
        yield (
            {
                "host": "127.0.0.1",
                "port": controller.port,
                "security": "none",
                "from_address": "Example Billing <billing@example.com>",
                "helo_hostname": "rustbill.test",
                "timeout": 10,
            },
            relay,
        )
    finally:
        controller.stop()


PLAN = {"id": "small", "name": "Small", "cpu_cores": 1, "memory_gb": 1, "disk_gb": 10}


@asynccontextmanager
async def _incus(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    srv = IncusServer(op_delay=0.05).start()
    cc = srv.client_cert()
    try:
        yield (
            {
                "url": srv.url,
                "client_cert": cc.cert_pem,
                "client_key": cc.key_pem,
                "server_cert": srv.server_cert_pem,
                "plans": [PLAN],
            },
            srv,
        )
    finally:
        srv.stop()


@asynccontextmanager
async def _kvm(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.read_text())  # a host of the test's own (fresh test-driver state)
    yield (
        {
            "uri": f"test://{node}",
            "storage_pool": "default-pool",
            "network": "default",
            "domain_type": "test",
            "arch": "i686",
            "images": {"debian-12": {"volume": "debian-12.qcow2", "pool": "images"}},
            "plans": [PLAN],
        },
        None,
    )


_UPSTREAM: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _rustbill_upstream(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Any:
    """The ``rustbill`` plugin's peer: another RustBill server (t_provider as its provider, a
    reseller customer with credit and an API key), started when a rustbill case first needs it."""

    def start() -> tuple[ServerProcess, dict[str, Any]]:
        srv = ServerProcess(
            tmp_path_factory.mktemp("upstream"),
            databases.new(),
            plugins=[TEST_PLUGINS / "t_provider.py"],
            env={"RUSTBILL_AUTH__PERMISSIONS": json.dumps({"IntegrationService/ListProviders": "authenticated"})},
        ).start()
        stub, admin = srv.stub(), srv.token()
        iface = create_interface(stub, admin, "t_provider", '{"product_count": 2}')
        stub.SyncProducts(SyncProductsRequest(interface_id=iface.id), metadata=md(admin))
        srv.cli("user", "create", "reseller", "--role", "customer")
        srv.cli("balance", "credit", "reseller", "1000")
        key = srv.cli("apikey", "create", "--user", "reseller").stdout.strip()
        return srv, {"upstream_url": srv.http_url, "api_key": key, "interface_id": iface.id, "markup_percent": "20"}

    _UPSTREAM["start"] = start
    yield
    if "srv" in _UPSTREAM:
        _UPSTREAM.pop("srv").stop()


@asynccontextmanager
async def _rustbill(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    if "config" not in _UPSTREAM:
        _UPSTREAM["srv"], _UPSTREAM["config"] = await asyncio.to_thread(_UPSTREAM["start"])
    yield dict(_UPSTREAM["config"]), _UPSTREAM["srv"]


SETUPS: dict[str, Setup] = {
    "demo_cloud": lambda _: _fixed({}),
    "demo_upstream": lambda _: _fixed({"markup_percent": "10"}),
    "bank_memo": lambda _: _fixed({"account_name": "ACME Hosting Ltd", "iban": "DE89370400440532013000"}),
    "bank_transfer": lambda _: _fixed(
        {"account_name": "ACME Hosting Ltd", "bank_name": "Example Bank", "account_number": "6222 0210 0112 3456"}
    ),
    "log_notifier": lambda _: _fixed({"prefix": "[contract] "}),
    "yipay": _yipay,
    "webhook": _webhook,
    "email": _email,
    "incus": _incus,
    "kvm": _kvm,
    "rustbill": _rustbill,
}


@pytest.fixture(scope="module")
def db_url(databases: Databases) -> str:
    return databases.new()


async def _close(host: PluginHost) -> None:
    await host.close()  # (the plugin's worker process ends, with its connections)


# ---------------------------------------------------------------- sample arguments


SPEC = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 20, "bandwidth_mbps": 100, "region": "", "os": "", "extra_specs": {}}


def _order() -> dict[str, str]:
    return {
        "order_id": f"RB{uuid.uuid4().hex[:20]}",
        "amount": "12.50",
        "currency": "CNY",
        "subject": "VPS 2C4G monthly",
        "channel": "alipay",
        "notify_url": "http://127.0.0.1:9/notify",
        "return_url": "https://shop.example.com/orders/return",
        "client_ip": "203.0.113.7",
    }


def _message() -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "event": "invoice.paid",
        "subject": "Invoice 2024-0042 paid",
        "text": "Thank you, 12.50 CNY received.",
        "html": "<p>Thank you, <b>12.50 CNY</b> received.</p>",
        "to": ["alice@example.net"],
        "data": {"invoice": "2024-0042", "amount": Decimal("12.50")},
    }


def _notify_request(query: dict[str, str], order: dict[str, str] | None) -> dict[str, Any]:
    expected = None if order is None else {k: order[k] for k in ("order_id", "amount", "currency")}
    return {"method": "GET", "query": query, "form": {}, "headers": {}, "body": "", "order": expected}


@dataclass
class Sample:
    """``run`` calls the function and returns its raw result; ``expect`` asserts on the result as
    the checker returned it; or ``error``: (status name, pattern) of the clean domain error that is
    the right answer."""

    run: Callable[[Bed], Awaitable[Any]]
    expect: Callable[[Any, Bed], None] | None = None
    error: tuple[str, str] | None = None


async def _created(b: Bed, request_id: str | None = None) -> dict[str, Any]:
    spec = {**SPEC, "request_id": request_id or str(uuid.uuid4())}
    return check_instance(await b.call("create_instance", spec), "c", need_id=True)


async def _status_of_created(b: Bed) -> Any:
    b.made["instance_id"] = (await _created(b))["instance_id"]
    return await b.call("get_instance_status", b.made["instance_id"])


async def _list_after_create(b: Bed) -> Any:
    b.made["instance_id"] = (await _created(b))["instance_id"]
    return await b.call("sync_upstream_instances")


async def _found_after_create(b: Bed) -> Any:
    """find_instance of an order that create_instance opened, after asking about one it never saw."""
    b.made["unknown"] = check_found_instance(await b.call("find_instance", str(uuid.uuid4())))
    request_id = str(uuid.uuid4())
    b.made["instance_id"] = (await _created(b, request_id))["instance_id"]
    return await b.call("find_instance", request_id)


def _found(checked: Any, b: Bed) -> None:
    assert b.made["unknown"] is None, f"an order never opened was found: {b.made['unknown']}"
    assert checked is not None and checked["instance_id"] == b.made["instance_id"] and checked["status"]


def _healthy(checked: Any, b: Bed) -> None:
    assert checked is None, f"unhealthy: {checked}"


def _page(checked: Any, b: Bed) -> None:
    html, title = checked
    assert html.strip() and title


def _template(checked: Any, b: Bed) -> None:
    assert "cpu_cores" in {f["key"] for f in checked["fields"]}


def _price(checked: Any, b: Bed) -> None:
    assert Decimal(checked["amount"]) > 0 and checked["currency"] and checked["billing_cycle"]


def _products(checked: Any, b: Bed) -> None:
    assert checked and all(p["name"] and p["price"] >= 0 for p in checked)


def _instance(checked: Any, b: Bed) -> None:
    assert checked["instance_id"] and checked["status"]


def _status(checked: Any, b: Bed) -> None:
    assert checked is not None and checked["instance_id"] in ("", b.made["instance_id"]) and checked["status"]


def _listed(checked: Any, b: Bed) -> None:
    assert b.made["instance_id"] in {i["instance_id"] for i in checked}


def _balance(checked: Any, b: Bed) -> None:
    Decimal(checked["balance"])  # an exact decimal
    assert checked["currency"]


def _payment(checked: Any, b: Bed) -> None:
    assert checked["pay_url"] or checked["qrcode"] or checked["instructions"]


def _delivered(checked: Any, b: Bed) -> None:
    assert checked["delivered"] is True and checked["error"] == ""


DEFAULTS: dict[str, Sample] = {
    "version": Sample(lambda b: b.call_bare("version")),
    "config_schema": Sample(lambda b: b.call_bare("config_schema"), lambda c, b: c.get("type") == "object"),
    "health_check": Sample(lambda b: b.call("health_check"), _healthy),
    "admin_page": Sample(lambda b: b.call("admin_page"), _page),
    "spec_template": Sample(lambda b: b.call("spec_template"), _template),
    "query_price": Sample(lambda b: b.call("query_price", dict(SPEC)), _price),
    "sync_products": Sample(lambda b: b.call("sync_products"), _products),
    "create_instance": Sample(
        lambda b: b.call("create_instance", {**SPEC, "request_id": str(uuid.uuid4())}), _instance
    ),
    "get_instance_status": Sample(_status_of_created, _status),
    "find_instance": Sample(_found_after_create, _found),
    "sync_upstream_instances": Sample(_list_after_create, _listed),
    "get_upstream_balance": Sample(lambda b: b.call("get_upstream_balance"), _balance),
    "create_payment": Sample(lambda b: b.call("create_payment", _order()), _payment),
    "send": Sample(lambda b: b.call("send", _message()), _delivered),
}


# -- verify_notify, per gateway: a notification as its gateway sends it


async def _bank_memo_notify(b: Bed) -> Any:
    return await b.call("verify_notify", _notify_request({"reference": "RB-1"}, _order()))


def _not_paid(checked: Any, b: Bed) -> None:
    assert checked["paid"] is False and checked["reply"] and checked["error"]


async def _bank_transfer_notify(b: Bed) -> Any:
    order = _order()
    reference = (await b.call("create_payment", order))["trade_no"]
    await b.host.action(b.iid, "admin_confirm", reference=reference, amount_received=order["amount"])
    b.made["order"] = order
    return await b.call("verify_notify", _notify_request({"reference": reference}, order))


def _paid(checked: Any, b: Bed) -> None:
    assert checked["valid"] and checked["paid"] and checked["reply"] == "success"
    order = b.made["order"]
    assert checked["order_id"] == order["order_id"] and Decimal(checked["amount"]) == Decimal(order["amount"])


async def _yipay_notify(b: Bed) -> Any:
    epay: EpayServer = b.peer
    order = _order()
    pay = await b.call("create_payment", order)
    async with httpx.AsyncClient(timeout=10) as client:  # the customer's browser opens the pay URL
        assert (await client.get(pay["pay_url"])).status_code == 302
    gw = epay.find(order["order_id"])
    gw.status = 1  # paid at the gateway
    b.made["order"] = order
    return await b.call("verify_notify", _notify_request(epay.notification(gw), order))


def _yipay_payment(checked: Any, b: Bed) -> None:
    assert checked["pay_url"].startswith(b.peer.url + "submit.php?")


async def _email_send(b: Bed) -> Any:
    return await b.call("send", _message())


def _mailed(checked: Any, b: Bed) -> None:
    _delivered(checked, b)
    assert [m.rcpt_tos for m in b.peer.mails] == [["alice@example.net"]]


def _webhook_delivered(checked: Any, b: Bed) -> None:
    _delivered(checked, b)
    assert len(b.peer.deliveries) == 1


def _demo_status(checked: Any, b: Bed) -> None:
    _status(checked, b)
    assert checked["status"] == "running"


OVERRIDES: dict[tuple[str, str], Sample] = {
    ("bank_memo", "verify_notify"): Sample(_bank_memo_notify, _not_paid),
    ("bank_transfer", "verify_notify"): Sample(_bank_transfer_notify, _paid),
    ("yipay", "verify_notify"): Sample(_yipay_notify, _paid),
    ("yipay", "create_payment"): Sample(lambda b: b.call("create_payment", _order()), _yipay_payment),
    ("email", "send"): Sample(_email_send, _mailed),
    ("webhook", "send"): Sample(lambda b: b.call("send", _message()), _webhook_delivered),
    ("demo_cloud", "get_instance_status"): Sample(_status_of_created, _demo_status),
    # first-party providers have no upstream balance: they say so
    ("incus", "get_upstream_balance"): Sample(lambda b: b.call("get_upstream_balance"),
                                              error=("UNIMPLEMENTED", "there is no upstream balance")),
    ("kvm", "get_upstream_balance"): Sample(lambda b: b.call("get_upstream_balance"),
                                            error=("UNIMPLEMENTED", "there is no upstream balance")),
}  # fmt: skip

# kvm without libvirt-python: what needs libvirt is a clear FAILED_PRECONDITION, not a crash
KVM_NEEDS_LIBVIRT = ("health_check", "admin_page", "create_instance", "find_instance", "get_instance_status",
                     "sync_upstream_instances")  # fmt: skip


def sample_for(pid: str, function: str) -> Sample | None:
    sample = OVERRIDES.get((pid, function), DEFAULTS.get(function))
    if sample is not None and pid == "kvm" and function in KVM_NEEDS_LIBVIRT and not HAVE_LIBVIRT:
        sample = Sample(sample.run, error=("FAILED_PRECONDITION", "libvirt-python is not installed"))
    return sample


# ---------------------------------------------------------------- the tests


def test_the_cases_cover_every_shipped_plugin_and_function() -> None:
    assert set(SHIPPED) >= {"kvm", "incus", "yipay", "bank_transfer", "webhook", "email", "demo_cloud",
                            "demo_upstream", "bank_memo", "log_notifier", "rustbill"}  # fmt: skip
    assert set(SHIPPED) == set(SETUPS), "every shipped plugin needs a setup in SETUPS"
    every = {fn for functions in FUNCTIONS_BY_TYPE.values() for fn in functions}
    assert every <= set(CHECKERS), f"contract functions without a checker here: {sorted(every - set(CHECKERS))}"
    missing = [f"{pid}.{fn}" for pid, fn in PAIRS if sample_for(pid, fn) is None]
    assert not missing, f"no sample arguments for {missing}: add them to DEFAULTS or OVERRIDES"


@pytest.mark.parametrize(("pid", "function"), PAIRS, ids=[f"{p}.{f}" for p, f in PAIRS])
async def test_result_honours_the_contract(pid: str, function: str, db_url: str, tmp_path: Path) -> None:
    sample = sample_for(pid, function)
    assert sample is not None, f"no sample arguments for {pid}.{function}"
    db = Database(db_url)
    await db.migrate()
    host = PluginHost(db, pid, call_timeout=30)
    try:
        async with SETUPS[pid](tmp_path) as (config, peer):
            bed = Bed(host, await host.interface(config), peer)
            if sample.error is not None:
                code, pattern = sample.error
                with pytest.raises(errors.RustBillError) as info:
                    await sample.run(bed)
                assert info.value.code.name == code, f"{info.value.code.name}: {info.value.message}"
                assert re.search(pattern, info.value.message), info.value.message
                return
            raw = await sample.run(bed)
            checked = CHECKERS[function](raw)  # raises ShapeError when the result breaks the contract
            if sample.expect is not None:
                outcome = sample.expect(checked, bed)
                assert outcome is None or outcome is True, f"{pid}.{function} returned {checked!r}"
    finally:
        await _close(host)
        await db.dispose()
