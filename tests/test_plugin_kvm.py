"""The built-in kvm plugin against libvirt's built-in test driver (no hypervisor needed): a copy of
tests/peers/libvirt_node.xml per test, opened as test:///<path>. Through the running server's RPCs and
by calling the plugin's functions directly.

The test driver keeps its state in the process that opened the URI: for the server tests that is the
server process, so what the server made is inspected through the plugin's own RPCs and admin actions.
Tests that need libvirt-python are skipped (with that reason) when it is not installed; the tests of
the plugin without libvirt run everywhere."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import (
    ROOT,
    SHIPPED_PLUGINS,
    ServerProcess,
    create_interface,
    free_port,
    lose_the_answer,
    md,
    query_db,
    raises_code,
    retry_while_reconciled,
    unique,
)

from rustbill import sdk
from rustbill.pb import integration_pb2 as pb
from rustbill.pb import order_pb2, product_pb2
from rustbill.plugins import load_plugin
from rustbill.sdk import virt

PLUGIN = SHIPPED_PLUGINS / "kvm.py"
NODE_XML = Path(__file__).resolve().parent / "peers" / "libvirt_node.xml"

try:
    import libvirt

    HAVE_LIBVIRT, WHY_NOT = True, ""
except ImportError as exc:  # pragma: no cover - CI has libvirt-python
    libvirt = None
    HAVE_LIBVIRT, WHY_NOT = False, f"libvirt-python is not installed ({exc})"

needs_libvirt = pytest.mark.skipif(not HAVE_LIBVIRT, reason=WHY_NOT or "libvirt-python is not installed")
GIB = 1024**3


# ---------------------------------------------------------------- peers and helpers


def node_uri(tmp_path: Path, *, auth: tuple[str, str] | None = None, name: str = "node.xml") -> str:
    """A host of the test's own: a copy of the node XML (fresh driver state per URI)."""
    text = NODE_XML.read_text()
    if auth is not None:
        user = f'<node>\n  <auth><user password="{auth[1]}">{auth[0]}</user></auth>'
        text = re.sub(r"^<node>", user, text, count=1, flags=re.MULTILINE)
    path = tmp_path / name
    path.write_text(text)
    return f"test://{path}"


