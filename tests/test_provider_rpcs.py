"""The provider RPCs, admin pages, actions and health checks, through the running server."""

from __future__ import annotations

import json
import threading
import time
import uuid

import grpc
import pytest
from helpers import SHIPPED_PLUGINS, ServerProcess, create_interface, md, new_uuid, query_db, raises_code, unique

from rustbill.pb import common_pb2, order_pb2, product_pb2
from rustbill.pb import integration_pb2 as pb

SECRET = "sk-live-9f8e7d6c5b4a"


def price_req(iface_id: str, cpu: int = 2, mem: int = 4, **kw) -> pb.QueryPriceRequest:  # type: ignore[no-untyped-def]
    return pb.QueryPriceRequest(
        interface_id=iface_id, cpu_cores=cpu, memory_gb=mem, disk_gb=50, bandwidth_mbps=100, **kw
    )


@pytest.fixture(scope="module")
def provider(stub, admin_token: str):  # type: ignore[no-untyped-def]
    return create_interface(
        stub, admin_token, "t_provider", json.dumps({"api_key": SECRET, "regions": ["us-west", "eu"]})
    )


@pytest.fixture(scope="module")
def broken(stub, admin_token: str):  # type: ignore[no-untyped-def]
    return create_interface(stub, admin_token, "t_broken_calls")


# ---------------------------------------------------------------- QueryPrice


def test_query_price_returns_a_decimal_string(stub, provider, customer_token: str) -> None:
    reply = stub.QueryPrice(price_req(provider.id, region="us-west", os="ubuntu-22.04"), metadata=md(customer_token))
    assert (reply.amount, reply.currency, reply.billing_cycle) == ("2.24", "CNY", "monthly")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"cpu": 0}, r"cpu_cores must be between 1 and"),
        ({"mem": 0}, r"memory_gb must be between"),
        ({"cpu": 33}, r"cpu_cores must be between 1 and 32"),  # the provider's template says max 32
        ({"region": "mars"}, r"region must be one of us-west, eu"),
    ],
)
def test_query_price_validates_the_spec(stub, provider, admin_token: str, kw: dict, match: str) -> None:  # type: ignore[type-arg]
    region = kw.pop("region", "eu")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, match):
        stub.QueryPrice(price_req(provider.id, region=region, **kw), metadata=md(admin_token))


def test_provider_rpc_on_wrong_interfaces(stub, admin_token: str) -> None:
    gw = create_interface(stub, admin_token, "t_notifier")
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "not a provider"):
        stub.QueryPrice(price_req(gw.id), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "not a provider"):
        stub.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=gw.id), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.NOT_FOUND):
        stub.QueryPrice(price_req(new_uuid()), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "interface_id is not a valid UUID"):
        stub.QueryPrice(price_req("0192a123-..."), metadata=md(admin_token))
    off = create_interface(stub, admin_token, "t_provider")
    stub.TogglePluginInterface(
        pb.TogglePluginInterfaceRequest(interface_id=off.id, enable=False), metadata=md(admin_token)
    )
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "disabled"):
        stub.QueryPrice(price_req(off.id), metadata=md(admin_token))


@pytest.mark.parametrize(
    ("cpu", "code", "match"),
    [
        (
            1,
            grpc.StatusCode.INTERNAL,
            r"plugin 't_broken_calls' query_price failed: ValueError: price table is corrupt",
        ),
        (2, grpc.StatusCode.INTERNAL, r"returned a bad result from query_price: .*not float 12\.5"),
        (3, grpc.StatusCode.INTERNAL, r"returned a bad result from query_price: .*must be a dict, not list"),
        (4, grpc.StatusCode.UNAVAILABLE, r"cannot reach the remote system: ConnectionRefusedError"),
        (5, grpc.StatusCode.DEADLINE_EXCEEDED, r"query_price did not finish within 2s"),
    ],
)
def test_plugin_failures_map_to_clear_statuses(stub, broken, admin_token: str, cpu: int, code, match: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(code, match):
        stub.QueryPrice(price_req(broken.id, cpu=cpu), metadata=md(admin_token), timeout=30)


def test_a_blocking_plugin_does_not_stall_other_rpcs(
    server: ServerProcess, stub, broken, provider, admin_token: str
) -> None:
    done: dict[str, float] = {}

    def blocking() -> None:
        try:
            stub.QueryPrice(price_req(broken.id, cpu=5), metadata=md(admin_token), timeout=30)
        except grpc.RpcError as exc:
            done["code"] = exc.code()  # type: ignore[assignment]
        done["at"] = time.monotonic()

    threads = [threading.Thread(target=blocking) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    quick_done = []
    for _ in range(10):
        stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=provider.id), metadata=md(admin_token))
        stub.QueryPrice(price_req(provider.id), metadata=md(admin_token))
        quick_done.append(time.monotonic())
    for t in threads:
        t.join()
    assert done["code"] == grpc.StatusCode.DEADLINE_EXCEEDED
    # every quick call finished while the blocking ones were still blocked
    assert max(quick_done) < done["at"]


