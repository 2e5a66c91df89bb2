"""Domain objects → protobuf messages. The stored rows never go out as they are."""

from __future__ import annotations

import json
from typing import Any

from ..db import ApiKey, BalanceTransaction, Instance, PluginInterface, Product
from ..domain.catalog import ChannelEntry, PluginInfo, ProviderEntry
from ..domain.ledger import BalanceView
from ..domain.paging import PageMeta
from ..domain.providers import ProductRecord
from ..ids import rfc3339
from ..money import money_text
from ..pb import balance_pb2, common_pb2, downstream_pb2, instance_pb2
from ..pb import integration_pb2 as pb
from ..pb import product_pb2 as product_pb
from ..plugins.contract import Price, ProviderInstance, UpstreamBalance
from ..vault import mask, secret_paths

__all__ = [
    "api_key_info",
    "balance",
    "balance_transaction",
    "gateway_info",
    "imported_instance",
    "instance_info",
    "interface_info",
    "money_text",
    "notifier_info",
    "order_reply",
    "page_meta",
    "plugin_def",
    "price",
    "product_info",
    "provider_info",
    "spec_template",
    "status_reply",
    "upstream_balance",
    "upstream_instance",
]


def plugin_def(info: PluginInfo) -> pb.PluginDef:
    p = info.row
    return pb.PluginDef(
        id=str(p.id),
        plugin_type=p.plugin_type,
        plugin_id=p.plugin_id,
        has_admin_page=p.has_admin_page,
        created_at=rfc3339(p.created_at),
        updated_at=rfc3339(p.updated_at),
        version=p.version,
        config_schema=json.dumps(info.config_schema, ensure_ascii=False) if info.config_schema is not None else "",
        title=info.title,
        description=info.description,
        load_error=info.load_error,
        file_present=p.file_present,
    )


def shown_config(config_json: str, config_schema: str) -> str:
    """The stored config as callers see it: every secret field is ``vault.PLACEHOLDER``."""
    try:
        paths = secret_paths(json.loads(config_schema or "{}"))
        if not paths:
            return config_json
        return json.dumps(mask(json.loads(config_json or "{}"), paths), ensure_ascii=False)
    except ValueError:
        return "{}"


def interface_info(i: PluginInterface) -> pb.PluginInterfaceInfo:
    msg = pb.PluginInterfaceInfo(
        id=str(i.id),
        plugin_def_id=str(i.plugin_def_id),
        plugin_type=i.plugin_type,
        plugin_id=i.plugin_id,
        display_name=i.display_name,
        enabled=i.enabled,
        config_json=shown_config(i.config_json, i.config_schema),
        config_schema=i.config_schema,
        created_at=rfc3339(i.created_at),
        updated_at=rfc3339(i.updated_at),
        is_healthy=i.is_healthy,
        has_admin_page=i.has_admin_page,
        plugin_version=i.plugin_version,
    )
    if i.health_error is not None:
        msg.health_error = i.health_error
    if i.last_check_at is not None:
        msg.last_check_at = rfc3339(i.last_check_at)
    return msg


def spec_template(t: dict[str, Any]) -> product_pb.SpecTemplate:
    return product_pb.SpecTemplate(
        fields=[product_pb.SpecField(**f) for f in t.get("fields", [])],
        groups=[product_pb.SpecGroup(**g) for g in t.get("groups", [])],
    )


def provider_info(e: ProviderEntry) -> pb.ProviderInfo:
    return pb.ProviderInfo(
        interface_id=str(e.interface_id),
        provider_name=e.name,
        provider_type=e.provider_type,
        is_healthy=e.is_healthy,
        spec_template=spec_template(e.spec_template),
    )


def gateway_info(e: ChannelEntry) -> pb.GatewayInfo:
    return pb.GatewayInfo(gateway_id=str(e.interface_id), gateway_name=e.name, is_healthy=e.is_healthy)


def notifier_info(e: ChannelEntry) -> pb.NotifierInfo:
    return pb.NotifierInfo(channel_id=str(e.interface_id), channel_name=e.name, is_healthy=e.is_healthy)