class TcpPeer:
    """A TCP listener on 127.0.0.1 that is no libvirt daemon: it accepts and then says nothing
    ("hang"), closes every connection at once ("close"), or answers HTTP ("http")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.accepted: list[socket.socket] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    def start(self) -> TcpPeer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)
            if self.mode == "close":
                conn.close()
            elif self.mode == "http":
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.accepted:
            try:
                c.close()
            except OSError:
                pass
        self._sock.close()


@pytest.fixture
def hang_peer() -> Iterator[TcpPeer]:
    peer = TcpPeer("hang").start()
    yield peer
    peer.stop()


IMAGES = {
    "debian-12": {"volume": "debian-12.qcow2", "pool": "images", "label": "Debian 12"},
    "alpine-3.20": {"volume": "alpine-3.20.img", "mode": "clone"},
}


def config_for(uri: str, **extra: Any) -> dict[str, Any]:
    # The test driver offers hvm guests of domain type "test" on i686 (its capabilities).
    return {
        "uri": uri,
        "storage_pool": "default-pool",
        "network": "default",
        "domain_type": "test",
        "arch": "i686",
        "images": IMAGES,
        **extra,
    }


def db_uuid(server: ServerProcess, value: str) -> object:
    return uuid.UUID(value).hex if server.db_url.startswith("sqlite") else uuid.UUID(value)


def rows_of(server: ServerProcess, iface_id: str) -> list[tuple[Any, ...]]:
    return query_db(
        server.db_url,
        "SELECT provider_instance_id, status, ip_address FROM instances WHERE interface_id = :i ORDER BY created_at",
        i=db_uuid(server, iface_id),
    )


def spec(**kw: Any) -> order_pb2.ServerSpec:
    values = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 20, "bandwidth_mbps": 100, "os": "debian-12", **kw}
    return order_pb2.ServerSpec(**values)


def order(stub: Any, token: str, iface_id: str, server_spec: Any = None, key: str | None = None) -> Any:
    meta = md(token) + ([("idempotency-key", key)] if key else [])
    return stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=iface_id, server_spec=server_spec or spec()), metadata=meta, timeout=60
    )


def action(stub: Any, token: str, iface_id: str, function: str, **args: Any) -> Any:
    reply = stub.CallPluginAction(
        pb.CallPluginActionRequest(interface_id=iface_id, function=function, args_json=json.dumps(args)),
        metadata=md(token),
        timeout=30,
    )
    return json.loads(reply.result_json)


def status_of(stub: Any, token: str, iface_id: str, instance_id: str) -> Any:
    return stub.GetInstanceStatus(
        pb.InstanceStatusRequest(interface_id=iface_id, instance_id=instance_id), metadata=md(token), timeout=30
    )


def listed(stub: Any, token: str, iface_id: str) -> dict[str, Any]:
    items = stub.SyncUpstreamInstances(
        pb.SyncUpstreamInstancesRequest(interface_id=iface_id), metadata=md(token), timeout=30
    ).instances
    return {i.instance_id: i for i in items}


def health(stub: Any, token: str, iface_id: str) -> Any:
    return stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface_id), metadata=md(token), timeout=30)


def interface(stub: Any, token: str, config: dict[str, Any]) -> Any:
    return create_interface(stub, token, "kvm", json.dumps(config))


def direct_spec(request_id: str, **kw: Any) -> dict[str, Any]:
    return {
        "cpu_cores": 1,
        "memory_gb": 1,
        "disk_gb": 10,
        "bandwidth_mbps": 0,
        "region": "",
        "os": "",
        "extra_specs": {},
        "request_id": request_id,
        **kw,
    }


def expect(code: str, pattern: str, fn: Any, *args: Any) -> str:
    with pytest.raises(sdk.PluginError) as info:
        fn(*args)
    assert info.value.code == code, f"{info.value.code}: {info.value.message}"
    assert re.search(pattern, info.value.message), info.value.message
    return info.value.message


@pytest.fixture(scope="module")
def plugin_module() -> Any:
    return load_plugin(PLUGIN, PLUGIN.read_bytes(), "kvm").module


@pytest.fixture
def plugin(plugin_module: Any) -> Iterator[Any]:
    """The plugin loaded in this process; its cached libvirt connections are closed after the test."""
    yield plugin_module
    virt.close_all()


# ---------------------------------------------------------------- the whole lifecycle through the server


@needs_libvirt
def test_lifecycle_through_the_server(
    server: ServerProcess, stub: Any, admin_token: str, customer: str, customer_token: str, tmp_path: Path
) -> None:
    server.cli("balance", "credit", customer, "1000")  # a customer's orders are paid from their balance
    iface = interface(stub, admin_token, config_for(node_uri(tmp_path)))
    mark = server.log_mark()
    h = health(stub, admin_token, iface.id)
    assert h.is_healthy and not h.error
    # the health check reports the hypervisor and libvirt versions
    server.wait_for_log(
        r"health_check: libvirt at test:///\S+ \(TEST \d+\.\d+\.\d+, libvirt \d+\.\d+\.\d+\)", start=mark
    )

    reply = order(stub, customer_token, iface.id)
    name = reply.provider_instance_id
    assert re.fullmatch(r"rb-[0-9a-f-]{36}", name), name
    assert reply.status == "running" and reply.ip_address.startswith("192.168.122.")
    assert rows_of(server, iface.id) == [(name, "running", reply.ip_address)]
    (row_id,) = query_db(server.db_url, "SELECT id FROM instances WHERE provider_instance_id = :n", n=name)[
        0
    ]  # the host's request_id is the local row's id

    # the domain as libvirt holds it (in the server process): vCPUs, memory, root volume, network
    dom = action(stub, admin_token, iface.id, "admin_domain", name=name)
    assert (dom["status"], dom["vcpus"], dom["memory_mib"]) == ("running", 2, 4096)
    assert dom["persistent"] and dom["autostart"]
    assert uuid.UUID(str(row_id)) == uuid.UUID(dom["request_id"])
    assert dom["os"] == "debian-12" and dom["created_at"].endswith("Z")
    assert dom["disks"] == [
        {"device": "disk", "target": "vda", "pool": "default-pool", "volume": f"{name}.qcow2", "file": ""}
    ]
    (nic,) = dom["interfaces"]
    assert (nic["type"], nic["network"], nic["inbound_kbytes_per_s"]) == ("network", "default", "12500")
    vols = {v["name"]: v for v in action(stub, admin_token, iface.id, "admin_list_volumes")}
    assert vols[f"{name}.qcow2"]["capacity_bytes"] == 20 * GIB and vols[f"{name}.qcow2"]["format"] == "qcow2"

    st = status_of(stub, admin_token, iface.id, name)
    assert (st.status, st.ip_address) == ("running", reply.ip_address)
    items = listed(stub, admin_token, iface.id)
    assert items[name].status == "running" and items[name].created_at == dom["created_at"]
    assert items["test"].status == "running"  # domains made outside RustBill are listed too

    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(admin_token))
    assert page.title == "KVM (libvirt)"
    assert f"<td>{name}</td><td>running</td><td>2</td><td>4096 MiB</td>" in page.html_content
    assert "<td>test</td><td>running</td><td>2</td><td>2048 MiB</td>" in page.html_content
    assert "libvirt 9." in page.html_content or re.search(r"libvirt \d+\.\d+\.\d+", page.html_content)

    # admin actions by name
    assert action(stub, admin_token, iface.id, "admin_stop", name=name)["status"] == "stopped"
    assert status_of(stub, admin_token, iface.id, name).status == "stopped"
    listed(stub, admin_token, iface.id)  # the sync updates the local row
    assert rows_of(server, iface.id) == [(name, "stopped", "")]
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, f"domain '{name}' is not running"):
        action(stub, admin_token, iface.id, "admin_stop", name=name)
    assert action(stub, admin_token, iface.id, "admin_start", name=name)["status"] == "running"
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, f"domain '{name}' is already running"):
        action(stub, admin_token, iface.id, "admin_start", name=name)
    assert action(stub, admin_token, iface.id, "admin_reboot", name=name)["status"] == "running"
    assert action(stub, admin_token, iface.id, "admin_suspend", name=name)["status"] == "paused"
    assert status_of(stub, admin_token, iface.id, name).status == "paused"
    assert action(stub, admin_token, iface.id, "admin_resume", name=name)["status"] == "running"
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"is running; stop it first or pass \"force\": true"):
        action(stub, admin_token, iface.id, "admin_delete", name=name)
    assert action(stub, admin_token, iface.id, "admin_destroy", name=name)["status"] == "stopped"
    gone = action(stub, admin_token, iface.id, "admin_delete", name=name)
    assert gone["status"] == "deleted" and gone["deleted_volumes"] == [f"default-pool/{name}.qcow2"]
    assert f"{name}.qcow2" not in {v["name"] for v in action(stub, admin_token, iface.id, "admin_list_volumes")}
    with raises_code(grpc.StatusCode.NOT_FOUND, f"domain '{name}' does not exist at libvirt at test:///"):
        status_of(stub, admin_token, iface.id, name)
    with raises_code(grpc.StatusCode.NOT_FOUND, "does not exist"):
        action(stub, admin_token, iface.id, "admin_start", name=name)
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "not a valid libvirt domain name"):
        action(stub, admin_token, iface.id, "admin_start", name="../etc")


@needs_libvirt
def test_idempotency_key_retry_opens_one_domain(
    server: ServerProcess, stub: Any, admin_token: str, tmp_path: Path
) -> None:
    iface = interface(stub, admin_token, config_for(node_uri(tmp_path)))
    key = unique("order")
    a = order(stub, admin_token, iface.id, key=key)
    b = order(stub, admin_token, iface.id, key=key)
    assert a.provider_instance_id == b.provider_instance_id
    made = [d for d in action(stub, admin_token, iface.id, "admin_list_domains") if d["request_id"]]
    assert [d["name"] for d in made] == [a.provider_instance_id]
    assert len(rows_of(server, iface.id)) == 1


@needs_libvirt
def test_an_order_whose_answer_was_lost_is_settled_with_find_instance(
    server: ServerProcess, stub: Any, admin_token: str, tmp_path: Path
) -> None:
    """The host asks find_instance (the domain named after the request id) to settle an order whose
    create_instance answer never arrived, instead of opening anything again."""
    iface = interface(stub, admin_token, config_for(node_uri(tmp_path)))
    key = unique("order")
    first = order(stub, admin_token, iface.id, key=key)
    lose_the_answer(server.db_url, key)
    again = retry_while_reconciled(lambda: order(stub, admin_token, iface.id, key=key))
    assert again.provider_instance_id == first.provider_instance_id and again.status == "running"
    assert [r[:2] for r in rows_of(server, iface.id)] == [(first.provider_instance_id, "running")]
    server.wait_for_log(rf"settled \((retry|reconciler)\): provider \S+ has instance {first.provider_instance_id} ")
    made = [d["name"] for d in action(stub, admin_token, iface.id, "admin_list_domains") if d["request_id"]]
    assert made == [first.provider_instance_id]

    # the domain is gone meanwhile: find_instance says None, and the order is opened again (same
    # request id, by the retry) or released (by the reconciler, then the retry is a new order)
    action(stub, admin_token, iface.id, "admin_delete", name=first.provider_instance_id, force=True)
    lose_the_answer(server.db_url, key)
    third = retry_while_reconciled(lambda: order(stub, admin_token, iface.id, key=key))
    made = [d["name"] for d in action(stub, admin_token, iface.id, "admin_list_domains") if d["request_id"]]
    assert made == [third.provider_instance_id]
    assert [r[:2] for r in rows_of(server, iface.id)] == [(third.provider_instance_id, "running")]


@needs_libvirt
def test_status_mapping_and_import(server: ServerProcess, stub: Any, admin_token: str, tmp_path: Path) -> None:
    iface = interface(stub, admin_token, config_for(node_uri(tmp_path)))
    items = listed(stub, admin_token, iface.id)
    # one predefined domain per virDomainState
    assert {k: v.status for k, v in items.items() if k.startswith("st-")} == {
        "st-nostate": "unknown",
        "st-blocked": "running",
        "st-paused": "paused",
        "st-shutdown": "stopping",
        "st-shutoff": "stopped",
        "st-crashed": "crashed",
        "st-pmsuspended": "suspended",
    }
    assert all(not v.ip_address for k, v in items.items() if k.startswith("st-"))
    assert status_of(stub, admin_token, iface.id, "st-shutoff").status == "stopped"
    assert status_of(stub, admin_token, iface.id, "st-paused").status == "paused"

    # the predefined running domain `test`, made outside RustBill, is imported as a local instance
    imported = stub.ImportUpstreamInstance(
        pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="test"), metadata=md(admin_token)
    )
    assert uuid.UUID(imported.instance_id)
    assert (imported.status, imported.ip_address) == ("running", "192.168.122.3")
    assert query_db(
        server.db_url,
        "SELECT provider_instance_id, status, ip_address, origin FROM instances WHERE interface_id = :i",
        i=db_uuid(server, iface.id),
    ) == [("test", "running", "192.168.122.3", "imported")]
    with raises_code(grpc.StatusCode.ALREADY_EXISTS, "already imported"):
        stub.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="test"), metadata=md(admin_token)
        )
    with raises_code(grpc.StatusCode.NOT_FOUND, "domain 'ghost' does not exist"):
        stub.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="ghost"), metadata=md(admin_token)
        )
    # the domain's own data, through the admin action
    test_dom = action(stub, admin_token, iface.id, "admin_domain", name="test")
    assert (test_dom["vcpus"], test_dom["memory_mib"], test_dom["request_id"]) == (2, 2048, "")
    # a status change at the host reaches the local row with the next sync
    action(stub, admin_token, iface.id, "admin_destroy", name="test")
    listed(stub, admin_token, iface.id)
    assert rows_of(server, iface.id) == [("test", "stopped", "")]


# ---------------------------------------------------------------- prices and products (no libvirt needed)

PRICED = {
    "uri": "test:///default",
    "currency": "CNY",
    "price_base": "1.10",
    "price_per_core": "12.345",
    "price_per_gb_memory": "3.30",
    "price_per_gb_disk": "0.15",
    "price_per_mbps": "0.50",
    "billing_cycle": "quarterly",
    "billing_cycles": {"monthly": "1", "quarterly": "2.9", "yearly": "10"},
    "images": {
        "debian-12": {"volume": "debian-12.qcow2", "pool": "images", "price_extra": "2.50"},
        "alpine-3.20": {"volume": "alpine-3.20.img", "mode": "clone"},
    },
    "regions": {
        "hk": {"label": "Hong Kong", "price_multiplier": "1.2", "price_extra": "5.00", "network": "premium"},
        "bj": {"label": "Beijing"},
    },
    "plans": [
        {"id": "hk-small", "name": "HK small", "cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "region": "hk",
         "os": "alpine-3.20"},
        {"id": "bj-fixed", "name": "BJ fixed", "description": "fixed price", "cpu_cores": 2, "memory_gb": 4,
         "disk_gb": 40, "region": "bj", "price": "99.90"},
    ],
}  # fmt: skip


def test_query_price_is_exact(stub: Any, admin_token: str, customer_token: str) -> None:
    iface = interface(stub, admin_token, PRICED)

    def price(**kw: Any) -> Any:
        req = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 20, "bandwidth_mbps": 10, "os": "debian-12", **kw}
        return stub.QueryPrice(pb.QueryPriceRequest(interface_id=iface.id, **req), metadata=md(customer_token))

    # (1.10 + 2×12.345 + 4×3.30 + 20×0.15 + 10×0.50 + 2.50 image) = 49.49; ×1.2 + 5.00 = 64.388; ×2.9 = 186.7252
    reply = price(region="hk")
    assert (reply.amount, reply.currency, reply.billing_cycle) == ("186.73", "CNY", "quarterly")
    # Beijing: 49.49 × 2.9 = 143.521
    assert price(region="bj").amount == "143.52"
    # 1.10 + 12.345 + 3.30 + 1.50 = 18.245 × 2.9 = 52.9105 → half-up to cents
    assert price(region="bj", cpu_cores=1, memory_gb=1, disk_gb=10, bandwidth_mbps=0, os="alpine-3.20").amount == (
        "52.91"
    )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "region is required"):
        price()
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "os must be one of debian-12, alpine-3.20"):
        price(region="hk", os="windows")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "cpu_cores must be between 1 and 32"):
        price(region="hk", cpu_cores=33)
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "region must be one of hk, bj"):
        price(region="mars")


def test_sync_products_is_idempotent(server: ServerProcess, stub: Any, admin_token: str) -> None:
    iface = interface(stub, admin_token, PRICED)
    req = product_pb2.SyncProductsRequest(interface_id=iface.id)
    first = stub.SyncProducts(req, metadata=md(admin_token))
    assert (first.created, first.updated, first.deactivated, first.unchanged) == (2, 0, 0, 0)
    got = {p.upstream_product_id: p for p in first.products}
    small, fixed = got["hk-small"], got["bj-fixed"]
    # hk-small: 18.245 × 1.2 + 5.00 = 26.894 a month
    assert (small.price, small.currency, small.group_id) == ("77.99", "CNY", "hk")
    assert dict(small.billing_cycles) == {"monthly": "26.89", "quarterly": "77.99", "yearly": "268.94"}
    assert dict(small.specs) == {
        "cpu_cores": "1", "memory_gb": "1", "disk_gb": "10", "bandwidth_mbps": "0", "region": "hk", "os": "alpine-3.20",
    }  # fmt: skip
    assert fixed.price == "289.71" and fixed.description == "fixed price"
    assert dict(fixed.billing_cycles) == {"monthly": "99.90", "quarterly": "289.71", "yearly": "999.00"}
    assert dict(fixed.specs)["os"] == "debian-12"  # the default OS: the first image

    second = stub.SyncProducts(req, metadata=md(admin_token))
    assert (second.created, second.updated, second.deactivated, second.unchanged) == (0, 0, 0, 2)
    assert [p.updated_at for p in second.products] == [p.updated_at for p in first.products]
    count = query_db(
        server.db_url, "SELECT count(*) FROM products WHERE interface_id = :i", i=db_uuid(server, iface.id)
    )
    assert count == [(2,)]

    # a plan that does not fit the limits is refused, and nothing is written
    bad = {**PRICED, "plans": [*PRICED["plans"], {"id": "huge", "name": "Huge", "cpu_cores": 64, "memory_gb": 1,
                                                   "disk_gb": 10, "region": "hk"}]}  # fmt: skip
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json=json.dumps(bad)), metadata=md(admin_token)
    )
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "plan 'huge' does not fit this provider: cpu_cores"):
        stub.SyncProducts(req, metadata=md(admin_token))
    assert query_db(
        server.db_url, "SELECT count(*) FROM products WHERE interface_id = :i", i=db_uuid(server, iface.id)
    ) == [(2,)]


def test_prices_and_template_directly(plugin: Any) -> None:
    amount = plugin.query_price(PRICED, direct_spec("x", cpu_cores=2, memory_gb=4, disk_gb=20, bandwidth_mbps=10,
                                                    os="debian-12", region="hk"))["amount"]  # fmt: skip
    assert str(amount) == "186.73" and type(amount).__name__ == "Decimal"
    tpl = plugin.spec_template(PRICED)
    fields = {f["key"]: f for f in tpl["fields"]}
    assert fields["os"]["options"] == ["debian-12", "alpine-3.20"] and fields["region"]["required"]
    assert (fields["cpu_cores"]["max"], fields["disk_gb"]["min"], fields["disk_gb"]["max"]) == (32, 5, 2000)
    assert {k: f["field_type"] for k, f in fields.items()} == {
        "cpu_cores": "Integer", "memory_gb": "Integer", "disk_gb": "Integer", "bandwidth_mbps": "Integer",
        "os": "OsOptions", "region": "Region",
    }  # fmt: skip
    # no images: no OS choice, and an order naming one is refused
    tpl = plugin.spec_template({"uri": "test:///default", "images": {}})
    assert "os" not in {f["key"] for f in tpl["fields"]} and "region" not in {f["key"] for f in tpl["fields"]}
    expect("INVALID_ARGUMENT", "no OS images", plugin.query_price, {"uri": "x:///"}, direct_spec("x", os="debian"))
    expect("INVALID_ARGUMENT", "must be a decimal string, not a float", plugin.query_price,
           {"uri": "x:///", "price_per_core": 1.5}, direct_spec("x"))  # fmt: skip
    expect("FAILED_PRECONDITION", "billing_cycle 'weekly' is not one of billing_cycles", plugin.query_price,
           {"uri": "x:///", "billing_cycle": "weekly"}, direct_spec("x"))  # fmt: skip
    expect("UNIMPLEMENTED", "no upstream balance", plugin.get_upstream_balance, {"uri": "x:///"})


def test_config_schema_is_described(plugin: Any) -> None:
    schema = plugin.config_schema()

    def walk(props: dict[str, Any], where: str) -> None:
        for key, sub in props.items():
            assert sub.get("title") and sub.get("description"), f"{where}{key} lacks a title or description"
            for nested in (sub.get("properties"), (sub.get("additionalProperties") or {}).get("properties")):
                if isinstance(nested, dict):
                    walk(nested, f"{where}{key}.")
            items = sub.get("items") or {}
            if isinstance(items.get("properties"), dict):
                walk(items["properties"], f"{where}{key}[].")

    walk(schema["properties"], "")
    assert schema["properties"]["password"]["format"] == "password"
    assert schema["required"] == ["uri"]


# ---------------------------------------------------------------- failures through the server


@needs_libvirt
def test_health_check_says_what_is_wrong(
    server: ServerProcess, stub: Any, admin_token: str, tmp_path: Path, hang_peer: TcpPeer
) -> None:
    def error_of(config: dict[str, Any]) -> str:
        h = health(stub, admin_token, interface(stub, admin_token, config).id)
        assert not h.is_healthy
        return h.error

    port = free_port()  # nothing listens there
    assert re.search(
        rf"cannot reach libvirt at qemu\+tcp://127\.0\.0\.1:{port}/system: unable to connect to server at "
        rf"'127\.0\.0\.1:{port}': Connection refused",
        error_of({"uri": f"qemu+tcp://127.0.0.1:{port}/system"}),
    )
    assert re.search(
        r"cannot open libvirt at test:///nonexistent/node\.xml: XML error: failed to parse xml document",
        error_of({"uri": "test:///nonexistent/node.xml"}),
    )
    # a daemon port that accepts and never answers: bounded by connect_timeout_seconds
    start = time.monotonic()
    assert re.search(
        rf"libvirt at {re.escape(hang_peer.uri)} did not complete the connection within 1s",
        error_of({"uri": hang_peer.uri, "connect_timeout_seconds": 1}),
    )
    assert time.monotonic() - start < 10
    # ... and by the host's health_check timeout (2 s on the shared server) when that is shorter
    assert re.search(
        r"health_check did not finish within 2s", error_of({"uri": hang_peer.uri, "connect_timeout_seconds": 30})
    )

    # credentials (the test driver's <auth>)
    auth_uri = node_uri(tmp_path, auth=("rustbill", "s3cret-pass"), name="auth.xml")
    assert "asks for a username and a password but the interface has none" in error_of(config_for(auth_uri))
    wrong = error_of(config_for(auth_uri, username="rustbill", password="wrong-password-123"))
    assert re.search(r"refused the connection \(user 'rustbill'\): authentication failed", wrong)
    assert "wrong-password-123" not in wrong and "wrong-password-123" not in server.log
    good = interface(stub, admin_token, config_for(auth_uri, username="rustbill", password="s3cret-pass"))
    assert health(stub, admin_token, good.id).is_healthy

    # what the interface needs at the host
    uri = node_uri(tmp_path)
    msg = error_of(
        config_for(
            uri,
            storage_pool="ssd",
            network="lan",
            images={"debian-12": {"volume": "debian-13.qcow2", "pool": "images"}},
            regions={"hk": {"network": "premium"}, "sh": {"network": "cn2"}},
        )
    )
    assert "storage pool 'ssd' does not exist (pools: default-pool, images)" in msg
    assert "image volume 'debian-13.qcow2' of os 'debian-12' does not exist in pool 'images'" in msg
    assert "network 'lan' does not exist (networks: default, premium)" in msg
    assert "network 'cn2' does not exist" in msg and "'premium'" not in msg.split("networks:")[0]
    msg = error_of(config_for(uri, domain_type="kvm", arch="x86_64"))
    assert re.search(
        r"\(TEST \d+\.\d+\.\d+, libvirt \d+\.\d+\.\d+\): the host cannot run kvm guests for x86_64 "
        r"\(it offers: test/i686\); check domain_type and arch — is /dev/kvm available\?",
        msg,
    )


@needs_libvirt
def test_unreachable_host_records_nothing(
    server: ServerProcess, stub: Any, admin_token: str, hang_peer: TcpPeer
) -> None:
    closed = interface(stub, admin_token, config_for(f"qemu+tcp://127.0.0.1:{free_port()}/system"))
    with raises_code(grpc.StatusCode.UNAVAILABLE, r"cannot reach libvirt at qemu\+tcp://.*Connection refused"):
        order(stub, admin_token, closed.id)
    assert rows_of(server, closed.id) == []
    with raises_code(grpc.StatusCode.UNAVAILABLE, "cannot reach libvirt"):
        listed(stub, admin_token, closed.id)
    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=closed.id), metadata=md(admin_token))
    assert "Cannot reach libvirt:" in page.html_content and "Connection refused" in page.html_content

    slow = interface(stub, admin_token, config_for(hang_peer.uri, connect_timeout_seconds=1))
    with raises_code(grpc.StatusCode.UNAVAILABLE, r"did not complete the connection within 1s"):
        order(stub, admin_token, slow.id)
    assert rows_of(server, slow.id) == []

    for mode, pattern in (("close", r"cannot reach libvirt at .*(reset|closed|End of file|error event on socket)"),
                          ("http", r"cannot reach libvirt at .*does not speak the libvirt RPC protocol")):  # fmt: skip
        peer = TcpPeer(mode).start()
        try:
            iface = interface(stub, admin_token, config_for(peer.uri, connect_timeout_seconds=5))
            with raises_code(grpc.StatusCode.UNAVAILABLE, pattern):
                order(stub, admin_token, iface.id)
            assert rows_of(server, iface.id) == []
        finally:
            peer.stop()


@needs_libvirt
def test_failed_create_records_and_leaves_nothing(
    server: ServerProcess, stub: Any, admin_token: str, tmp_path: Path
) -> None:
    uri = node_uri(tmp_path)
    # libvirt refuses the definition after the root volume was made: the volume is removed again
    bad_arch = interface(stub, admin_token, config_for(uri, arch="armv99"))
    with raises_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        r"defining domain 'rb-.*': libvirt refused it as invalid: .*Unknown architecture armv99",
    ):
        order(stub, admin_token, bad_arch.id)
    assert rows_of(server, bad_arch.id) == []
    assert [v["name"] for v in action(stub, admin_token, bad_arch.id, "admin_list_volumes")] == ["alpine-3.20.img"]
    assert not [d for d in action(stub, admin_token, bad_arch.id, "admin_list_domains") if d["request_id"]]

    # the image volume is missing: nothing is made
    no_image = interface(
        stub, admin_token, config_for(uri, images={"debian-12": {"volume": "gone.qcow2", "pool": "images"}})
    )
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "image volume 'gone.qcow2' of os 'debian-12' does not exist"):
        order(stub, admin_token, no_image.id)
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "storage pool 'ssd' does not exist"):
        order(stub, admin_token, interface(stub, admin_token, config_for(uri, storage_pool="ssd")).id)
    # the disk is smaller than the image
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"disk_gb 1 is smaller than the debian-12 image \(2 GiB\)"):
        order(stub, admin_token, interface(stub, admin_token, config_for(uri, min_disk_gb=1)).id, spec(disk_gb=1))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "os must be one of debian-12; got 'windows'"):
        order(stub, admin_token, no_image.id, spec(os="windows"))
    assert rows_of(server, no_image.id) == []
    assert [v["name"] for v in action(stub, admin_token, no_image.id, "admin_list_volumes")] == ["alpine-3.20.img"]


# ---------------------------------------------------------------- without libvirt-python

_NO_LIBVIRT = r"""
import json, sys
sys.modules["libvirt"] = None  # `import libvirt` now raises ImportError, as on a server without it
from pathlib import Path
from rustbill import sdk
from rustbill.plugins import load_plugin