@pytest.mark.parametrize("function", ["admin_sleep_sync", "admin_sleep_async"])
def test_timeouts_for_def_and_async_def(stub, provider, admin_token: str, function: str) -> None:
    start = time.monotonic()
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED, rf"{function} did not finish within 2s"):
        stub.CallPluginAction(
            pb.CallPluginActionRequest(interface_id=provider.id, function=function, args_json='{"seconds": 8}'),
            metadata=md(admin_token),
            timeout=30,
        )
    assert time.monotonic() - start < 7
    # short enough: it answers
    reply = stub.CallPluginAction(
        pb.CallPluginActionRequest(interface_id=provider.id, function=function, args_json='{"seconds": 0.1}'),
        metadata=md(admin_token),
    )
    assert json.loads(reply.result_json) == {"slept": 0.1}


# ---------------------------------------------------------------- hot reload


def test_config_change_is_used_by_the_next_call(stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_provider", '{"base_price": "1.00"}')
    assert stub.QueryPrice(price_req(iface.id, cpu=1, mem=1), metadata=md(admin_token)).amount == "1.01"
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json='{"base_price": "5.00"}'),
        metadata=md(admin_token),
    )
    assert stub.QueryPrice(price_req(iface.id, cpu=1, mem=1), metadata=md(admin_token)).amount == "5.01"


CODE_V1 = """
PLUGIN_TYPE = "upstream_provider"
def version():
    return "1.0.0"
def query_price(config, spec):
    return {"amount": "1.00", "currency": "USD", "billing_cycle": "monthly"}
"""


def test_code_change_is_used_without_restart(fresh_server: ServerProcess) -> None:
    path = fresh_server.plugins_dir / "hot.py"
    path.write_text(CODE_V1)
    fresh_server.start()
    token, stub = fresh_server.token(), fresh_server.stub()
    iface = create_interface(stub, token, "hot")
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "1.00"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(CODE_V1.replace('"1.00"', '"2.00"').replace('"1.0.0"', '"1.1.0"'))
    tmp.replace(path)
    deadline = time.monotonic() + 15
    while stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount != "2.00":
        assert time.monotonic() < deadline, "new code not picked up"
        time.sleep(0.1)
    plugins = stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins
    assert [p.version for p in plugins if p.plugin_id == "hot"] == ["1.1.0"]


# ---------------------------------------------------------------- ListProviders: spec-template field types


