"""Domain objects → protobuf messages. The stored rows never go out as they are."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from ..db import PluginInterface, Product
from ..domain.catalog import ChannelEntry, PluginInfo, ProviderEntry
from ..domain.providers import ProductRecord
from ..ids import rfc3339
from ..pb import integration_pb2 as pb
from ..pb import product_pb2 as product_pb
from ..vault import mask, secret_paths

__all__ = [
    "gateway_info",
    "interface_info",
    "money_text",
    "notifier_info",
    "plugin_def",
    "product_info",
    "provider_info",
    "spec_template",
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


def money_text(d: Decimal) -> str:
    """A stored amount with at least two decimals and no trailing zeros beyond them
    (``12.50000000`` → ``12.50``, ``0.12500000`` → ``0.125``)."""
    d = d.normalize()
    if d.as_tuple().exponent > -2:  # type: ignore[operator]
        d = d.quantize(Decimal("0.01"))
    return format(d, "f")
