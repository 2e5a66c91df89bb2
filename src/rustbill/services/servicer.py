"""IntegrationServicer: thin adapters from the 22 RPCs to the domain layer (any edge: see dispatch)."""

from __future__ import annotations

import logging
from typing import Any

from ..domain import Catalog, HealthService, Providers
from ..domain.orders import OrderRequest, Orders
from ..ids import parse_uuid, rfc3339
from ..pb import common_pb2, product_pb2
from ..pb import integration_pb2 as pb
from . import convert
from .dispatch import Call

__all__ = ["IntegrationServicer"]

audit = logging.getLogger("rustbill.audit")


def _who(call: Call) -> str:
    return call.principal.username if call.principal is not None else "-"


Ctx = Call


def _spec(msg: Any) -> dict[str, Any]:
    """A ServerSpec (or the same fields of QueryPriceRequest) as the dict plugins receive."""
    return {
        "cpu_cores": msg.cpu_cores,
        "memory_gb": msg.memory_gb,
        "disk_gb": msg.disk_gb,
        "bandwidth_mbps": msg.bandwidth_mbps,
        "region": msg.region,
        "os": msg.os,
        "extra_specs": dict(msg.extra_specs),
    }


def _opt(msg: Any, field: str) -> Any:
    return getattr(msg, field) if msg.HasField(field) else None