def _field_types(stub, token: str, interface_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    providers = stub.ListProviders(common_pb2.EmptyRequest(), metadata=md(token)).providers
    [info] = [p for p in providers if p.interface_id == interface_id]
    return {f.key: f.field_type for f in info.spec_template.fields}


def test_list_providers_sends_rustbill_field_types(stub, admin_token: str) -> None:
    """RustBill's order form draws Integer, String, Select, Region, OsOptions and Boolean only."""
    demo = create_interface(stub, admin_token, "demo_cloud", json.dumps({"regions": ["us-west", "eu-central"]}))
    kvm_config = {
        "uri": "test:///default",
        "images": {"debian-12": {"volume": "debian-12.qcow2"}},
        "regions": {"hk": {"label": "Hong Kong"}},
    }
    kvm = create_interface(stub, admin_token, "kvm", json.dumps(kvm_config))
    assert _field_types(stub, admin_token, demo.id) == {
        "cpu_cores": "Integer", "memory_gb": "Integer", "disk_gb": "Integer", "region": "Region",
    }  # fmt: skip
    assert _field_types(stub, admin_token, kvm.id) == {
        "cpu_cores": "Integer", "memory_gb": "Integer", "disk_gb": "Integer", "bandwidth_mbps": "Integer",
        "os": "OsOptions", "region": "Region",
    }  # fmt: skip


OLD_STYLE_TEMPLATE = """
PLUGIN_TYPE = "first_party_provider"
def spec_template(config):
    return {"fields": [
        {"key": "cpu_cores", "field_type": "number", "min": 1, "max": 8},
        {"key": "region", "field_type": "select", "options": ["fra1"]},
        {"key": "os", "field_type": "select", "options": ["debian-12"]},
        {"key": "plan", "field_type": "select", "options": ["a"]},
        {"key": "hostname", "field_type": "text"},
        {"key": "ipv6", "field_type": "boolean"},
        {"key": "note"},
    ]}
def query_price(config, spec):
    return {"amount": "1.00", "currency": "USD", "billing_cycle": "monthly"}
"""


def test_old_field_type_names_are_translated_and_unknown_ones_refused(fresh_server: ServerProcess) -> None:
    fresh_server.plugins_dir.joinpath("old_tpl.py").write_text(OLD_STYLE_TEMPLATE)
    fresh_server.plugins_dir.joinpath("bad_type.py").write_text(
        OLD_STYLE_TEMPLATE.replace('"field_type": "text"', '"field_type": "slider"')
    )
    fresh_server.start()
    token, stub = fresh_server.token(), fresh_server.stub()
    old, bad = create_interface(stub, token, "old_tpl"), create_interface(stub, token, "bad_type")
    assert _field_types(stub, token, old.id) == {
        "cpu_cores": "Integer", "region": "Region", "os": "OsOptions", "plan": "Select", "hostname": "String",
        "ipv6": "Boolean", "note": "String",
    }  # fmt: skip
    # an unknown type is a contract violation: the listing shows no template, orders are refused
    assert _field_types(stub, token, bad.id) == {}
    fresh_server.wait_for_log(
        r"spec_template failed: .*spec_template field 4 \('hostname'\): field_type 'slider' is not one of "
        r"Integer, String, Select, Region, OsOptions, Boolean"
    )
    with raises_code(grpc.StatusCode.INTERNAL, r"bad result from spec_template: .*field_type 'slider'"):
        stub.QueryPrice(price_req(bad.id, cpu=1, mem=1, region="fra1", os="debian-12"), metadata=md(token))
    assert stub.QueryPrice(price_req(old.id, cpu=1, mem=1, region="fra1", os="debian-12"), metadata=md(token)).amount


# ---------------------------------------------------------------- admin page and actions


def test_admin_page(stub, provider, admin_token: str) -> None:
    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=provider.id), metadata=md(admin_token))
    assert page.title == "Test provider" and page.html_content == "<h1>base 1.10</h1>"
    plain = create_interface(stub, admin_token, "t_notifier")
    with raises_code(grpc.StatusCode.NOT_FOUND, "has no admin page"):
        stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=plain.id), metadata=md(admin_token))


def test_demo_cloud_admin_page_lists_its_instances(fresh_server: ServerProcess) -> None:
    """The example provider's page (the one a plugin author copies): the shared page look, an empty
    state that says what to do, then its instances."""
    fresh_server.add_plugin(SHIPPED_PLUGINS / "demo_cloud.py")
    fresh_server.start()
    stub, admin_token = fresh_server.stub(), fresh_server.token()
    demo = create_interface(stub, admin_token, "demo_cloud")
    get = pb.GetPluginAdminPageRequest(interface_id=demo.id)
    page = stub.GetPluginAdminPage(get, metadata=md(admin_token))
    assert page.title == "Demo cloud" and "<style>" in page.html_content
    assert "No instances yet" in page.html_content and "<table>" not in page.html_content
    spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10, region="us-west")
    reply = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=demo.id, server_spec=spec), metadata=md(admin_token)
    )
    html = stub.GetPluginAdminPage(get, metadata=md(admin_token)).html_content
    assert "<th>Instance</th><th>Status</th><th>IP address</th>" in html
    assert f"<td>{reply.provider_instance_id}</td><td>running</td><td>{reply.ip_address}</td>" in html


