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


def test_customer_services_use_the_numbers_of_rustbill_clients() -> None:
    """ProductService, InstanceService, BalanceService and ApiKeyService as rustbill-wire.md has them
    (numbers beyond it are marked)."""
    from rustbill.pb import balance_pb2, downstream_pb2, instance_pb2, product_service_pb2

    def methods(module: object, name: str) -> list[str]:
        svc = module.DESCRIPTOR.services_by_name[name]  # type: ignore[attr-defined]
        return [f"{svc.full_name}/{m.name}" for m in svc.methods]

    assert methods(product_service_pb2, "ProductService") == [
        "rustbill.product.ProductService/ListProducts", "rustbill.product.ProductService/GetProduct",
    ]  # fmt: skip
    assert methods(instance_pb2, "InstanceService") == [
        "rustbill.instance.InstanceService/ListInstances", "rustbill.instance.InstanceService/GetInstance",
    ]  # fmt: skip
    assert methods(balance_pb2, "BalanceService")[0] == "rustbill.balance.BalanceService/GetBalance"
    assert methods(downstream_pb2, "ApiKeyService") == [
        "rustbill.downstream.ApiKeyService/CreateApiKey", "rustbill.downstream.ApiKeyService/ListApiKeys",
        "rustbill.downstream.ApiKeyService/RevokeApiKey",
    ]  # fmt: skip
    assert _numbers(common_pb2.PageRequest) == {"page": 1, "page_size": 2}
    assert _numbers(common_pb2.PageMeta) == {"total": 1, "page": 2, "page_size": 3, "total_pages": 4}
    assert common_pb2.PageMeta.DESCRIPTOR.fields_by_name["total"].type == 4  # uint64
    info = _numbers(product_pb2.ProductInfo)
    assert {k: v for k, v in info.items() if v <= 18} == {
        "id": 1, "name": 2, "description": 3, "price": 10, "provider_id": 11, "active": 13, "created_at": 14,
        "updated_at": 15, "specs": 16, "group_id": 17, "billing_cycles": 18,
    }  # fmt: skip
    assert _numbers(product_service_pb2.ListProductsRequest) == {
        "pagination": 1, "provider_id": 2, "region": 3, "is_active": 4, "search": 5, "group_id": 6,
    }  # fmt: skip
    assert _numbers(product_service_pb2.ListProductsResponse) == {"products": 1, "meta": 2}
    assert _numbers(instance_pb2.InstanceInfo) == {
        "id": 1, "order_id": 2, "customer_id": 3, "product_id": 4, "provider_id": 5, "provider_instance_id": 6,
        "status": 7, "ip_address": 8, "server_spec": 9, "product_name": 10, "created_at": 11, "updated_at": 12,
    }  # fmt: skip
    assert _numbers(instance_pb2.ListInstancesRequest) == {
        "pagination": 1, "customer_id": 2, "status": 3, "provider_id": 4,
        "order_id": 5,  # beyond the clients: what a reseller asks after a lost reply
    }  # fmt: skip
    assert _numbers(instance_pb2.ListInstancesResponse) == {"instances": 1, "meta": 2}
    assert _numbers(instance_pb2.GetInstanceRequest) == {"id": 1}
    assert _numbers(instance_pb2.GetInstanceResponse) == {"instance": 1}
    from google.protobuf import descriptor_pb2

    described = descriptor_pb2.DescriptorProto()
    instance_pb2.GetInstanceResponse.DESCRIPTOR.CopyToProto(described)
    assert [(r.start, r.end) for r in described.reserved_range] == [(2, 3), (3, 4)]  # sections, actions: free
    assert _numbers(balance_pb2.GetBalanceRequest) == {"customer_id": 1}
    assert _numbers(balance_pb2.GetBalanceResponse) == {
        "customer_id": 1, "balance": 2, "credit_limit": 3, "currency": 4,  # 4: beyond the clients
    }  # fmt: skip
    assert _numbers(downstream_pb2.CreateApiKeyRequest) == {
        "name": 1, "customer_id": 2, "expires_at": 3,  # 3: beyond the clients
    }  # fmt: skip
    assert _numbers(downstream_pb2.CreateApiKeyResponse) == {"api_key": 1, "key_prefix": 2, "id": 3}
    assert _numbers(downstream_pb2.ApiKeyInfo) == {
        "id": 1, "key_prefix": 2, "name": 3, "enabled": 4, "created_at": 5, "last_used_at": 6, "expires_at": 7,
    }  # fmt: skip
    assert _numbers(integration_pb2.UpstreamOrderResponse) == {
        "provider_instance_id": 1, "status": 2, "ip_address": 3, "instance_id": 4,  # 4: beyond the spec
    }  # fmt: skip
