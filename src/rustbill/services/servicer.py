"""IntegrationServicer: thin adapters from the 22 RPCs to the domain layer."""

from __future__ import annotations

from typing import Any

from grpc import aio

from ..domain import Catalog, HealthService, Providers
from ..ids import parse_uuid, rfc3339
from ..pb import common_pb2, integration_pb2_grpc, product_pb2
from ..pb import integration_pb2 as pb
from . import convert
from .edge import current_principal, rpc

__all__ = ["IntegrationServicer"]

Ctx = aio.ServicerContext


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


class IntegrationServicer(integration_pb2_grpc.IntegrationServiceServicer):
    def __init__(self, catalog: Catalog, providers: Providers, health: HealthService, restart: Any) -> None:
        self._catalog = catalog
        self._providers = providers
        self._health = health
        self._restart = restart
        # The providers listing is cached by the catalog; its encoded reply is kept alongside.
        self._providers_reply: tuple[object, pb.ListProvidersResponse] | None = None

    # ---- listings ----

    @rpc
    async def ListProviders(self, request: common_pb2.EmptyRequest, context: Ctx) -> pb.ListProvidersResponse:
        entries = await self._catalog.providers()
        memo = self._providers_reply
        if memo is not None and memo[0] is entries:
            return memo[1]
        reply = pb.ListProvidersResponse(providers=[convert.provider_info(e) for e in entries])
        self._providers_reply = (entries, reply)
        return reply

    @rpc
    async def ListGateways(self, request: common_pb2.EmptyRequest, context: Ctx) -> pb.ListGatewaysResponse:
        entries = await self._catalog.channels("gateway")
        return pb.ListGatewaysResponse(gateways=[convert.gateway_info(e) for e in entries])

    @rpc
    async def ListNotifiers(self, request: common_pb2.EmptyRequest, context: Ctx) -> pb.ListNotifiersResponse:
        entries = await self._catalog.channels("notifier")
        return pb.ListNotifiersResponse(notifiers=[convert.notifier_info(e) for e in entries])

    # ---- plugin definitions ----

    @rpc
    async def ListPlugins(self, request: pb.ListPluginsRequest, context: Ctx) -> pb.ListPluginsResponse:
        rows = await self._catalog.list_plugins(_opt(request, "plugin_type"))
        return pb.ListPluginsResponse(plugins=[convert.plugin_def(p) for p in rows])

    @rpc
    async def GetPlugin(self, request: pb.GetPluginRequest, context: Ctx) -> pb.GetPluginResponse:
        row = await self._catalog.get_plugin(parse_uuid(request.id, "id"))
        return pb.GetPluginResponse(plugin=convert.plugin_def(row))

    # ---- interfaces ----

    @rpc
    async def ListPluginInterfaces(
        self, request: pb.ListPluginInterfacesRequest, context: Ctx
    ) -> pb.ListPluginInterfacesResponse:
        rows = await self._catalog.list_interfaces(_opt(request, "plugin_type"))
        return pb.ListPluginInterfacesResponse(interfaces=[convert.interface_info(i) for i in rows])

    @rpc
    async def GetPluginInterface(
        self, request: pb.GetPluginInterfaceRequest, context: Ctx
    ) -> pb.GetPluginInterfaceResponse:
        row = await self._catalog.get_interface(parse_uuid(request.interface_id, "interface_id"))
        return pb.GetPluginInterfaceResponse(interface=convert.interface_info(row))

    @rpc
    async def CreatePluginInterface(
        self, request: pb.CreatePluginInterfaceRequest, context: Ctx
    ) -> pb.CreatePluginInterfaceResponse:
        row = await self._catalog.create_interface(
            parse_uuid(request.plugin_def_id, "plugin_def_id"), request.display_name, request.config_json
        )
        return pb.CreatePluginInterfaceResponse(interface=convert.interface_info(row))

    @rpc
    async def UpdatePluginInterface(
        self, request: pb.UpdatePluginInterfaceRequest, context: Ctx
    ) -> pb.UpdatePluginInterfaceResponse:
        row = await self._catalog.update_interface(
            parse_uuid(request.interface_id, "interface_id"),
            config_json=_opt(request, "config_json"),
            display_name=_opt(request, "display_name"),
        )
        return pb.UpdatePluginInterfaceResponse(interface=convert.interface_info(row))

    @rpc
    async def TogglePluginInterface(
        self, request: pb.TogglePluginInterfaceRequest, context: Ctx
    ) -> pb.TogglePluginInterfaceResponse:
        row = await self._catalog.toggle_interface(parse_uuid(request.interface_id, "interface_id"), request.enable)
        return pb.TogglePluginInterfaceResponse(interface=convert.interface_info(row))

    @rpc
    async def DeletePluginInterface(
        self, request: pb.DeletePluginInterfaceRequest, context: Ctx
    ) -> pb.DeletePluginInterfaceResponse:
        await self._catalog.delete_interface(parse_uuid(request.interface_id, "interface_id"))
        return pb.DeletePluginInterfaceResponse()

    # ---- health, admin page, actions ----

    @rpc
    async def CheckPluginHealth(
        self, request: pb.CheckPluginHealthRequest, context: Ctx
    ) -> pb.CheckPluginHealthResponse:
        result = await self._health.check(parse_uuid(request.interface_id, "interface_id"))
        reply = pb.CheckPluginHealthResponse(is_healthy=result.is_healthy, checked_at=rfc3339(result.checked_at))
        if result.error is not None:
            reply.error = result.error
        return reply

    @rpc
    async def GetPluginAdminPage(
        self, request: pb.GetPluginAdminPageRequest, context: Ctx
    ) -> pb.GetPluginAdminPageResponse:
        html, title = await self._providers.admin_page(parse_uuid(request.interface_id, "interface_id"))
        return pb.GetPluginAdminPageResponse(html_content=html, title=title)

    @rpc
    async def CallPluginAction(self, request: pb.CallPluginActionRequest, context: Ctx) -> pb.CallPluginActionResponse:
        result = await self._providers.call_action(
            parse_uuid(request.interface_id, "interface_id"), request.function, request.args_json
        )
        return pb.CallPluginActionResponse(result_json=result)

    @rpc
    async def RestartServer(self, request: common_pb2.EmptyRequest, context: Ctx) -> common_pb2.EmptyResponse:
        self._restart()
        return common_pb2.EmptyResponse()

    # ---- providers ----

    @rpc
    async def SyncProducts(
        self, request: product_pb2.SyncProductsRequest, context: Ctx
    ) -> product_pb2.SyncProductsResponse:
        result = await self._providers.sync_products(parse_uuid(request.interface_id, "interface_id"))
        return product_pb2.SyncProductsResponse(
            created=result.created,
            updated=result.updated,
            deactivated=result.deactivated,
            unchanged=result.unchanged,
            products=[convert.product_info(p) for p in result.products],
        )

    @rpc
    async def QueryPrice(self, request: pb.QueryPriceRequest, context: Ctx) -> pb.QueryPriceResponse:
        spec = _spec(request)
        price = await self._providers.query_price(parse_uuid(request.interface_id, "interface_id"), spec)
        return pb.QueryPriceResponse(**price)

    @rpc
    async def CreateUpstreamInstance(self, request: pb.UpstreamOrderRequest, context: Ctx) -> pb.UpstreamOrderResponse:
        spec = _spec(request.server_spec)
        key = None
        for k, v in context.invocation_metadata() or ():
            if k == "idempotency-key":
                key = v if isinstance(v, str) else v.decode()
        principal = current_principal()
        inst = await self._providers.create_instance(
            parse_uuid(request.interface_id, "interface_id"),
            spec,
            has_spec=request.HasField("server_spec"),
            idempotency_key=key,
            customer_id=principal.user_id if principal else None,
        )
        return pb.UpstreamOrderResponse(
            provider_instance_id=inst.provider_instance_id, status=inst.status, ip_address=inst.ip_address
        )

    @rpc
    async def GetInstanceStatus(self, request: pb.InstanceStatusRequest, context: Ctx) -> pb.InstanceStatusResponse:
        st = await self._providers.instance_status(
            parse_uuid(request.interface_id, "interface_id"), request.instance_id
        )
        return pb.InstanceStatusResponse(status=st["status"], ip_address=st["ip_address"])

    @rpc
    async def SyncUpstreamInstances(
        self, request: pb.SyncUpstreamInstancesRequest, context: Ctx
    ) -> pb.SyncUpstreamInstancesResponse:
        items = await self._providers.upstream_instances(parse_uuid(request.interface_id, "interface_id"))
        return pb.SyncUpstreamInstancesResponse(instances=[pb.UpstreamInstanceItem(**i) for i in items])

    @rpc
    async def ImportUpstreamInstance(
        self, request: pb.ImportUpstreamInstanceRequest, context: Ctx
    ) -> pb.ImportUpstreamInstanceResponse:
        inst = await self._providers.import_instance(
            parse_uuid(request.interface_id, "interface_id"), request.instance_id
        )
        return pb.ImportUpstreamInstanceResponse(
            instance_id=str(inst.id), status=inst.status, ip_address=inst.ip_address
        )

    @rpc
    async def GetUpstreamBalance(
        self, request: pb.GetUpstreamBalanceRequest, context: Ctx
    ) -> pb.GetUpstreamBalanceResponse:
        bal = await self._providers.balance(parse_uuid(request.interface_id, "interface_id"))
        return pb.GetUpstreamBalanceResponse(**bal)