def test_call_action_merges_args_into_config(stub, provider, admin_token: str) -> None:
    reply = stub.CallPluginAction(
        pb.CallPluginActionRequest(interface_id=provider.id, function="admin_echo", args_json='{"page": 2}'),
        metadata=md(admin_token),
    )
    result = json.loads(reply.result_json)
    assert result["config"]["page"] == 2 and result["config"]["regions"] == ["us-west", "eu"]
    assert result["decimal"] == "0.10"
    # the merge does not leak into the stored config
    again = stub.CallPluginAction(
        pb.CallPluginActionRequest(interface_id=provider.id, function="admin_echo", args_json=""),
        metadata=md(admin_token),
    )
    assert "page" not in json.loads(again.result_json)["config"]


@pytest.mark.parametrize(
    ("function", "args", "code", "match"),
    [
        ("create_instance", "{}", grpc.StatusCode.PERMISSION_DENIED, "only admin_\\* functions"),
        ("query_price", "{}", grpc.StatusCode.PERMISSION_DENIED, "only admin_"),
        ("__import__", "{}", grpc.StatusCode.PERMISSION_DENIED, "only admin_"),
        ("admin_page", "{}", grpc.StatusCode.INVALID_ARGUMENT, "GetPluginAdminPage"),
        ("admin_nope", "{}", grpc.StatusCode.UNIMPLEMENTED, "does not implement admin_nope"),
        ("admin_echo", "[1]", grpc.StatusCode.INVALID_ARGUMENT, "args_json must be a JSON object"),
        ("admin_echo", "{x", grpc.StatusCode.INVALID_ARGUMENT, "args_json is not valid JSON"),
        ("admin_not_json", "{}", grpc.StatusCode.INTERNAL, "not JSON-serialisable"),
        ("admin_fail", "{}", grpc.StatusCode.NOT_FOUND, "no such thing"),
        ("admin_abort", "{}", grpc.StatusCode.ABORTED, "order changed meanwhile"),
        ("admin_own_timeout", "{}", grpc.StatusCode.DEADLINE_EXCEEDED, "did not answer in time: socket read timed out"),
        ("admin_echo", '{"api_key": "mine"}', grpc.StatusCode.INVALID_ARGUMENT, "cannot override .*api_key"),
        ("admin_echo", '{"base_price": "0"}', grpc.StatusCode.INVALID_ARGUMENT, "cannot override .*base_price"),
    ],
)
def test_call_action_errors(stub, provider, admin_token: str, function: str, args: str, code, match: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(code, match):
        stub.CallPluginAction(
            pb.CallPluginActionRequest(interface_id=provider.id, function=function, args_json=args),
            metadata=md(admin_token),
        )


def test_call_action_refusing_create_instance_does_not_run_it(server: ServerProcess, stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_provider")
    mark = server.log_mark()
    with raises_code(grpc.StatusCode.PERMISSION_DENIED):
        stub.CallPluginAction(
            pb.CallPluginActionRequest(interface_id=iface.id, function="create_instance", args_json="{}"),
            metadata=md(admin_token),
        )
    stub.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=iface.id), metadata=md(admin_token))
    server.wait_for_log(rf"interface={iface.id} .*function=get_upstream_balance", start=mark)
    assert f"interface={iface.id} plugin=t_provider function=create_instance" not in "".join(
        server.log.splitlines(True)[mark:]
    )


def test_secrets_never_reach_messages_or_the_log(server: ServerProcess, stub, provider, admin_token: str) -> None:
    with raises_code(grpc.StatusCode.INTERNAL, r"failed with key \*\*\*") as info:
        stub.CallPluginAction(
            pb.CallPluginActionRequest(interface_id=provider.id, function="admin_leak_secret", args_json="{}"),
            metadata=md(admin_token),
        )
    assert SECRET not in info["details"]
    bad = create_interface(stub, admin_token, "t_provider", json.dumps({"api_key": SECRET, "healthy": False}))
    health = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=bad.id), metadata=md(admin_token))
    assert not health.is_healthy and health.error.endswith("upstream refused key ***")
    server.wait_for_log(
        rf"interface={bad.id} name=\"{bad.display_name}\" plugin=t_provider function=health_check .*outcome=UNAVAILABLE"
    )
    assert SECRET not in server.log