def product_info(p: Product | ProductRecord) -> product_pb.ProductInfo:
    return product_pb.ProductInfo(
        id=str(p.id),
        name=p.name,
        description=p.description,
        price=money_text(p.price),
        provider_id=str(p.interface_id),
        active=p.active,
        created_at=rfc3339(p.created_at),
        updated_at=rfc3339(p.updated_at),
        specs=p.specs or {},
        group_id=p.group_id,
        billing_cycles=p.billing_cycles or {},
        upstream_product_id=p.upstream_product_id,
        currency=p.currency,
    )


def page_meta(m: PageMeta) -> common_pb2.PageMeta:
    return common_pb2.PageMeta(total=m.total, page=m.page, page_size=m.page_size, total_pages=m.total_pages)


def instance_info(i: Instance) -> instance_pb2.InstanceInfo:
    spec = i.server_spec or {}
    shown = {str(k): str(v) for k, v in (spec.get("extra_specs") or {}).items()}
    shown.update({k: str(v) for k, v in spec.items() if k != "extra_specs"})
    return instance_pb2.InstanceInfo(
        id=str(i.id),
        order_id=i.idempotency_key or "",
        customer_id=str(i.customer_id) if i.customer_id is not None else "",
        provider_id=str(i.interface_id),
        provider_instance_id=i.provider_instance_id or "",
        status=i.status,
        ip_address=i.ip_address,
        server_spec=shown,
        created_at=rfc3339(i.created_at),
        updated_at=rfc3339(i.updated_at),
    )


def balance(b: BalanceView) -> balance_pb2.GetBalanceResponse:
    return balance_pb2.GetBalanceResponse(
        customer_id=str(b.customer_id),
        balance=money_text(b.balance),
        credit_limit=money_text(b.credit_limit),
        currency=b.currency,
    )


def balance_transaction(t: BalanceTransaction) -> balance_pb2.BalanceTransaction:
    return balance_pb2.BalanceTransaction(
        id=str(t.id),
        customer_id=str(t.customer_id),
        amount=money_text(t.amount),
        balance_after=money_text(t.balance_after),
        kind=t.kind,
        instance_id=str(t.instance_id) if t.instance_id is not None else "",
        note=t.note,
        created_by=t.created_by,
        created_at=rfc3339(t.created_at),
    )


def api_key_info(k: ApiKey) -> downstream_pb2.ApiKeyInfo:
    return downstream_pb2.ApiKeyInfo(
        id=str(k.id),
        key_prefix=k.key_prefix,
        name=k.name,
        enabled=k.revoked_at is None,
        created_at=rfc3339(k.created_at),
        last_used_at=rfc3339(k.last_used_at),
        expires_at=rfc3339(k.expires_at),
    )


# ---- what the provider RPCs answer: the checked plugin results and the local instance rows


def price(p: Price) -> pb.QueryPriceResponse:
    return pb.QueryPriceResponse(amount=p["amount"], currency=p["currency"], billing_cycle=p["billing_cycle"])


def upstream_balance(b: UpstreamBalance) -> pb.GetUpstreamBalanceResponse:
    return pb.GetUpstreamBalanceResponse(balance=b["balance"], currency=b["currency"])


def status_reply(st: ProviderInstance) -> pb.InstanceStatusResponse:
    return pb.InstanceStatusResponse(status=st["status"], ip_address=st["ip_address"])


def upstream_instance(i: ProviderInstance) -> pb.UpstreamInstanceItem:
    return pb.UpstreamInstanceItem(
        instance_id=i["instance_id"], status=i["status"], ip_address=i["ip_address"], created_at=i["created_at"]
    )


def order_reply(inst: Instance) -> pb.UpstreamOrderResponse:
    return pb.UpstreamOrderResponse(
        provider_instance_id=inst.provider_instance_id,
        status=inst.status,
        ip_address=inst.ip_address,
        instance_id=str(inst.id),
    )


def imported_instance(inst: Instance) -> pb.ImportUpstreamInstanceResponse:
    return pb.ImportUpstreamInstanceResponse(instance_id=str(inst.id), status=inst.status, ip_address=inst.ip_address)
