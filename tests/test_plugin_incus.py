"""The built-in incus plugin against a local Incus REST API server (tests/peers/incus_server.py):
HTTPS with TLS 1.3 and a client certificate, or a unix socket. Through the running server's RPCs and
by calling the plugin's functions directly."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from helpers import (
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
from peers.incus_server import IncusServer

from rustbill.pb import integration_pb2 as pb
from rustbill.pb import order_pb2, product_pb2
from rustbill.plugins import load_plugin

PLUGIN = SHIPPED_PLUGINS / "incus.py"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def incus() -> Iterator[IncusServer]:
    srv = IncusServer(op_delay=0.2).start()
    yield srv
    srv.stop()


@pytest.fixture
def sock_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="incus-", dir="/tmp")  # AF_UNIX paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def plugin_module() -> Any:
    return load_plugin(PLUGIN, PLUGIN.read_bytes(), "incus").module


@pytest.fixture
async def plugin(plugin_module: Any) -> Any:
    """The plugin loaded in this process, its HTTP clients closed after the test."""
    yield plugin_module
    await plugin_module._aclose_all()


def config_for(srv: IncusServer, **extra: Any) -> dict[str, Any]:
    cc = srv.client_cert()
    return {
        "url": srv.url,
        "client_cert": cc.cert_pem,
        "client_key": cc.key_pem,
        "server_cert": srv.server_cert_pem,
        **extra,
    }


def foreign_fp(leaf: Any) -> str:
    from peers.incus_server import fingerprint

    return fingerprint(leaf.cert_chain_pems[0].bytes().decode())


def db_uuid(server: ServerProcess, value: str) -> object:
    return uuid.UUID(value).hex if server.db_url.startswith("sqlite") else uuid.UUID(value)


def rows_of(server: ServerProcess, iface_id: str) -> list[tuple[Any, ...]]:
    return query_db(
        server.db_url,
        "SELECT provider_instance_id, status, ip_address FROM instances WHERE interface_id = :i",
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


def health(stub: Any, token: str, iface_id: str) -> Any:
    return stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface_id), metadata=md(token), timeout=30)


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


async def expect_error(code: str, pattern: str, coro: Any) -> str:
    import re

    from rustbill import sdk

    with pytest.raises(sdk.PluginError) as info:
        await coro
    assert info.value.code == code, f"{info.value.code}: {info.value.message}"
    assert re.search(pattern, info.value.message), info.value.message
    return info.value.message


# ---------------------------------------------------------------- the whole lifecycle through the server


def test_lifecycle_through_the_server(
    server: ServerProcess, stub: Any, admin_token: str, customer: str, customer_token: str, incus: IncusServer
) -> None:
    server.cli("balance", "credit", customer, "1000")  # a customer's orders are paid from their balance
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus, price_per_mbps="0.50")))
    assert health(stub, admin_token, iface.id).is_healthy

    reply = order(stub, customer_token, iface.id)
    name = reply.provider_instance_id
    assert name.startswith("rb-") and reply.status == "running" and reply.ip_address.startswith("10.158.0.")
    assert rows_of(server, iface.id) == [(name, "running", reply.ip_address)]

    # what Incus received: the documented InstancesPost, limits from the spec
    (post,) = incus.received("POST", "/1.0/instances")
    assert post.query == {"project": "default"}
    body = post.body
    assert body["name"] == name and body["type"] == "container" and body["start"] is True
    assert body["source"] == {
        "type": "image",
        "alias": "debian/12",
        "server": "https://images.linuxcontainers.org",
        "protocol": "simplestreams",
    }
    assert body["config"]["limits.cpu"] == "2" and body["config"]["limits.memory"] == "4GiB"
    assert body["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default", "size": "20GiB"}
    assert body["devices"]["eth0"]["limits.ingress"] == "100Mbit" == body["devices"]["eth0"]["limits.egress"]
    assert body["profiles"] == ["default"]
    # the operation was waited for through the documented long-poll endpoint
    assert any(r.path.endswith("/wait") and r.query.get("timeout") for r in incus.received("GET"))
    inst = incus.instance(name)
    assert inst is not None and inst.status == "Running" and inst.config["limits.memory"] == "4GiB"

    st = status_of(stub, admin_token, iface.id, name)
    assert (st.status, st.ip_address) == ("running", reply.ip_address)
    listed = stub.SyncUpstreamInstances(
        pb.SyncUpstreamInstancesRequest(interface_id=iface.id), metadata=md(admin_token)
    ).instances
    assert [(i.instance_id, i.status, i.ip_address) for i in listed] == [(name, "running", reply.ip_address)]
    assert listed[0].created_at.endswith("Z")
    assert any(r.query.get("recursion") == "2" for r in incus.received("GET", "/1.0/instances"))

    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(admin_token))
    assert name in page.html_content and "6.0.4" in page.html_content and page.title == "Incus"

    assert action(stub, admin_token, iface.id, "admin_stop", name=name)["status"] == "stopped"
    assert status_of(stub, admin_token, iface.id, name).status == "stopped"
    assert incus.received("PUT", f"/1.0/instances/{name}/state")[-1].body["action"] == "stop"
    assert action(stub, admin_token, iface.id, "admin_start", name=name)["status"] == "running"
    assert action(stub, admin_token, iface.id, "admin_restart", name=name)["status"] == "running"
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "instance already running|already running"):
        action(stub, admin_token, iface.id, "admin_start", name=name)
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"is running; stop it first or pass \"force\": true"):
        action(stub, admin_token, iface.id, "admin_delete", name=name)
    assert action(stub, admin_token, iface.id, "admin_delete", name=name, force=True)["status"] == "deleted"
    assert incus.instance(name) is None
    assert incus.received("DELETE", f"/1.0/instances/{name}")
    with raises_code(grpc.StatusCode.NOT_FOUND, f"instance '{name}' does not exist in Incus project 'default'"):
        status_of(stub, admin_token, iface.id, name)
    with raises_code(grpc.StatusCode.NOT_FOUND, "Instance not found"):
        action(stub, admin_token, iface.id, "admin_stop", name=name)
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "not a valid Incus instance name"):
        action(stub, admin_token, iface.id, "admin_stop", name="../1.0")


def test_idempotency_key_retry_opens_one_instance(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus)))
    key = unique("order")
    a = order(stub, admin_token, iface.id, key=key)
    b = order(stub, admin_token, iface.id, key=key)
    assert a.provider_instance_id == b.provider_instance_id
    assert len(incus.received("POST", "/1.0/instances")) == 1
    assert len(rows_of(server, iface.id)) == 1


def test_an_order_whose_answer_was_lost_is_settled_with_find_instance(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    """The host asks find_instance (the instance named after the request id) to settle an order whose
    create_instance answer never arrived; a create Incus is still running is waited for, never taken
    for "nothing there"."""
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus, operation_timeout_seconds=1)))
    key = unique("order")
    first = order(stub, admin_token, iface.id, key=key)
    lose_the_answer(server.db_url, key)
    again = retry_while_reconciled(lambda: order(stub, admin_token, iface.id, key=key))
    assert again.provider_instance_id == first.provider_instance_id and again.status == "running"
    assert rows_of(server, iface.id) == [(first.provider_instance_id, "running", again.ip_address)]
    assert len(incus.received("POST", "/1.0/instances")) == 1

    # Incus is slower than the host's patience: the order is "unknown"; while the operation runs the
    # retry is told to wait (find_instance cannot tell yet), and once it is done the retry gets it
    incus.op_delay = 4
    key = unique("order")
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED, "did not finish within 1s"):
        order(stub, admin_token, iface.id, key=key)
    with raises_code(grpc.StatusCode.UNAVAILABLE, rf"^order '{key}' is being reconciled; retry in \d+ s$"):
        order(stub, admin_token, iface.id, key=key)
    made = retry_while_reconciled(lambda: order(stub, admin_token, iface.id, key=key))
    assert made.provider_instance_id == incus.received("POST", "/1.0/instances")[-1].body["name"]
    assert made.status == "running" and len(incus.received("POST", "/1.0/instances")) == 2


# ---------------------------------------------------------------- failures through the server


def test_failed_operation_records_nothing(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus)))
    incus.fail_operations = "Failed creating instance record: Failed initialising instance: no space left"
    with raises_code(
        grpc.StatusCode.FAILED_PRECONDITION, r"creating instance 'rb-[0-9a-f-]+' failed at Incus: .*no space left"
    ):
        order(stub, admin_token, iface.id)
    assert rows_of(server, iface.id) == []
    assert incus.instances == {}  # Incus reverted the half-made instance

    # an image the server cannot find fails the operation the same way
    incus.fail_operations = None
    images = {"debian-12": {"alias": "debian/12"}, "gone": {"alias": "nowhere/1"}}
    iface2 = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus, images=images)))
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "requested image couldn't be found"):
        order(stub, admin_token, iface2.id, spec(os="gone"))
    assert rows_of(server, iface2.id) == []
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "os must be one of debian-12, gone"):
        order(stub, admin_token, iface2.id, spec(os="windows"))


def test_operation_slower_than_the_timeout(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus, operation_timeout_seconds=2)))
    incus.op_delay = 8
    start = time.monotonic()
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED, r"did not finish within 2s \(Incus operation .* still running"):
        order(stub, admin_token, iface.id)
    assert time.monotonic() - start < 8
    # Incus may still finish it: the order is kept (no provider id yet) instead of forgotten
    assert rows_of(server, iface.id) == [(None, "unknown", "")]
    # the wait used the documented timeout parameter
    waits = [r for r in incus.received("GET") if r.path.endswith("/wait")]
    assert waits and all(r.query["timeout"] in ("1", "2") for r in waits)
    # the instance Incus is still making is visible to the operator (to import or delete it)
    listed = stub.SyncUpstreamInstances(
        pb.SyncUpstreamInstancesRequest(interface_id=iface.id), metadata=md(admin_token)
    ).instances
    assert [i.instance_id for i in listed] == [incus.received("POST")[0].body["name"]]


def test_server_errors_and_untrusted_clients(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus)))
    incus.fail_requests = "database is locked"
    with raises_code(grpc.StatusCode.UNAVAILABLE, r"failed \(500\): database is locked"):
        order(stub, admin_token, iface.id)
    with raises_code(grpc.StatusCode.UNAVAILABLE, r"failed \(500\)"):
        stub.SyncUpstreamInstances(pb.SyncUpstreamInstancesRequest(interface_id=iface.id), metadata=md(admin_token))
    assert rows_of(server, iface.id) == []
    incus.fail_requests = None

    untrusted = incus.client_cert(trusted=False)
    cfg = {**config_for(incus), "client_cert": untrusted.cert_pem, "client_key": untrusted.key_pem}
    iface2 = create_interface(stub, admin_token, "incus", json.dumps(cfg))
    with raises_code(grpc.StatusCode.PERMISSION_DENIED, rf"fingerprint {untrusted.fingerprint}\) is not trusted"):
        order(stub, admin_token, iface2.id)
    assert rows_of(server, iface2.id) == []
    assert incus.instances == {}

    closed = config_for(incus, url=f"https://127.0.0.1:{free_port()}")
    iface3 = create_interface(stub, admin_token, "incus", json.dumps(closed))
    with raises_code(grpc.StatusCode.UNAVAILABLE, "cannot reach Incus at https://127.0.0.1:\\d+: connection refused"):
        order(stub, admin_token, iface3.id)
    assert rows_of(server, iface3.id) == []


# ---------------------------------------------------------------- health


def test_health_check_says_what_is_wrong(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    good = config_for(incus)

    def check(cfg: dict[str, Any]) -> Any:
        return health(stub, admin_token, create_interface(stub, admin_token, "incus", json.dumps(cfg)).id)

    assert check(good).is_healthy

    untrusted = incus.client_cert(trusted=False)
    r = check({**good, "client_cert": untrusted.cert_pem, "client_key": untrusted.key_pem})
    assert not r.is_healthy
    assert "does not trust the client certificate (auth: untrusted" in r.error and untrusted.fingerprint in r.error

    r = check({**good, "url": f"https://127.0.0.1:{free_port()}"})
    assert not r.is_healthy and "connection refused" in r.error

    other = trustme.CA()
    r = check({**good, "server_cert": other.cert_pem.bytes().decode()})
    assert (
        not r.is_healthy and "TLS error: the certificate of Incus at" in r.error and "not the one configured" in r.error
    )

    r = check({**good, "server_cert": incus.server_cert_pem, "tls_server_name": "incus.example.org"})
    assert not r.is_healthy and "not valid for the configured tls_server_name" in r.error
    assert check({**good, "tls_server_name": "localhost"}).is_healthy
    # pinning the server's own (leaf) certificate works as well as its CA
    assert check({**good, "server_cert": incus.server_leaf.cert_chain_pems[0].bytes().decode()}).is_healthy

    foreign = other.issue_cert(common_name="stranger")
    r = check(
        {
            **good,
            "client_cert": foreign.cert_chain_pems[0].bytes().decode(),
            "client_key": foreign.private_key_pem.bytes().decode(),
        }
    )
    # the server's alert says so, or (when its TCP reset overtakes the alert) the message names the likely cause
    assert not r.is_healthy and (
        "rejected the client certificate" in r.error or "refuses a client certificate it does not accept" in r.error
    ), r.error
    assert foreign_fp(foreign) in r.error
    assert incus.handshake_errors  # the server did refuse it

    r = check({**good, "project": "nope"})
    assert not r.is_healthy and "project 'nope': Project not found" in r.error
    r = check({**good, "storage_pool": "ssd"})
    assert not r.is_healthy and "storage pool 'ssd'" in r.error
    r = check({**good, "network": "br-wan"})
    assert not r.is_healthy and "network 'br-wan': Network not found" in r.error
    r = check({**good, "profiles": ["default", "gpu"]})
    assert not r.is_healthy and "profile 'gpu': Profile not found" in r.error


def test_slow_server_past_the_request_timeout(stub: Any, admin_token: str, incus: IncusServer) -> None:
    iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(incus, request_timeout_seconds=1)))
    incus.request_delay = 5
    start = time.monotonic()
    r = health(stub, admin_token, iface.id)
    assert not r.is_healthy and "did not answer within the request timeout" in r.error
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED, "did not answer within the request timeout"):
        status_of(stub, admin_token, iface.id, "web1")
    assert time.monotonic() - start < 9


def test_health_check_tls_version_mismatch(stub: Any, admin_token: str) -> None:
    old = IncusServer(tls_max_version=ssl.TLSVersion.TLSv1_2).start()
    try:
        iface = create_interface(stub, admin_token, "incus", json.dumps(config_for(old)))
        r = health(stub, admin_token, iface.id)
        assert not r.is_healthy and "does not speak TLS 1.3" in r.error
    finally:
        old.stop()


async def test_health_check_of_a_web_server_that_is_not_incus(plugin: Any, sock_dir: str) -> None:
    import socketserver
    import threading
    from http.server import BaseHTTPRequestHandler

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            return "unix"

        def log_message(self, *a: Any) -> None:
            pass

    class Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    srv = Unix(f"{sock_dir}/web.socket", Page)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        await expect_error(
            "FAILED_PRECONDITION",
            r"did not answer with an Incus REST API response \(HTTP 200, text/html\); is this an Incus server\?",
            plugin.health_check({"socket_path": f"{sock_dir}/web.socket"}),
        )
    finally:
        srv.shutdown()
        srv.server_close()


# ---------------------------------------------------------------- unix socket and projects


def test_unix_socket_through_the_server(server: ServerProcess, stub: Any, admin_token: str, sock_dir: str) -> None:
    local = IncusServer(op_delay=0.1).start_unix(f"{sock_dir}/unix.socket")
    try:
        iface = create_interface(stub, admin_token, "incus", json.dumps({"socket_path": local.socket_path}))
        assert health(stub, admin_token, iface.id).is_healthy
        reply = order(stub, admin_token, iface.id, spec(bandwidth_mbps=0))
        assert reply.status == "running" and local.received("POST")[0].client == "unix"
        assert "eth0" not in local.received("POST")[0].body["devices"]  # no bandwidth: the profile's NIC
        assert status_of(stub, admin_token, iface.id, reply.provider_instance_id).status == "running"
    finally:
        local.stop()
    r = health(stub, admin_token, iface.id)
    assert not r.is_healthy and "unix socket" in r.error and "does not exist" in r.error


def test_project_pool_profiles_and_region_target(
    server: ServerProcess, stub: Any, admin_token: str, incus: IncusServer
) -> None:
    incus.add_project("tenant-a", profiles={"small": {"config": {}, "description": "", "devices": {}}})
    incus.pools.add("ssd")
    cfg = config_for(
        incus,
        project="tenant-a",
        storage_pool="ssd",
        profiles=["default", "small"],
        instance_type="virtual-machine",
        network="",
        regions={"hk": {"label": "Hong Kong", "target": "node-hk1", "price_extra": "3.00"}},
    )
    iface = create_interface(stub, admin_token, "incus", json.dumps(cfg))
    assert health(stub, admin_token, iface.id).is_healthy
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "region"):
        order(stub, admin_token, iface.id, spec(region="mars"))
    reply = order(stub, admin_token, iface.id, spec(region="hk"))
    (post,) = incus.received("POST", "/1.0/instances")
    assert post.query == {"project": "tenant-a", "target": "node-hk1"}
    assert post.body["type"] == "virtual-machine" and post.body["profiles"] == ["default", "small"]
    assert post.body["devices"] == {"root": {"type": "disk", "path": "/", "pool": "ssd", "size": "20GiB"}}
    assert incus.instance(reply.provider_instance_id, "tenant-a") is not None
    assert incus.instance(reply.provider_instance_id) is None  # not in the default project
    assert status_of(stub, admin_token, iface.id, reply.provider_instance_id).status == "running"
    assert all(r.query.get("project") == "tenant-a" for r in incus.received() if r.path.startswith("/1.0/instances"))


# ---------------------------------------------------------------- prices, products, template


def test_prices_products_and_template(stub: Any, admin_token: str, customer_token: str, incus: IncusServer) -> None:
    cfg = config_for(
        incus,
        currency="USD",
        price_base="1.00",
        price_per_core="2.50",
        price_per_gb_memory="1.25",
        price_per_gb_disk="0.10",
        price_per_mbps="0.05",
        billing_cycles={"monthly": "1", "yearly": "10"},
        regions={"eu": {"label": "Europe"}, "hk": {"price_extra": "3.333"}},
        plans=[
            {"id": "s1", "name": "Small", "cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "region": "eu"},
            {
                "id": "m2",
                "name": "Medium",
                "cpu_cores": 2,
                "memory_gb": 4,
                "disk_gb": 40,
                "bandwidth_mbps": 100,
                "region": "hk",
                "price": "19.99",
            },
        ],
    )
    iface = create_interface(stub, admin_token, "incus", json.dumps(cfg))
    price = stub.QueryPrice(
        pb.QueryPriceRequest(
            interface_id=iface.id,
            cpu_cores=2,
            memory_gb=4,
            disk_gb=50,
            bandwidth_mbps=100,
            region="hk",
            os="ubuntu-24.04",
        ),
        metadata=md(customer_token),
    )
    # 1.00 + 2*2.50 + 4*1.25 + 50*0.10 + 100*0.05 + 3.333 = 24.333 -> 24.33
    assert (price.amount, price.currency, price.billing_cycle) == ("24.33", "USD", "monthly")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "cpu_cores must be between 1 and 32"):
        stub.QueryPrice(
            pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=33, memory_gb=1, disk_gb=10, region="eu"),
            metadata=md(customer_token),
        )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "region must be one of eu, hk"):
        stub.QueryPrice(
            pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=1, memory_gb=1, disk_gb=10, region="us"),
            metadata=md(customer_token),
        )

    synced = stub.SyncProducts(product_pb2.SyncProductsRequest(interface_id=iface.id), metadata=md(admin_token))
    products = {p.upstream_product_id: p for p in synced.products}
    # small: 1.00 + 2.50 + 1.25 + 1.00 = 5.75; medium: fixed 19.99
    assert products["s1"].price == "5.75" and dict(products["s1"].billing_cycles) == {
        "monthly": "5.75",
        "yearly": "57.50",
    }
    assert products["m2"].price == "19.99" and products["m2"].billing_cycles["yearly"] == "199.90"
    assert dict(products["m2"].specs)["memory_gb"] == "4" and products["m2"].currency == "USD"
    again = stub.SyncProducts(product_pb2.SyncProductsRequest(interface_id=iface.id), metadata=md(admin_token))
    assert (again.created, again.unchanged) == (0, 2)

    with raises_code(grpc.StatusCode.UNIMPLEMENTED, "no upstream balance"):
        stub.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=iface.id), metadata=md(admin_token))


def test_template_and_prices_are_decimal(plugin: Any) -> None:
    cfg = {"socket_path": "/nonexistent", "regions": {"eu": {}}, "max_cpu_cores": 8}
    tpl = plugin.spec_template(cfg)
    fields = {f["key"]: f for f in tpl["fields"]}
    assert fields["cpu_cores"]["max"] == 8 and fields["region"]["options"] == ["eu"]
    assert fields["os"]["options"] == ["debian-12", "ubuntu-24.04"] and fields["os"]["default_value"] == "debian-12"
    from rustbill.plugins.contract import check_price, check_products, check_spec_template

    types = ["Integer"] * 4 + ["OsOptions", "Region"]  # RustBill's names, kept as they are by the check
    assert [f["field_type"] for f in tpl["fields"]] == types
    assert [f["field_type"] for f in check_spec_template(tpl)["fields"]] == types
    price = plugin.query_price(cfg, {"cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "region": "eu"})
    assert check_price(price) == {"amount": "17.00", "currency": "CNY", "billing_cycle": "monthly"}
    assert check_products(plugin.sync_products(cfg)) == []
    with pytest.raises(Exception, match="float"):
        plugin.query_price(
            {**cfg, "price_per_core": 1.5}, {"cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "region": "eu"}
        )


# ---------------------------------------------------------------- configuration


def test_config_is_validated(stub: Any, admin_token: str, server: ServerProcess, incus: IncusServer) -> None:
    good = config_for(incus)
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "client_cert"):
        create_interface(stub, admin_token, "incus", json.dumps({"url": incus.url}))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "config_json"):
        create_interface(stub, admin_token, "incus", json.dumps({"project": "x"}))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "config_json.url"):
        create_interface(stub, admin_token, "incus", json.dumps({**good, "url": "http://plain:8443"}))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "config_json.client_key") as info:
        create_interface(stub, admin_token, "incus", json.dumps({**good, "client_key": "not a key"}))
    assert "not a key" not in info["details"]  # a secret's value is never echoed
    # a key that does not belong to the certificate: a clear answer, the key never shown
    other_key = incus.client_cert(trusted=False).key_pem
    iface = create_interface(stub, admin_token, "incus", json.dumps({**good, "client_key": other_key}))
    r = health(stub, admin_token, iface.id)
    assert not r.is_healthy and "the key does not match the certificate" in r.error
    body = other_key.splitlines()[1]
    assert body not in r.error and body not in server.log and good["client_key"].splitlines()[1] not in server.log

    schema = load_plugin(PLUGIN, PLUGIN.read_bytes(), "incus").config_schema

    def walk(props: dict[str, Any], where: str) -> None:
        for name, sub in props.items():
            assert sub.get("title") and sub.get("description"), f"{where}.{name} needs a title and a description"
            for nested in (
                sub.get("properties"),
                (sub.get("additionalProperties") or {}).get("properties"),
                (sub.get("items") or {}).get("properties"),
            ):
                if isinstance(nested, dict):
                    walk(nested, f"{where}.{name}")

    walk(schema["properties"], "config")
    assert schema["properties"]["client_key"]["format"] == "password"


# ---------------------------------------------------------------- direct calls


async def test_direct_create_is_idempotent_per_request_id(plugin: Any, incus: IncusServer) -> None:
    cfg = config_for(incus)
    rid = str(uuid.uuid4())
    first = await plugin.create_instance(cfg, direct_spec(rid))
    again = await plugin.create_instance(cfg, direct_spec(rid))
    assert first["instance_id"] == again["instance_id"] == f"rb-{rid}"
    assert again["status"] == "running" and again["created_at"].endswith("Z")
    assert len(incus.received("POST", "/1.0/instances")) == 1
    assert incus.instance(f"rb-{rid}").config["user.rustbill.request_id"] == rid

    # a retry while the first attempt's operation is still running waits for it, and opens nothing new
    incus.op_delay = 1.5
    rid2 = str(uuid.uuid4())
    task = asyncio.ensure_future(plugin.create_instance(cfg, direct_spec(rid2)))
    for _ in range(100):
        if incus.instance(f"rb-{rid2}") is not None:
            break
        await asyncio.sleep(0.05)
    retry = await plugin.create_instance(cfg, direct_spec(rid2))
    first2 = await task
    assert retry["instance_id"] == first2["instance_id"] == f"rb-{rid2}" and retry["status"] == "running"
    assert len(incus.received("POST", "/1.0/instances")) == 2

    # the derived name is taken by an instance that is not this request's: refused, not adopted
    incus.op_delay = 0.1
    rid3 = str(uuid.uuid4())
    incus.add_instance(f"rb-{rid3}")
    await expect_error(
        "ALREADY_EXISTS", "already used in Incus by another instance", plugin.create_instance(cfg, direct_spec(rid3))
    )

    # request ids that are not UUIDs still give valid, stable names
    long_id = "order/" + "x" * 100
    made = await plugin.create_instance(cfg, direct_spec(long_id))
    assert made["instance_id"].startswith("rb-") and len(made["instance_id"]) <= 63
    assert (await plugin.create_instance(cfg, direct_spec(long_id)))["instance_id"] == made["instance_id"]

    await expect_error("INVALID_ARGUMENT", "request_id", plugin.create_instance(cfg, direct_spec("")))


async def _appears(incus: IncusServer, name: str) -> None:
    for _ in range(200):
        if incus.instance(name) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"instance {name} never appeared at the peer")


async def test_direct_find_instance(plugin: Any, incus: IncusServer) -> None:
    cfg = config_for(incus, operation_timeout_seconds=1)
    assert await plugin.find_instance(cfg, str(uuid.uuid4())) is None
    rid = str(uuid.uuid4())
    made = await plugin.create_instance(cfg, direct_spec(rid))
    found = await plugin.find_instance(cfg, rid)
    assert found == made and found["instance_id"] == f"rb-{rid}" and found["status"] == "running"

    # a create still running at Incus is waited for, and its instance returned
    incus.op_delay = 0.5
    rid = str(uuid.uuid4())
    task = asyncio.ensure_future(plugin.create_instance(cfg, direct_spec(rid)))
    await _appears(incus, f"rb-{rid}")
    found = await plugin.find_instance(cfg, rid)
    assert found is not None and found["instance_id"] == f"rb-{rid}" and found["status"] == "running"
    await task

    # one that outlasts operation_timeout_seconds: no answer yet, never None
    incus.op_delay = 3
    rid = str(uuid.uuid4())
    task = asyncio.ensure_future(plugin.create_instance(cfg, direct_spec(rid)))
    await _appears(incus, f"rb-{rid}")
    await expect_error("UNAVAILABLE", rf"instance 'rb-{rid}' is still being made .*ask again later",
                       plugin.find_instance(cfg, rid))  # fmt: skip
    await expect_error("DEADLINE_EXCEEDED", "did not finish within 1s", task)

    # one that fails at Incus (which reverts it): waited for, then there is nothing
    incus.op_delay, incus.fail_operations = 0.5, "Failed creating instance from image: no space left"
    rid = str(uuid.uuid4())
    task = asyncio.ensure_future(plugin.create_instance(cfg, direct_spec(rid)))
    await _appears(incus, f"rb-{rid}")
    assert await plugin.find_instance(cfg, rid) is None
    await expect_error("FAILED_PRECONDITION", "no space left", task)
    incus.fail_operations = None

    # the derived name is taken by an instance that is not this request's: this order made nothing
    rid = str(uuid.uuid4())
    incus.add_instance(f"rb-{rid}")
    assert await plugin.find_instance(cfg, rid) is None
    assert incus.instance(f"rb-{rid}") is not None  # and it is left alone

    await expect_error("INVALID_ARGUMENT", "request_id", plugin.find_instance(cfg, ""))


async def test_direct_status_list_and_actions(plugin: Any, incus: IncusServer) -> None:
    cfg = config_for(incus)
    incus.add_instance("web1", status="Running")
    incus.add_instance("db1", status="Stopped")
    st = await plugin.get_instance_status(cfg, "web1")
    assert st["status"] == "running" and st["ip_address"].startswith("10.158.0.")
    assert (await plugin.get_instance_status(cfg, "db1")) == {
        "instance_id": "db1",
        "status": "stopped",
        "ip_address": "",
    }
    await expect_error(
        "NOT_FOUND", "does not exist in Incus project 'default'", plugin.get_instance_status(cfg, "ghost")
    )
    await expect_error("INVALID_ARGUMENT", "not a valid Incus instance name", plugin.get_instance_status(cfg, "a/b?c"))
    listed = {i["instance_id"]: i for i in await plugin.sync_upstream_instances(cfg)}
    assert listed["db1"]["status"] == "stopped" and listed["web1"]["ip_address"] == st["ip_address"]

    assert (await plugin.admin_stop({**cfg, "name": "web1", "force": True}))["status"] == "stopped"
    put = incus.received("PUT", "/1.0/instances/web1/state")[-1]
    assert put.body == {"action": "stop", "force": True, "timeout": 30}
    await expect_error("FAILED_PRECONDITION", "already stopped", plugin.admin_stop({**cfg, "name": "web1"}))
    assert (await plugin.admin_delete({**cfg, "name": "db1"}))["status"] == "deleted"
    info = await plugin.admin_server_info(cfg)
    assert info["auth"] == "trusted" and info["server_version"] == "6.0.4" and info["api_version"] == "1.0"
    details = await plugin.admin_instance({**cfg, "name": "web1"})
    assert details["status"] == "stopped"


async def test_direct_bad_key_material(plugin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the plugin writes the PEM files
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(_LEAF.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-pass"),
    ).decode()
    cfg = {"url": f"https://127.0.0.1:{free_port()}", "client_cert": _dummy_cert(), "client_key": encrypted}
    await expect_error("INVALID_ARGUMENT", "client_key is encrypted", plugin.health_check(cfg))
    await expect_error(
        "INVALID_ARGUMENT",
        "exactly one of url",
        plugin.get_instance_status({**cfg, "socket_path": "/run/incus/unix.socket"}, "web1"),
    )
    good = {**cfg, "client_key": _dummy_key(), "insecure_skip_verify": True}
    await expect_error("UNAVAILABLE", "connection refused", plugin.health_check(good))
    assert os.listdir(tmp_path) == []  # the PEM files written for ssl.load_cert_chain are gone


async def test_direct_admin_page_shows_errors_instead_of_failing(plugin: Any) -> None:
    page = await plugin.admin_page(
        {
            "url": f"https://127.0.0.1:{free_port()}",
            "client_cert": _dummy_cert(),
            "client_key": _dummy_key(),
            "insecure_skip_verify": True,
        }
    )
    assert "Cannot reach Incus" in page["html"] and "connection refused" in page["html"]


async def test_direct_timestamps_and_addresses(plugin: Any) -> None:
    assert plugin._created_at("2021-03-23T20:00:00.123456789-04:00") == "2021-03-24T00:00:00Z"
    assert plugin._created_at("0001-01-01T00:00:00Z") == ""
    state = {
        "network": {
            "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
            "eth0": {"addresses": [{"family": "inet6", "address": "fd00::1", "scope": "global"}]},
        }
    }
    assert plugin._ip(state) == "fd00::1"
    assert plugin._ip({"network": None}) == ""


_CA = trustme.CA()
_LEAF = _CA.issue_cert(common_name="dummy")


def _dummy_cert() -> str:
    return _LEAF.cert_chain_pems[0].bytes().decode()


def _dummy_key() -> str:
    return _LEAF.private_key_pem.bytes().decode()


def test_plugin_file_is_in_the_shared_server(server: ServerProcess) -> None:
    assert (server.plugins_dir / "incus.py").exists()
    assert Path(PLUGIN).read_bytes() == (server.plugins_dir / "incus.py").read_bytes()