def test_every_plugin_call_is_logged(server: ServerProcess, stub, provider, admin_token: str) -> None:
    mark = server.log_mark()
    stub.QueryPrice(price_req(provider.id), metadata=md(admin_token))
    server.wait_for_log(
        rf"plugin call interface={provider.id} name=\"{provider.display_name}\" plugin=t_provider "
        rf"function=query_price caller=admin request_id=[0-9a-f-]{{36}} duration_ms=\d+\.\d outcome=ok",
        start=mark,
    )


# ---------------------------------------------------------------- health


def _first_check_done(stub, token: str, iface) -> None:  # type: ignore[no-untyped-def]
    """A new interface is health-checked at once in the background: wait for it, so that the check a
    test asks for next is the newest (the newer of two checks is the one stored)."""
    deadline = time.monotonic() + 10
    req = pb.GetPluginInterfaceRequest(interface_id=iface.id)
    while not stub.GetPluginInterface(req, metadata=md(token)).interface.HasField("last_check_at"):
        assert time.monotonic() < deadline, "the immediate health check of a new interface did not run"
        time.sleep(0.05)


def test_check_plugin_health_stores_the_result(stub, admin_token: str) -> None:
    good = create_interface(stub, admin_token, "t_provider")
    _first_check_done(stub, admin_token, good)
    reply = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=good.id), metadata=md(admin_token))
    assert reply.is_healthy and not reply.HasField("error") and reply.checked_at.endswith("Z")
    got = stub.GetPluginInterface(
        pb.GetPluginInterfaceRequest(interface_id=good.id), metadata=md(admin_token)
    ).interface
    assert got.is_healthy and got.last_check_at == reply.checked_at and not got.HasField("health_error")

    bad = create_interface(stub, admin_token, "t_broken_calls")
    _first_check_done(stub, admin_token, bad)
    reply = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=bad.id), metadata=md(admin_token))
    assert not reply.is_healthy and "RuntimeError: cannot reach upstream" in reply.error
    got = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=bad.id), metadata=md(admin_token)).interface
    assert not got.is_healthy and got.health_error == reply.error

    no_check = create_interface(stub, admin_token, "t_notifier")
    assert stub.CheckPluginHealth(
        pb.CheckPluginHealthRequest(interface_id=no_check.id), metadata=md(admin_token)
    ).is_healthy

    slow = create_interface(stub, admin_token, "t_provider", '{"health_sleep": 30}')
    reply = stub.CheckPluginHealth(
        pb.CheckPluginHealthRequest(interface_id=slow.id), metadata=md(admin_token), timeout=20
    )
    assert not reply.is_healthy and "did not finish within 2s" in reply.error

    with raises_code(grpc.StatusCode.NOT_FOUND):
        stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=new_uuid()), metadata=md(admin_token))


