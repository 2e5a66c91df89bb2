"""The generated code matches the .proto files, and the wire contract matches the spec."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from helpers import ROOT

from rustbill.pb import common_pb2, integration_pb2, order_pb2, product_pb2


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.generate(tmp_path)
    assert fresh, "nothing generated"
    committed = ROOT / "src" / "rustbill" / "pb"
    for f in fresh:
        mine = committed / f.name
        assert mine.exists(), f"{f.name} is not committed; run scripts/gen_proto.py"
        assert mine.read_text() == f.read_text(), f"{f.name} is stale; run scripts/gen_proto.py"


def test_service_has_the_22_rpcs_of_the_spec() -> None:
    svc = integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"]
    assert svc.full_name == "rustbill.integration.IntegrationService"
    assert [m.name for m in svc.methods] == [
        "ListProviders", "ListGateways", "ListNotifiers", "ListPlugins", "GetPlugin",
        "ListPluginInterfaces", "GetPluginInterface", "CreatePluginInterface", "UpdatePluginInterface",
        "TogglePluginInterface", "DeletePluginInterface", "CheckPluginHealth", "GetPluginAdminPage",
        "CallPluginAction", "RestartServer", "SyncProducts", "QueryPrice", "CreateUpstreamInstance",
        "GetInstanceStatus", "SyncUpstreamInstances", "ImportUpstreamInstance", "GetUpstreamBalance",
    ]  # fmt: skip
    assert svc.methods_by_name["ListProviders"].input_type.full_name == "rustbill.common.EmptyRequest"
    assert svc.methods_by_name["RestartServer"].output_type.full_name == "rustbill.common.EmptyResponse"
    assert svc.methods_by_name["SyncProducts"].input_type.full_name == "rustbill.product.SyncProductsRequest"


def _numbers(msg: object) -> dict[str, int]:
    return {f.name: f.number for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_field_numbers_follow_the_spec() -> None:
    assert _numbers(integration_pb2.PluginInterfaceInfo) == {
        "id": 1, "plugin_def_id": 2, "plugin_type": 3, "plugin_id": 4, "display_name": 5, "enabled": 6,
        "config_json": 7, "config_schema": 8, "created_at": 9, "updated_at": 10, "is_healthy": 11,
        "health_error": 12, "last_check_at": 13, "has_admin_page": 14, "plugin_version": 15,
    }  # fmt: skip
    assert _numbers(integration_pb2.PluginDef) == {
        "id": 1, "plugin_type": 2, "plugin_id": 3, "has_admin_page": 4, "created_at": 5, "updated_at": 6,
        "version": 7,
        # beyond the spec, at new numbers (the console's forms and catalog)
        "config_schema": 8, "title": 9, "description": 10, "load_error": 11, "file_present": 12,
    }  # fmt: skip
    assert _numbers(integration_pb2.ProviderInfo) == {
        "interface_id": 1, "provider_name": 2, "provider_type": 3, "is_healthy": 4, "spec_template": 5,
    }  # fmt: skip
    assert _numbers(integration_pb2.QueryPriceRequest) == {
        "interface_id": 1, "cpu_cores": 2, "memory_gb": 3, "disk_gb": 4, "bandwidth_mbps": 5, "region": 6,
        "os": 7, "extra_specs": 8,
    }  # fmt: skip
    assert _numbers(order_pb2.ServerSpec) == {
        "cpu_cores": 1, "memory_gb": 2, "disk_gb": 3, "bandwidth_mbps": 4, "region": 5, "os": 6, "extra_specs": 7,
    }  # fmt: skip
    assert _numbers(product_pb2.SpecTemplate) == {"fields": 1, "groups": 2}
    assert _numbers(product_pb2.SpecField) == {
        "key": 1, "label": 2, "field_type": 3, "required": 4, "display_order": 5, "options": 6, "min": 7,
        "max": 8, "default_value": 9,
    }  # fmt: skip
    assert _numbers(integration_pb2.CheckPluginHealthResponse) == {"is_healthy": 1, "error": 2, "checked_at": 3}
    assert _numbers(integration_pb2.UpstreamInstanceItem) == {
        "instance_id": 1, "status": 2, "ip_address": 3, "created_at": 4,
    }  # fmt: skip
    assert not _numbers(common_pb2.EmptyRequest)


def test_optional_fields_have_presence() -> None:
    assert integration_pb2.ListPluginsRequest.DESCRIPTOR.fields_by_name["plugin_type"].has_presence
    upd = integration_pb2.UpdatePluginInterfaceRequest.DESCRIPTOR.fields_by_name
    assert upd["config_json"].has_presence and upd["display_name"].has_presence
    info = integration_pb2.PluginInterfaceInfo.DESCRIPTOR.fields_by_name
    assert info["health_error"].has_presence and info["last_check_at"].has_presence


def test_identity_numbers_are_those_of_rustbill_clients() -> None:
    from rustbill.pb import identity_pb2

    svc = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
    assert svc.full_name == "rustbill.identity.IdentityService"
    assert _numbers(identity_pb2.LoginRequest) == {"username": 1, "password": 2, "user_type": 3}
    assert _numbers(identity_pb2.LoginResponse) == {
        "access_token": 1, "refresh_token": 2, "expires_in": 3, "user": 4, "admin_path": 5,
    }  # fmt: skip
    assert _numbers(identity_pb2.UserInfo) == {
        "id": 1, "username": 2, "email": 3, "display_name": 4, "role": 5, "is_active": 6, "created_at": 7,
        "user_type": 8, "customer_id": 9,
    }  # fmt: skip
    assert _numbers(identity_pb2.GetMeResponse) == {"user": 1}
    assert identity_pb2.LoginResponse.DESCRIPTOR.fields_by_name["expires_in"].type == 3  # int64