path = Path(sys.argv[1])
m = load_plugin(path, path.read_bytes(), "kvm").module
cfg = {"uri": "test:///default"}
spec = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 20, "bandwidth_mbps": 0, "region": "", "os": "",
        "extra_specs": {}, "request_id": "r-1"}
out = {}
calls = [("health_check", (cfg,)), ("create_instance", (cfg, spec)), ("get_instance_status", (cfg, "test")),
         ("sync_upstream_instances", (cfg,)), ("admin_start", ({**cfg, "name": "test"},))]
for name, args in calls:
    try:
        getattr(m, name)(*args)
        out[name] = "ok"
    except sdk.PluginError as exc:
        out[name] = [exc.code, exc.message]
out["query_price"] = str(m.query_price(cfg, spec)["amount"])
out["admin_page"] = m.admin_page(cfg)["html"]
print(json.dumps(out))
"""


def test_without_libvirt_the_plugin_loads_and_says_so() -> None:
    res = subprocess.run(
        [sys.executable, "-c", _NO_LIBVIRT, str(PLUGIN)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name in ("health_check", "create_instance", "get_instance_status", "sync_upstream_instances", "admin_start"):
        code, message = out[name]
        assert code == "FAILED_PRECONDITION", (name, out[name])
        assert message.startswith("libvirt-python is not installed in the RustBill server's Python environment")
        assert "pip install libvirt-python" in message
    assert out["query_price"] == "44.00"  # 2×10 + 4×5 + 20×0.20: prices need no libvirt
    assert "libvirt-python is not installed" in out["admin_page"]


def test_server_without_libvirt(fresh_server: ServerProcess, tmp_path: Path) -> None:
    shim = tmp_path / "no-libvirt"
    shim.mkdir()
    (shim / "libvirt.py").write_text("raise ImportError(\"No module named 'libvirtmod' (test shim)\")\n")
    fresh_server.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    fresh_server.add_plugin(PLUGIN)
    fresh_server.start()
    stub, token = fresh_server.stub(), fresh_server.token()
    iface = create_interface(stub, token, "kvm", json.dumps({"uri": "qemu:///system"}))
    h = health(stub, token, iface.id)
    assert not h.is_healthy
    assert "libvirt-python is not installed" in h.error and "test shim" in h.error
    assert stub.QueryPrice(
        pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=1, memory_gb=1, disk_gb=10), metadata=md(token)
    ).amount == "17.00"  # fmt: skip
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "libvirt-python is not installed"):
        order(stub, token, iface.id, spec(os=""))
    assert rows_of(fresh_server, iface.id) == []


# ---------------------------------------------------------------- direct calls


@needs_libvirt
def test_direct_create_is_idempotent_per_request_id(plugin: Any, tmp_path: Path) -> None:
    cfg = config_for(node_uri(tmp_path))
    first = plugin.create_instance(cfg, direct_spec("order-1", cpu_cores=2, memory_gb=3, os="debian-12"))
    again = plugin.create_instance(cfg, direct_spec("order-1", cpu_cores=2, memory_gb=3, os="debian-12"))
    assert first == again and first["instance_id"] == "rb-order-1" and first["status"] == "running"
    ours = [d for d in plugin.admin_list_domains(cfg) if d["request_id"] == "order-1"]
    assert len(ours) == 1 and (ours[0]["vcpus"], ours[0]["memory_mib"]) == (2, 3072)
    vols = [v["name"] for v in plugin.admin_list_volumes(cfg)]
    assert vols.count("rb-order-1.qcow2") == 1

    # a first attempt that defined the domain but never started it: the retry starts the same domain
    plugin.create_instance({**cfg, "start_on_create": False}, direct_spec("order-2"))
    assert plugin.get_instance_status(cfg, "rb-order-2")["status"] == "stopped"
    assert plugin.create_instance(cfg, direct_spec("order-2"))["status"] == "running"
    assert [d["name"] for d in plugin.admin_list_domains(cfg) if d["request_id"] == "order-2"] == ["rb-order-2"]

    # the name is taken by a domain made for something else
    plugin._connect(cfg).conn.defineXML(
        "<domain type='test'><name>rb-order-3</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os></domain>"
    )
    expect("ALREADY_EXISTS", r"domain 'rb-order-3' already exists .* not made by RustBill", plugin.create_instance,
           cfg, direct_spec("order-3"))  # fmt: skip

    # concurrent attempts of the same order make one domain
    results: list[Any] = []

    def attempt() -> None:
        results.append(plugin.create_instance(cfg, direct_spec("order-4", os="alpine-3.20")))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and {r["instance_id"] for r in results} == {"rb-order-4"}
    assert len([d for d in plugin.admin_list_domains(cfg) if d["request_id"] == "order-4"]) == 1


@needs_libvirt
def test_direct_find_instance(plugin: Any, tmp_path: Path) -> None:
    cfg = config_for(node_uri(tmp_path))
    conn = plugin._connect(cfg).conn
    assert plugin.find_instance(cfg, "never-made") is None
    made = plugin.create_instance(cfg, direct_spec("found-1", os="debian-12"))
    assert plugin.find_instance(cfg, "found-1") == made

    # renamed since: found by its UUID
    dom = conn.lookupByName("rb-found-1")
    dom.destroy()
    dom.rename("renamed-1", 0)
    got = plugin.find_instance(cfg, "found-1")
    assert (got["instance_id"], got["status"]) == ("renamed-1", "stopped")

    # defined, but the attempt ended before the start: found as it is (stopped)
    plugin.create_instance({**cfg, "start_on_create": False}, direct_spec("found-2"))
    assert plugin.find_instance(cfg, "found-2")["status"] == "stopped"

    # a domain of that name made for something else is not this order's; its volume stays
    pool = conn.storagePoolLookupByName("default-pool")
    pool.createXML(plugin._vol_xml("rb-other.qcow2", 1 * GIB, "qcow2"), 0)
    conn.defineXML(
        "<domain type='test'><name>rb-other</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os></domain>"
    )
    assert plugin.find_instance(cfg, "other") is None
    assert "rb-other.qcow2" in pool.listVolumes()

    # an attempt that died after making the root volume, before defining the domain: nothing to
    # record, and the volume goes (the order is given up, nothing else would ever use it)
    pool.createXML(plugin._vol_xml("rb-half.qcow2", 10 * GIB, "qcow2"), 0)
    assert plugin.find_instance(cfg, "half") is None
    assert "rb-half.qcow2" not in pool.listVolumes()

    expect("INVALID_ARGUMENT", "request_id", plugin.find_instance, cfg, "")


@needs_libvirt
def test_direct_disks_networks_and_regions(plugin: Any, tmp_path: Path) -> None:
    cfg = config_for(node_uri(tmp_path), regions=PRICED["regions"], vnc=False)
    made = plugin.create_instance(cfg, direct_spec("r-hk", os="alpine-3.20", region="hk", disk_gb=8,
                                                   bandwidth_mbps=8))  # fmt: skip
    dom = plugin.admin_domain({**cfg, "name": made["instance_id"]})
    assert dom["interfaces"][0]["network"] == "premium" and dom["interfaces"][0]["inbound_kbytes_per_s"] == "1000"
    assert (dom["region"], dom["os"]) == ("hk", "alpine-3.20")
    vol = {v["name"]: v for v in plugin.admin_list_volumes(cfg)}["rb-r-hk.qcow2"]
    assert vol["capacity_bytes"] == 8 * GIB  # cloned from alpine-3.20.img and sized from disk_gb

    # a blank root volume (no images) in raw format, on a host bridge instead of a network
    blank = config_for(cfg["uri"], images={}, volume_format="raw", bridge="br0")
    made = plugin.create_instance(blank, direct_spec("r-blank", disk_gb=6))
    dom = plugin.admin_domain({**blank, "name": made["instance_id"]})
    assert dom["disks"][0]["volume"] == "rb-r-blank.img"
    assert (dom["interfaces"][0]["type"], dom["interfaces"][0]["bridge"]) == ("bridge", "br0")
    vol = {v["name"]: v for v in plugin.admin_list_volumes(blank)}["rb-r-blank.img"]
    assert (vol["capacity_bytes"], vol["format"]) == (6 * GIB, "raw")

    # the overlay on the image in another pool
    made = plugin.create_instance(cfg, direct_spec("r-deb", os="debian-12", region="bj"))
    xml = (
        plugin._connect(cfg)
        .conn.storagePoolLookupByName("default-pool")
        .storageVolLookupByName("rb-r-deb.qcow2")
        .XMLDesc(0)
    )
    assert "<path>/var/lib/libvirt/images/debian-12.qcow2</path>" in xml
    assert plugin.admin_domain({**cfg, "name": "rb-r-deb"})["interfaces"][0]["network"] == "default"


@needs_libvirt
def test_direct_start_failure_removes_what_was_made(
    plugin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_for(node_uri(tmp_path))

    def refuse(self: Any, *args: Any) -> int:
        libvirt.virResetLastError()
        raise libvirt.libvirtError("internal error: qemu unexpectedly closed the monitor (injected)")

    monkeypatch.setattr(libvirt.virDomain, "create", refuse)
    pattern = r"starting domain 'rb-boom'.*injected.*; the domain and its volume were removed"
    msg = expect("FAILED_PRECONDITION", pattern, plugin.create_instance, cfg, direct_spec("boom", os="debian-12"))
    assert "rb-boom" not in {d["name"] for d in plugin.admin_list_domains(cfg)}, msg
    assert "rb-boom.qcow2" not in {v["name"] for v in plugin.admin_list_volumes(cfg)}


@needs_libvirt
def test_direct_define_failure_removes_the_orders_volume(plugin: Any, tmp_path: Path) -> None:
    cfg = config_for(node_uri(tmp_path), images={})
    # an earlier attempt of this order made the volume and ended before defining the domain
    pool = plugin._connect(cfg).conn.storagePoolLookupByName("default-pool")
    pool.createXML(plugin._vol_xml("rb-again.qcow2", 10 * GIB, "qcow2"), 0)
    expect("INVALID_ARGUMENT", "Unknown architecture", plugin.create_instance, {**cfg, "arch": "armv99"},
           direct_spec("again"))  # fmt: skip
    assert "rb-again.qcow2" not in pool.listVolumes()
    # the retry that works uses the order's volume
    pool.createXML(plugin._vol_xml("rb-again.qcow2", 10 * GIB, "qcow2"), 0)
    plugin.create_instance(cfg, direct_spec("again"))
    assert pool.listVolumes().count("rb-again.qcow2") == 1
    assert plugin.admin_domain({**cfg, "name": "rb-again"})["disks"][0]["volume"] == "rb-again.qcow2"


@needs_libvirt
def test_direct_connection_lost_mid_create_is_an_unknown_outcome(plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # test:///default: one state per process, kept across connections (like a real host)
    cfg = config_for("test:///default", images={})
    request_id = unique("lost")
    real = libvirt.virConnect.defineXML

    def lost(self: Any, xml: str) -> Any:
        real(self, xml)  # the host did it, but the answer never arrives
        self.close()
        libvirt.virResetLastError()
        raise libvirt.libvirtError("Cannot recv data: Connection reset by peer (injected)")

    monkeypatch.setattr(libvirt.virConnect, "defineXML", lost)
    expect("DEADLINE_EXCEEDED", r"defining domain 'rb-lost-[0-9a-f]+': the connection to libvirt at test:///default "
           r"was lost .*whether the change took effect is unknown", plugin.create_instance, cfg,
           direct_spec(request_id))  # fmt: skip
    monkeypatch.setattr(libvirt.virConnect, "defineXML", real)
    # the host settling the order asks find_instance: the domain was made (not started yet)
    found = plugin.find_instance(cfg, request_id)
    assert (found["instance_id"], found["status"]) == (f"rb-{request_id}", "stopped")
    # the retry (same request id) reconnects, finds the domain and its volume, and starts it
    made = plugin.create_instance(cfg, direct_spec(request_id))
    assert made["instance_id"] == f"rb-{request_id}" and made["status"] == "running"
    assert [d["name"] for d in plugin.admin_list_domains(cfg) if d["request_id"] == request_id] == [f"rb-{request_id}"]
    assert plugin.admin_delete({**cfg, "name": f"rb-{request_id}", "force": True})["deleted_volumes"] == [
        f"default-pool/rb-{request_id}.qcow2"
    ]


@needs_libvirt
def test_direct_errors_map_to_clear_statuses(plugin: Any, tmp_path: Path) -> None:
    cfg = config_for(node_uri(tmp_path))
    expect("NOT_FOUND", r"domain 'nope' does not exist at libvirt at test:///", plugin.get_instance_status, cfg, "nope")
    expect("INVALID_ARGUMENT", "not a valid libvirt domain name", plugin.get_instance_status, cfg, "a/b")
    expect("INVALID_ARGUMENT", "spec\\['request_id'\\]", plugin.create_instance, cfg, direct_spec(""))
    expect("INVALID_ARGUMENT", "cpu_cores must be between 1 and 4", plugin.create_instance,
           {**cfg, "max_cpu_cores": 4}, direct_spec("x", cpu_cores=5))  # fmt: skip
    expect("INVALID_ARGUMENT", "this provider offers no region choice", plugin.create_instance, cfg,
           direct_spec("x", region="hk"))  # fmt: skip
    expect("INVALID_ARGUMENT", "uri is required", plugin.health_check, {})
    expect("INVALID_ARGUMENT", "is not a libvirt connection URI", plugin.health_check, {"uri": "not a uri"})
    expect("FAILED_PRECONDITION", "supply a path or use test:///default", plugin.health_check, {"uri": "test:///"})
    expect("FAILED_PRECONDITION", "domain 'st-shutoff' is not running", plugin.admin_stop,
           {**cfg, "name": "st-shutoff"})  # fmt: skip
    assert plugin.admin_page({"uri": "test:///nonexistent.xml"})["html"].count("Cannot reach libvirt") == 1


@needs_libvirt
def test_direct_health_and_credentials(plugin: Any, tmp_path: Path) -> None:
    ok = plugin.health_check(config_for(node_uri(tmp_path)))
    assert ok["healthy"] is True and ok["driver"] == "TEST"
    assert re.fullmatch(r"\d+\.\d+\.\d+", ok["libvirt_version"]) and ok["host_cpus"] == 8
    assert plugin.admin_server_info(config_for(node_uri(tmp_path)))["hostname"] == ok["hostname"]

    uri = node_uri(tmp_path, auth=("rustbill", "s3cret-pass"), name="auth.xml")
    expect("FAILED_PRECONDITION", "asks for a password but the interface has none", plugin.health_check,
           config_for(uri, username="rustbill"))  # fmt: skip
    msg = expect("PERMISSION_DENIED", r"refused the connection \(user 'rustbill'\)", plugin.health_check,
                 config_for(uri, username="rustbill", password="nope-nope"))  # fmt: skip
    assert "nope-nope" not in msg
    assert plugin.health_check(config_for(uri, username="rustbill", password="s3cret-pass"))["healthy"]


@needs_libvirt
def test_direct_connection_cache(plugin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = libvirt.openAuth

    def counting(uri: str, *args: Any) -> Any:
        opened.append(uri)
        return real(uri, *args)

    monkeypatch.setattr(libvirt, "openAuth", counting)
    cfg = config_for(node_uri(tmp_path))
    errors: list[BaseException] = []

    def status() -> None:
        try:
            assert plugin.get_instance_status(cfg, "test")["status"] == "running"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=status) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and opened == [cfg["uri"]]  # one connection for concurrent callers

    # state lives in the cached connection: what was made is found by the next call
    plugin.create_instance(cfg, direct_spec("cached"))
    assert plugin.get_instance_status(cfg, "rb-cached")["status"] == "running"
    assert len(opened) == 1
    # a dead connection is reopened (the test driver's file URI then starts from the file again)
    plugin._connect(cfg).conn.close()
    assert plugin.get_instance_status(cfg, "test")["status"] == "running"
    assert len(opened) == 2
    expect("NOT_FOUND", "rb-cached", plugin.get_instance_status, cfg, "rb-cached")


@needs_libvirt
def test_direct_unreachable_hosts(plugin: Any, hang_peer: TcpPeer) -> None:
    start = time.monotonic()
    cfg = {"uri": hang_peer.uri, "connect_timeout_seconds": 1}
    expect("UNAVAILABLE", "did not complete the connection within 1s", plugin.health_check, cfg)
    # a second caller waits for the same open instead of starting another
    expect("UNAVAILABLE", "did not complete the connection within 1s", plugin.sync_upstream_instances, cfg)
    assert time.monotonic() - start < 15
    assert len(hang_peer.accepted) == 1
    expect("UNAVAILABLE", r"Connection refused \(is libvirtd/virtproxyd listening there", plugin.health_check,
           {"uri": f"qemu+tcp://127.0.0.1:{free_port()}/system"})  # fmt: skip
    peer = TcpPeer("http").start()
    try:
        expect("UNAVAILABLE", "does not speak the libvirt RPC protocol", plugin.health_check,
               {"uri": peer.uri, "connect_timeout_seconds": 5})  # fmt: skip
    finally:
        peer.stop()


def test_plugin_file_is_in_the_shared_server(stub: Any, admin_token: str) -> None:
    plugins = {p.plugin_id: p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(admin_token)).plugins}
    assert plugins["kvm"].version == "1.1.0" and plugins["kvm"].has_admin_page