def test_background_checker_updates_health(fresh_server: ServerProcess) -> None:
    from helpers import TEST_PLUGINS

    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    fresh_server.env["RUSTBILL_PLUGINS__HEALTH_INTERVAL_SECONDS"] = "1"
    fresh_server.env["RUSTBILL_PLUGINS__TIMEOUTS"] = '{"health_check": 3}'
    fresh_server.start()
    token, stub = fresh_server.token(), fresh_server.stub()
    hanging = create_interface(stub, token, "t_provider", '{"health_sleep": 60}')
    good = [create_interface(stub, token, "t_provider") for _ in range(5)]
    sick = create_interface(stub, token, "t_provider", '{"healthy": false}')
    deadline = time.monotonic() + 20

    def get(i):  # type: ignore[no-untyped-def]
        return stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=i.id), metadata=md(token)).interface

    while not all(get(g).is_healthy for g in good) or not get(sick).HasField("last_check_at"):
        assert time.monotonic() < deadline, "background checker did not check the interfaces"
        time.sleep(0.2)
    assert not get(sick).is_healthy and "upstream refused" in get(sick).health_error
    while not get(hanging).HasField("health_error"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "did not finish within 3s" in get(hanging).health_error


# ---------------------------------------------------------------- SyncProducts


def test_sync_products_upserts_and_is_idempotent(
    server: ServerProcess, stub, admin_token: str, customer_token: str
) -> None:
    iface = create_interface(stub, admin_token, "t_provider", '{"product_count": 3}')
    req = product_pb2.SyncProductsRequest(interface_id=iface.id)
    first = stub.SyncProducts(req, metadata=md(customer_token))
    assert (first.created, first.updated, first.deactivated, first.unchanged) == (3, 0, 0, 0)
    assert [p.upstream_product_id for p in first.products] == ["p0", "p1", "p2"]
    p1 = first.products[1]
    assert p1.price == "11.00" and p1.currency == "CNY" and p1.provider_id == iface.id and p1.active
    assert dict(p1.billing_cycles) == {"monthly": "11.00"} and dict(p1.specs) == {"cpu_cores": "2"}

    stamp = query_db(
        server.db_url,
        "SELECT max(updated_at), count(*) FROM products WHERE interface_id = :i",
        i=_db_uuid(server, iface.id),
    )
    second = stub.SyncProducts(req, metadata=md(admin_token))
    assert (second.created, second.updated, second.deactivated, second.unchanged) == (0, 0, 0, 3)
    assert [p.updated_at for p in second.products] == [p.updated_at for p in first.products]
    assert (
        query_db(
            server.db_url,
            "SELECT max(updated_at), count(*) FROM products WHERE interface_id = :i",
            i=_db_uuid(server, iface.id),
        )
        == stamp
    )

    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json='{"product_count": 2, "price_bump": "0.5"}'),
        metadata=md(admin_token),
    )
    third = stub.SyncProducts(req, metadata=md(admin_token))
    assert (third.created, third.updated, third.deactivated, third.unchanged) == (0, 2, 1, 0)
    assert [(p.upstream_product_id, p.price) for p in third.products] == [("p0", "10.50"), ("p1", "11.50")]
    rows = query_db(
        server.db_url,
        "SELECT upstream_product_id FROM products WHERE interface_id = :i AND active = :f",
        i=_db_uuid(server, iface.id),
        f=False,
    )
    assert rows == [("p2",)]


def test_sync_products_bad_result_writes_nothing(server: ServerProcess, stub, broken, admin_token: str) -> None:
    with raises_code(grpc.StatusCode.INTERNAL, "returned product id 'a' twice"):
        stub.SyncProducts(product_pb2.SyncProductsRequest(interface_id=broken.id), metadata=md(admin_token))
    assert query_db(
        server.db_url, "SELECT count(*) FROM products WHERE interface_id = :i", i=_db_uuid(server, broken.id)
    ) == [(0,)]


def _db_uuid(server: ServerProcess, value: str) -> object:
    # SQLAlchemy's Uuid type stores 32 hex digits on SQLite and a native uuid on PostgreSQL.
    return uuid.UUID(value).hex if server.db_url.startswith("sqlite") else uuid.UUID(value)


# ---------------------------------------------------------------- instances


def test_create_upstream_instance_records_it(
    server: ServerProcess, stub, provider, customer: str, customer_token: str
) -> None:
    server.cli("balance", "credit", customer, "10")  # a customer's order is paid from their balance
    spec = order_pb2.ServerSpec(cpu_cores=2, memory_gb=4, disk_gb=50, bandwidth_mbps=100, region="eu", os="debian-12")
    reply = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=provider.id, server_spec=spec), metadata=md(customer_token)
    )
    assert (
        reply.provider_instance_id.startswith("i-") and reply.status == "running" and reply.ip_address == "192.0.2.10"
    )
    rows = query_db(
        server.db_url,
        "SELECT status, origin, ip_address FROM instances WHERE provider_instance_id = :p",
        p=reply.provider_instance_id,
    )
    assert rows == [("running", "created", "192.0.2.10")]
    status = stub.GetInstanceStatus(
        pb.InstanceStatusRequest(interface_id=provider.id, instance_id=reply.provider_instance_id),
        metadata=md(_admin(server)),
    )
    assert status.status == "running"


