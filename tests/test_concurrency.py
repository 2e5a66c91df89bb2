"""Races decided by database constraints: exactly one winner."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from helpers import ServerProcess, create_interface, md, plugin_def_id, unique

from rustbill.pb import integration_pb2 as pb
from rustbill.pb import integration_pb2_grpc


async def _race(server: ServerProcess, calls: int, make_call) -> Counter[str]:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = integration_pb2_grpc.IntegrationServiceStub(channel)

        async def one() -> str:
            try:
                await make_call(stub)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        return Counter(await asyncio.gather(*(one() for _ in range(calls))))


async def test_50_concurrent_creates_with_one_name(server: ServerProcess, admin_token: str) -> None:
    stub = server.stub()
    req = pb.CreatePluginInterfaceRequest(
        plugin_def_id=plugin_def_id(stub, admin_token, "t_notifier"), display_name=unique("race"), config_json="{}"
    )
    outcome = await _race(server, 50, lambda s: s.CreatePluginInterface(req, metadata=md(admin_token), timeout=60))
    assert outcome == Counter({"OK": 1, "ALREADY_EXISTS": 49})
    listed = stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(plugin_type="notifier"), metadata=md(admin_token))
    assert [i.display_name for i in listed.interfaces].count(req.display_name) == 1


async def test_50_concurrent_imports_of_one_instance(server: ServerProcess, admin_token: str) -> None:
    iface = create_interface(server.stub(), admin_token, "t_provider")
    req = pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id="up-" + unique("race"))
    outcome = await _race(server, 50, lambda s: s.ImportUpstreamInstance(req, metadata=md(admin_token), timeout=60))
    assert outcome == Counter({"OK": 1, "ALREADY_EXISTS": 49})