class IntegrationServicer:
    def __init__(
        self, catalog: Catalog, providers: Providers, orders: Orders, health: HealthService, restart: Any
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._orders = orders
        self._health = health
        self._restart = restart
        # The providers listing is cached by the catalog; its encoded reply is kept alongside.
        self._providers_reply: tuple[object, pb.ListProvidersResponse] | None = None

    # ---- listings ----

    async def ListProviders(self, request: common_pb2.EmptyRequest, call: Ctx) -> pb.ListProvidersResponse:
        entries = await self._catalog.providers()
        memo = self._providers_reply
        if memo is not None and memo[0] is entries:
            return memo[1]
        reply = pb.ListProvidersResponse(providers=[convert.provider_info(e) for e in entries])
        self._providers_reply = (entries, reply)
        return reply

    async def ListGateways(self, request: common_pb2.EmptyRequest, call: Ctx) -> pb.ListGatewaysResponse:
        entries = await self._catalog.channels("gateway")
        return pb.ListGatewaysResponse(gateways=[convert.gateway_info(e) for e in entries])

    async def ListNotifiers(self, request: common_pb2.EmptyRequest, call: Ctx) -> pb.ListNotifiersResponse:
        entries = await self._catalog.channels("notifier")
        return pb.ListNotifiersResponse(notifiers=[convert.notifier_info(e) for e in entries])

    # ---- plugin definitions ----

    async def ListPlugins(self, request: pb.ListPluginsRequest, call: Ctx) -> pb.ListPluginsResponse:
        rows = await self._catalog.list_plugins(_opt(request, "plugin_type"))
        return pb.ListPluginsResponse(plugins=[convert.plugin_def(p) for p in rows])

    async def GetPlugin(self, request: pb.GetPluginRequest, call: Ctx) -> pb.GetPluginResponse:
        row = await self._catalog.get_plugin(parse_uuid(request.id, "id"))
        return pb.GetPluginResponse(plugin=convert.plugin_def(row))

    # ---- interfaces ----

    async def ListPluginInterfaces(
        self, request: pb.ListPluginInterfacesRequest, call: Ctx
    ) -> pb.ListPluginInterfacesResponse:
        rows = await self._catalog.list_interfaces(_opt(request, "plugin_type"))
        return pb.ListPluginInterfacesResponse(interfaces=[convert.interface_info(i) for i in rows])

    async def GetPluginInterface(
        self, request: pb.GetPluginInterfaceRequest, call: Ctx
    ) -> pb.GetPluginInterfaceResponse:
        row = await self._catalog.get_interface(parse_uuid(request.interface_id, "interface_id"))
        return pb.GetPluginInterfaceResponse(interface=convert.interface_info(row))

    async def CreatePluginInterface(
        self, request: pb.CreatePluginInterfaceRequest, call: Ctx
    ) -> pb.CreatePluginInterfaceResponse:
        row = await self._catalog.create_interface(
            parse_uuid(request.plugin_def_id, "plugin_def_id"), request.display_name, request.config_json
        )
        self._health.check_soon(row.id)
        audit.info("interface created: %r (%s) plugin=%s by %s", row.display_name, row.id, row.plugin_id, _who(call))
        return pb.CreatePluginInterfaceResponse(interface=convert.interface_info(row))

    async def UpdatePluginInterface(
        self, request: pb.UpdatePluginInterfaceRequest, call: Ctx
    ) -> pb.UpdatePluginInterfaceResponse:
        row = await self._catalog.update_interface(
            parse_uuid(request.interface_id, "interface_id"),
            config_json=_opt(request, "config_json"),
            display_name=_opt(request, "display_name"),
        )
        what = " and ".join(f for f in ("config_json", "display_name") if request.HasField(f)) or "nothing"
        audit.info("interface updated (%s): %r (%s) by %s", what, row.display_name, row.id, _who(call))
        return pb.UpdatePluginInterfaceResponse(interface=convert.interface_info(row))

    async def TogglePluginInterface(
        self, request: pb.TogglePluginInterfaceRequest, call: Ctx
    ) -> pb.TogglePluginInterfaceResponse:
        row = await self._catalog.toggle_interface(parse_uuid(request.interface_id, "interface_id"), request.enable)
        if request.enable:
            self._health.check_soon(row.id)
        state = "enabled" if request.enable else "disabled"
        audit.info("interface %s: %r (%s) by %s", state, row.display_name, row.id, _who(call))
        return pb.TogglePluginInterfaceResponse(interface=convert.interface_info(row))

    async def DeletePluginInterface(
        self, request: pb.DeletePluginInterfaceRequest, call: Ctx
    ) -> pb.DeletePluginInterfaceResponse:
        iid = parse_uuid(request.interface_id, "interface_id")
        name = (await self._catalog.get_interface(iid)).display_name
        await self._catalog.delete_interface(iid)
        audit.info("interface deleted: %r (%s) by %s", name, iid, _who(call))
        return pb.DeletePluginInterfaceResponse()

    # ---- health, admin page, actions ----

    async def CheckPluginHealth(self, request: pb.CheckPluginHealthRequest, call: Ctx) -> pb.CheckPluginHealthResponse:
        result = await self._health.check(parse_uuid(request.interface_id, "interface_id"))
        reply = pb.CheckPluginHealthResponse(is_healthy=result.is_healthy, checked_at=rfc3339(result.checked_at))
        if result.error is not None:
            reply.error = result.error
        return reply

    async def GetPluginAdminPage(
        self, request: pb.GetPluginAdminPageRequest, call: Ctx
    ) -> pb.GetPluginAdminPageResponse:
        html, title = await self._providers.admin_page(parse_uuid(request.interface_id, "interface_id"))
        return pb.GetPluginAdminPageResponse(html_content=html, title=title)

    async def CallPluginAction(self, request: pb.CallPluginActionRequest, call: Ctx) -> pb.CallPluginActionResponse:
        result = await self._providers.call_action(
            parse_uuid(request.interface_id, "interface_id"), request.function, request.args_json
        )
        return pb.CallPluginActionResponse(result_json=result)

    async def RestartServer(self, request: common_pb2.EmptyRequest, call: Ctx) -> common_pb2.EmptyResponse:
        audit.info("restart requested by %s (peer %s)", _who(call), call.peer or "?")
        self._restart()
        return common_pb2.EmptyResponse()

    # ---- providers ----

    async def SyncProducts(
        self, request: product_pb2.SyncProductsRequest, call: Ctx
    ) -> product_pb2.SyncProductsResponse:
        result = await self._providers.sync_products(parse_uuid(request.interface_id, "interface_id"))
        return product_pb2.SyncProductsResponse(
            created=result.created,
            updated=result.updated,
            deactivated=result.deactivated,
            unchanged=result.unchanged,
            products=[convert.product_info(p) for p in result.products],
        )

    async def QueryPrice(self, request: pb.QueryPriceRequest, call: Ctx) -> pb.QueryPriceResponse:
        spec = _spec(request)
        price = await self._providers.query_price(parse_uuid(request.interface_id, "interface_id"), spec)
        return convert.price(price)

    async def CreateUpstreamInstance(self, request: pb.UpstreamOrderRequest, call: Ctx) -> pb.UpstreamOrderResponse:
        spec = _spec(request.server_spec)
        inst = await self._orders.create(
            OrderRequest(
                interface_id=parse_uuid(request.interface_id, "interface_id"),
                spec=spec,
                has_spec=request.HasField("server_spec"),
                idempotency_key=call.metadata.get("idempotency-key"),
                principal=call.principal,
                max_price=call.metadata.get("max-price"),
            )
        )
        return convert.order_reply(inst)

    async def GetInstanceStatus(self, request: pb.InstanceStatusRequest, call: Ctx) -> pb.InstanceStatusResponse:
        interface_id = parse_uuid(request.interface_id, "interface_id")
        return convert.status_reply(await self._providers.instance_status(interface_id, request.instance_id))

    async def SyncUpstreamInstances(
        self, request: pb.SyncUpstreamInstancesRequest, call: Ctx
    ) -> pb.SyncUpstreamInstancesResponse:
        items = await self._providers.upstream_instances(parse_uuid(request.interface_id, "interface_id"))
        return pb.SyncUpstreamInstancesResponse(instances=[convert.upstream_instance(i) for i in items])

    async def ImportUpstreamInstance(
        self, request: pb.ImportUpstreamInstanceRequest, call: Ctx
    ) -> pb.ImportUpstreamInstanceResponse:
        interface_id = parse_uuid(request.interface_id, "interface_id")
        return convert.imported_instance(await self._providers.import_instance(interface_id, request.instance_id))

    async def GetUpstreamBalance(
        self, request: pb.GetUpstreamBalanceRequest, call: Ctx
    ) -> pb.GetUpstreamBalanceResponse:
        bal = await self._providers.balance(parse_uuid(request.interface_id, "interface_id"))
        return convert.upstream_balance(bal)