def _admin(server: ServerProcess) -> str:
    return server.token("admin")


def test_create_upstream_instance_retry_with_idempotency_key_does_not_double(
    server: ServerProcess, stub, provider, admin_token: str
) -> None:
    spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10, region="eu")
    key = unique("order")
    meta = [*md(admin_token), ("idempotency-key", key)]
    a = stub.CreateUpstreamInstance(pb.UpstreamOrderRequest(interface_id=provider.id, server_spec=spec), metadata=meta)
    b = stub.CreateUpstreamInstance(pb.UpstreamOrderRequest(interface_id=provider.id, server_spec=spec), metadata=meta)
    assert a.provider_instance_id == b.provider_instance_id
    assert query_db(server.db_url, "SELECT count(*) FROM instances WHERE idempotency_key = :k", k=key) == [(1,)]


def test_idempotency_keys_belong_to_their_caller(
    server: ServerProcess, stub, provider, customer: str, customer_token: str, admin_token: str
) -> None:
    """Another customer sending the same idempotency-key places an order of its own: it never gets
    the first customer's instance (id, IP) back."""
    spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10, region="eu")
    key = unique("shared-key")
    other = unique("customer")
    server.cli("user", "create", other, "--role", "customer")
    server.cli("balance", "credit", other, "10")
    server.cli("balance", "credit", customer, "10")
    mine = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=provider.id, server_spec=spec),
        metadata=[*md(customer_token), ("idempotency-key", key)],
    )
    theirs = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=provider.id, server_spec=spec),
        metadata=[*md(server.token(other)), ("idempotency-key", key)],
    )
    assert theirs.provider_instance_id != mine.provider_instance_id
    again = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=provider.id, server_spec=spec),
        metadata=[*md(customer_token), ("idempotency-key", key)],
    )
    assert again.provider_instance_id == mine.provider_instance_id
    assert query_db(server.db_url, "SELECT count(*) FROM instances WHERE idempotency_key = :k", k=key) == [(2,)]


def test_create_upstream_instance_failure_records_nothing(server: ServerProcess, stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_provider", '{"fail_create": true}')
    spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10)
    with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of capacity"):
        stub.CreateUpstreamInstance(
            pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=spec), metadata=md(admin_token)
        )
    assert query_db(
        server.db_url, "SELECT count(*) FROM instances WHERE interface_id = :i", i=_db_uuid(server, iface.id)
    ) == [(0,)]
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "server_spec is required"):
        stub.CreateUpstreamInstance(pb.UpstreamOrderRequest(interface_id=iface.id), metadata=md(admin_token))


def test_instance_status_errors(stub, provider, broken, admin_token: str) -> None:
    with raises_code(grpc.StatusCode.NOT_FOUND, "does not exist"):
        stub.GetInstanceStatus(
            pb.InstanceStatusRequest(interface_id=provider.id, instance_id="i-nope"), metadata=md(admin_token)
        )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "instance_id is required"):
        stub.GetInstanceStatus(pb.InstanceStatusRequest(interface_id=provider.id), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.NOT_FOUND, "not found at provider"):
        stub.GetInstanceStatus(
            pb.InstanceStatusRequest(interface_id=broken.id, instance_id="x"), metadata=md(admin_token)
        )


def test_sync_and_import_upstream_instances(server: ServerProcess, stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_provider")
    items = stub.SyncUpstreamInstances(
        pb.SyncUpstreamInstancesRequest(interface_id=iface.id), metadata=md(admin_token)
    ).instances
    assert [(i.instance_id, i.status, i.ip_address) for i in items] == [
        ("up-1", "running", "198.51.100.7"),
        ("up-2", "stopped", ""),
    ]
    assert items[0].created_at == "2026-01-01T00:00:00Z"
    imported = stub.ImportUpstreamInstance(
        pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="up-1"), metadata=md(admin_token)
    )
    assert uuid.UUID(imported.instance_id) and imported.status == "running" and imported.ip_address == "198.51.100.7"
    with raises_code(grpc.StatusCode.ALREADY_EXISTS, "already imported"):
        stub.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="up-1"), metadata=md(admin_token)
        )
    with raises_code(grpc.StatusCode.NOT_FOUND, "does not exist"):
        stub.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="i-ghost"), metadata=md(admin_token)
        )
    rows = query_db(server.db_url, "SELECT origin FROM instances WHERE interface_id = :i", i=_db_uuid(server, iface.id))
    assert rows == [("imported",)]
    # an interface with local instances cannot be deleted (they would lose their link)
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "still has 1 local instance"):
        stub.DeletePluginInterface(pb.DeletePluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))


