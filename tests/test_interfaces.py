"""Plugin definitions and interfaces: every RPC's success and error paths."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest
from helpers import (
    ServerProcess,
    but_health,
    create_interface,
    md,
    new_uuid,
    plugin_def_id,
    raises_code,
    unique,
    write_db,
)

from rustbill.pb import common_pb2
from rustbill.pb import integration_pb2 as pb

GATEWAY_CONFIG = json.dumps({"api_url": "https://pay.example.com", "key": "xxx-secret"})


# ---------------------------------------------------------------- plugin definitions


def test_list_plugins_shows_the_shipped_plugins(stub, admin_token: str) -> None:
    plugins = {p.plugin_id: p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(admin_token)).plugins}
    types = {p.plugin_type for p in plugins.values()}
    assert types == {"first_party_provider", "upstream_provider", "gateway", "notifier"}
    demo = plugins["demo_cloud"]
    assert demo.version == "1.0.0" and demo.has_admin_page
    assert demo.created_at.endswith("Z") and demo.updated_at.endswith("Z")
    assert not plugins["t_notifier"].has_admin_page and plugins["t_notifier"].version == "0.0.0"


def test_list_plugins_filters_by_type(stub, admin_token: str) -> None:
    reply = stub.ListPlugins(pb.ListPluginsRequest(plugin_type="gateway"), metadata=md(admin_token))
    assert reply.plugins and {p.plugin_type for p in reply.plugins} == {"gateway"}
    assert "t_gateway" in {p.plugin_id for p in reply.plugins}


def test_list_plugins_unknown_type_is_invalid_argument(stub, admin_token: str) -> None:
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "plugin_type must be one of"):
        stub.ListPlugins(pb.ListPluginsRequest(plugin_type="payment"), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "plugin_type"):
        stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(plugin_type="x"), metadata=md(admin_token))


def test_get_plugin(stub, admin_token: str) -> None:
    pid = plugin_def_id(stub, admin_token, "t_gateway")
    got = stub.GetPlugin(pb.GetPluginRequest(id=pid), metadata=md(admin_token)).plugin
    assert got.id == pid and got.plugin_id == "t_gateway" and got.plugin_type == "gateway"
    with raises_code(grpc.StatusCode.NOT_FOUND, "not found"):
        stub.GetPlugin(pb.GetPluginRequest(id=new_uuid()), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "id is not a valid UUID"):
        stub.GetPlugin(pb.GetPluginRequest(id="0192a123-..."), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "id is required"):
        stub.GetPlugin(pb.GetPluginRequest(), metadata=md(admin_token))


# ---------------------------------------------------------------- create


def test_create_interface_fills_schema_version_and_admin_page(stub, admin_token: str) -> None:
    name = unique("易支付-生产")
    iface = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG, name=name)
    assert iface.display_name == name and iface.enabled and iface.plugin_id == "t_gateway"
    assert iface.plugin_type == "gateway" and iface.plugin_version == "0.0.0" and not iface.has_admin_page
    # the secret (format: password) is never shown back
    assert json.loads(iface.config_json) == {**json.loads(GATEWAY_CONFIG), "key": "********"}
    schema = json.loads(iface.config_schema)
    assert schema["required"] == ["api_url", "key"]
    # the reply comes before the first health check (which starts at once, in the background)
    assert not iface.is_healthy and not iface.HasField("last_check_at") and not iface.HasField("health_error")
    again = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
    assert but_health(again.interface) == but_health(iface)

    prov = create_interface(stub, admin_token, "demo_cloud")
    assert prov.plugin_version == "1.0.0" and prov.has_admin_page


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("{not json", r"config_json is not valid JSON"),
        ("[1, 2]", r"config_json must be a JSON object, not list"),
        ('"text"', r"must be a JSON object, not str"),
        ('{"api_url": "https://x"}', r"config_json\.key: is required"),
        ('{"api_url": "ftp://x", "key": "abcdef"}', r"config_json\.api_url: .*does not match"),
        ('{"api_url": "https://x", "key": 12345}', r"config_json\.key: "),
        ('{"api_url": "https://x", "key": "abc", "channels": ["alipay", "bitcoin"]}', r"config_json\.channels\[1\]"),
    ],
)
def test_create_interface_bad_config_is_invalid_argument_and_writes_nothing(
    stub, admin_token: str, config: str, match: str
) -> None:
    name = unique("bad")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, match):
        create_interface(stub, admin_token, "t_gateway", config, name=name)
    names = {
        i.display_name
        for i in stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(), metadata=md(admin_token)).interfaces
    }
    assert name not in names


def test_secret_values_are_not_echoed_in_validation_errors(stub, admin_token: str) -> None:
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"config_json\.key") as info:
        create_interface(stub, admin_token, "t_gateway", '{"api_url": "https://x", "key": "zq"}')
    assert "zq" not in info["details"]


def test_create_interface_errors(stub, admin_token: str) -> None:
    req = pb.CreatePluginInterfaceRequest(plugin_def_id=new_uuid(), display_name="x", config_json="{}")
    with raises_code(grpc.StatusCode.NOT_FOUND, "plugin definition"):
        stub.CreatePluginInterface(req, metadata=md(admin_token))
    req.plugin_def_id = "not-a-uuid"
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "plugin_def_id is not a valid UUID"):
        stub.CreatePluginInterface(req, metadata=md(admin_token))
    req.plugin_def_id = plugin_def_id(stub, admin_token, "t_notifier")
    req.display_name = "   "
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "display_name is required"):
        stub.CreatePluginInterface(req, metadata=md(admin_token))


def test_duplicate_display_name_per_plugin_is_already_exists(stub, admin_token: str) -> None:
    name = unique("dup")
    create_interface(stub, admin_token, "t_notifier", name=name)
    with raises_code(grpc.StatusCode.ALREADY_EXISTS, "already exists"):
        create_interface(stub, admin_token, "t_notifier", name=name)
    # the same name under another plugin is fine
    create_interface(stub, admin_token, "log_notifier", name=name)


# ---------------------------------------------------------------- get / list


def test_get_interface_errors(stub, admin_token: str) -> None:
    with raises_code(grpc.StatusCode.NOT_FOUND, "interface"):
        stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=new_uuid()), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "interface_id is not a valid UUID"):
        stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id="0192a123-..."), metadata=md(admin_token))


def test_list_interfaces_filters_by_type(stub, admin_token: str) -> None:
    gw = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG)
    nt = create_interface(stub, admin_token, "t_notifier")
    only_gw = stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(plugin_type="gateway"), metadata=md(admin_token))
    ids = {i.id for i in only_gw.interfaces}
    assert gw.id in ids and nt.id not in ids
    assert {i.plugin_type for i in only_gw.interfaces} == {"gateway"}
    every = {
        i.id for i in stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(), metadata=md(admin_token)).interfaces
    }
    assert {gw.id, nt.id} <= every


# ---------------------------------------------------------------- update / toggle / delete


def test_update_interface_config_and_name(stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG)
    time.sleep(0.01)
    new_config = json.dumps({"api_url": "https://pay2.example.com", "key": "yyy-secret"})
    new_name = unique("renamed")
    got = stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json=new_config, display_name=new_name),
        metadata=md(admin_token),
    ).interface
    assert json.loads(got.config_json) == {**json.loads(new_config), "key": "********"} and got.display_name == new_name
    assert got.updated_at > iface.updated_at and got.created_at == iface.created_at
    # only the name: config stays
    got2 = stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, display_name=new_name + "2"), metadata=md(admin_token)
    ).interface
    assert got2.config_json == got.config_json and got2.display_name == new_name + "2"


def test_update_interface_errors_write_nothing(stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG)
    other = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG)
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"config_json\.api_url: .*does not match"):
        stub.UpdatePluginInterface(
            pb.UpdatePluginInterfaceRequest(
                interface_id=iface.id, config_json='{"api_url": "ftp://x"}', display_name=unique("never")
            ),
            metadata=md(admin_token),
        )
    with raises_code(grpc.StatusCode.ALREADY_EXISTS):
        stub.UpdatePluginInterface(
            pb.UpdatePluginInterfaceRequest(
                interface_id=iface.id,
                display_name=other.display_name,
                config_json=json.dumps({"api_url": "https://changed", "key": "kkk"}),
            ),
            metadata=md(admin_token),
        )
    with raises_code(grpc.StatusCode.NOT_FOUND):
        stub.UpdatePluginInterface(
            pb.UpdatePluginInterfaceRequest(interface_id=new_uuid(), display_name="n"), metadata=md(admin_token)
        )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "interface_id"):
        stub.UpdatePluginInterface(pb.UpdatePluginInterfaceRequest(interface_id="zzz"), metadata=md(admin_token))
    after = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
    assert but_health(after.interface) == but_health(iface)  # nothing half-written


def test_toggle_interface(stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_notifier")
    off = stub.TogglePluginInterface(
        pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=False), metadata=md(admin_token)
    ).interface
    assert not off.enabled
    notifiers = stub.ListNotifiers(common_pb2.EmptyRequest(), metadata=md(admin_token)).notifiers
    assert iface.id not in {n.channel_id for n in notifiers}
    on = stub.TogglePluginInterface(
        pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=True), metadata=md(admin_token)
    ).interface
    assert on.enabled
    notifiers = stub.ListNotifiers(common_pb2.EmptyRequest(), metadata=md(admin_token)).notifiers
    assert iface.id in {n.channel_id for n in notifiers}
    with raises_code(grpc.StatusCode.NOT_FOUND):
        stub.TogglePluginInterface(
            pb.TogglePluginInterfaceRequest(interface_id=new_uuid(), enable=True), metadata=md(admin_token)
        )


def test_delete_interface(stub, admin_token: str) -> None:
    iface = create_interface(stub, admin_token, "t_notifier")
    stub.DeletePluginInterface(pb.DeletePluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.NOT_FOUND):
        stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.NOT_FOUND, "not found"):
        stub.DeletePluginInterface(pb.DeletePluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        stub.DeletePluginInterface(
            pb.DeletePluginInterfaceRequest(interface_id="0192a123-..."), metadata=md(admin_token)
        )
    # the name is free again
    create_interface(stub, admin_token, "t_notifier", name=iface.display_name)


# ---------------------------------------------------------------- listings


def test_list_providers_returns_enabled_providers_with_type_health_and_template(stub, admin_token: str) -> None:
    fp = create_interface(stub, admin_token, "t_provider", json.dumps({"regions": ["cn-east", "cn-north"]}))
    up = create_interface(stub, admin_token, "demo_upstream")
    off = create_interface(stub, admin_token, "demo_cloud")
    gw = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG)
    stub.TogglePluginInterface(
        pb.TogglePluginInterfaceRequest(interface_id=off.id, enable=False), metadata=md(admin_token)
    )
    check = stub.CheckPluginHealth
    health = {
        i.id: check(pb.CheckPluginHealthRequest(interface_id=i.id), metadata=md(admin_token)).is_healthy
        for i in (fp, up)
    }
    providers = {
        p.interface_id: p for p in stub.ListProviders(common_pb2.EmptyRequest(), metadata=md(admin_token)).providers
    }
    assert off.id not in providers and gw.id not in providers
    assert providers[fp.id].provider_type == "first_party" and providers[fp.id].provider_name == fp.display_name
    assert providers[up.id].provider_type == "upstream"
    assert providers[fp.id].is_healthy and health[fp.id]
    assert providers[up.id].is_healthy == health[up.id]  # as last checked
    tpl = providers[fp.id].spec_template
    assert [f.key for f in tpl.fields] == ["cpu_cores", "region"]
    assert list(tpl.fields[1].options) == ["cn-east", "cn-north"] and tpl.fields[0].max == 32
    assert tpl.groups[0].field_keys == ["cpu_cores"]
    assert len(providers[up.id].spec_template.fields) == 0  # demo_upstream has no spec_template

    # a config change shows up in the listing (cache evicted)
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=fp.id, config_json=json.dumps({"regions": ["eu"]})),
        metadata=md(admin_token),
    )
    providers = {
        p.interface_id: p for p in stub.ListProviders(common_pb2.EmptyRequest(), metadata=md(admin_token)).providers
    }
    assert list(providers[fp.id].spec_template.fields[1].options) == ["eu"]


def test_list_gateways_and_notifiers(stub, admin_token: str) -> None:
    gw = create_interface(stub, admin_token, "t_gateway", GATEWAY_CONFIG)
    nt = create_interface(stub, admin_token, "t_notifier")
    gws = {g.gateway_id: g for g in stub.ListGateways(common_pb2.EmptyRequest(), metadata=md(admin_token)).gateways}
    nts = {n.channel_id: n for n in stub.ListNotifiers(common_pb2.EmptyRequest(), metadata=md(admin_token)).notifiers}
    assert gws[gw.id].gateway_name == gw.display_name and nt.id not in gws
    assert nts[nt.id].channel_name == nt.display_name and gw.id not in nts


def test_listings_exactly_match_on_a_fresh_server(fresh_server: ServerProcess) -> None:
    from helpers import SHIPPED_PLUGINS

    for p in SHIPPED_PLUGINS.glob("*.py"):
        fresh_server.add_plugin(p)
    fresh_server.start()
    token, stub = fresh_server.token(), fresh_server.stub()
    assert list(stub.ListProviders(common_pb2.EmptyRequest(), metadata=md(token)).providers) == []
    a = create_interface(stub, token, "demo_cloud")
    b = create_interface(stub, token, "demo_upstream")
    g = create_interface(stub, token, "bank_memo", json.dumps({"account_name": "ACME", "iban": "DE0012345678"}))
    n = create_interface(stub, token, "log_notifier")
    assert [p.interface_id for p in stub.ListProviders(common_pb2.EmptyRequest(), metadata=md(token)).providers] == [
        a.id,
        b.id,
    ]
    assert [x.gateway_id for x in stub.ListGateways(common_pb2.EmptyRequest(), metadata=md(token)).gateways] == [g.id]
    assert [x.channel_id for x in stub.ListNotifiers(common_pb2.EmptyRequest(), metadata=md(token)).notifiers] == [n.id]


def test_a_bad_spec_template_does_not_break_the_listing(fresh_server: ServerProcess) -> None:
    fresh_server.plugins_dir.joinpath("bad_tpl.py").write_text(
        'PLUGIN_TYPE = "upstream_provider"\n'
        "def spec_template(config):\n"
        '    return {"fields": [{"key": "cpu", "display_order": 2**40}], "groups": [{"key": "g", "display_order": -1}]}\n'  # noqa: E501
    )
    fresh_server.start()
    token, stub = fresh_server.token(), fresh_server.stub()
    iface = create_interface(stub, token, "bad_tpl")
    providers = stub.ListProviders(common_pb2.EmptyRequest(), metadata=md(token)).providers
    assert [p.interface_id for p in providers] == [iface.id] and len(providers[0].spec_template.fields) == 0
    fresh_server.wait_for_log(r"spec_template failed: .*display_order' must be an integer from 0 to 4294967295")


def test_a_new_or_re_enabled_interface_is_checked_at_once(stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    """Not unhealthy until the next background round (300 s by default; off in the tests)."""

    def fetch() -> Any:
        return stub.GetPluginInterface(
            pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token)
        ).interface

    iface = create_interface(stub, admin_token, "demo_cloud", "{}")
    deadline = time.monotonic() + 10
    while not (got := fetch()).HasField("last_check_at") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.is_healthy and got.HasField("last_check_at")
    first = got.last_check_at
    for enable in (False, True):
        stub.TogglePluginInterface(
            pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=enable), metadata=md(admin_token)
        )
    deadline = time.monotonic() + 10
    while (got := fetch()).last_check_at == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.last_check_at > first and got.is_healthy and got.enabled


def test_plugin_defs_carry_schema_title_and_description(stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    plugins = {p.plugin_id: p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(admin_token)).plugins}
    kvm = plugins["kvm"]
    assert kvm.title.startswith("kvm — first-party provider: opens KVM virtual machines")
    assert "libvirt-python" in kvm.description and "``" not in kvm.description
    assert json.loads(kvm.config_schema)["type"] == "object"
    assert kvm.file_present and kvm.load_error == ""


def test_health_of_a_disabled_or_unreadable_interface(server: ServerProcess, stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    """Disabled: FAILED_PRECONDITION (the health check decides by the interface's state, not by an
    error's words). A stored config that cannot be read: unhealthy, with why (a background round
    used to drop that silently, and CheckPluginHealth answered INTERNAL)."""

    def toggle(enable: bool) -> None:
        req = pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=enable)
        stub.TogglePluginInterface(req, metadata=md(admin_token))

    def check() -> Any:
        req = pb.CheckPluginHealthRequest(interface_id=iface.id)
        return stub.CheckPluginHealth(req, metadata=md(admin_token))

    name = unique("unreadable")
    iface = create_interface(stub, admin_token, "demo_cloud", "{}", name=name)
    try:
        assert check().is_healthy
        toggle(False)
        with raises_code(grpc.StatusCode.FAILED_PRECONDITION, f"interface '{name}' is disabled"):
            check()
        sql = "UPDATE plugin_interfaces SET config_json = '{not json' WHERE display_name = :n"
        assert write_db(server.db_url, sql, n=name) == 1
        toggle(True)  # forgets the interface's cached binding: the stored row is read again
        got = check()
        assert not got.is_healthy and "is not valid JSON" in got.error, got
        stored = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
        assert not stored.interface.is_healthy and "is not valid JSON" in stored.interface.health_error
    finally:
        toggle(False)
        stub.DeletePluginInterface(pb.DeletePluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