def test_upstream_balance(stub, provider, broken, admin_token: str) -> None:
    bal = stub.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=provider.id), metadata=md(admin_token))
    assert (bal.balance, bal.currency) == ("1234.56", "CNY")
    with raises_code(grpc.StatusCode.INTERNAL, "must be a finite amount"):
        stub.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=broken.id), metadata=md(admin_token))


def test_plugin_state_persists_per_interface(stub, admin_token: str) -> None:
    a = create_interface(stub, admin_token, "t_provider")
    b = create_interface(stub, admin_token, "t_provider")

    def act(iface, function: str, **args):  # type: ignore[no-untyped-def]
        req = pb.CallPluginActionRequest(interface_id=iface.id, function=function, args_json=json.dumps(args))
        return json.loads(stub.CallPluginAction(req, metadata=md(admin_token)).result_json)

    put = act(a, "admin_state_put", key="k", value={"amount": "1.50"})
    assert put == {"first": True, "all": {"k": {"amount": "1.50"}, "once:k": True}}
    assert act(a, "admin_state_get", key="k") == {"value": {"amount": "1.50"}, "once_again": False}
    assert act(b, "admin_state_get", key="k") == {"value": None, "once_again": True}  # per interface
    assert act(a, "admin_state_put", key="k", value=2)["first"] is False
    with raises_code(grpc.StatusCode.INTERNAL, "use the awaitable methods"):
        act(a, "admin_state_wrong")


def test_product_prices_are_stored_exactly(stub, admin_token: str) -> None:
    bump = "123456789.12345678"  # beyond a float's precision once added to the plan price
    iface = create_interface(stub, admin_token, "t_provider", json.dumps({"product_count": 1, "price_bump": bump}))
    req = product_pb2.SyncProductsRequest(interface_id=iface.id)
    assert stub.SyncProducts(req, metadata=md(admin_token)).products[0].price == "123456799.12345678"
    again = stub.SyncProducts(req, metadata=md(admin_token))
    assert again.unchanged == 1 and again.products[0].price == "123456799.12345678"


def test_an_order_that_times_out_is_kept_and_a_retry_settles_it(fresh_server: ServerProcess) -> None:
    """(The background reconciler is off here, so that the retry is what settles the order: see
    tests/test_reconciler.py for the reconciler.)"""
    from helpers import TEST_PLUGINS

    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    fresh_server.env["RUSTBILL_PLUGINS__TIMEOUTS"] = '{"create_instance": 1}'
    fresh_server.env["RUSTBILL_PLUGINS__RECONCILE_INTERVAL_SECONDS"] = "0"
    fresh_server.start()
    token, stub = fresh_server.token(), fresh_server.stub()
    iface = create_interface(stub, token, "t_provider", '{"sleep": 3}')
    spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10)
    meta = [*md(token), ("idempotency-key", "order-42")]
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        stub.CreateUpstreamInstance(pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=spec), metadata=meta)
    # the provider may have opened it: the order is not forgotten
    sql = "SELECT id, status, provider_instance_id FROM instances WHERE idempotency_key = 'order-42'"
    [(row_id, status, provider_id)] = query_db(fresh_server.db_url, sql)
    assert (status, provider_id) == ("unknown", None)
    stub.UpdatePluginInterface(pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json="{}"),
                               metadata=md(token))  # fmt: skip
    done = stub.CreateUpstreamInstance(pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=spec), metadata=meta)
    rows = query_db(fresh_server.db_url, sql)
    assert rows == [(row_id, "running", done.provider_instance_id)]  # the same order, settled; not a second one
    # find_instance said the first attempt opened nothing, so the retry asked the provider again with
    # the same request_id as the first attempt
    assert done.provider_instance_id == f"i-{str(uuid.UUID(str(row_id)))[-8:]}"
