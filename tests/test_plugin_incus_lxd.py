"""The built-in incus plugin against a real daemon: Debian 12's LXD 5.0.2 (tests/peers/lxd_daemon.py),
started by hand in a temporary directory, reached on its unix socket. LXD 5.0 speaks the Incus REST
API but lacks the ``instance_create_start`` extension, and two POSTs for one name are both accepted
(the second one's operation fails with "Instance is busy running a "create" operation"): what the
local Incus peer (tests/test_plugin_incus.py) cannot show. Skipped only when lxd is not installed
(``scripts/system-deps test`` installs it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import SHIPPED_PLUGINS, ServerProcess, create_interface, md, query_db
from peers.lxd_daemon import LxdDaemon, lxd_missing

from rustbill import sdk
from rustbill.pb import integration_pb2 as pb
from rustbill.pb import order_pb2
from rustbill.plugins import load_plugin

pytestmark = pytest.mark.skipif(bool(lxd_missing()), reason=f"lxd: {lxd_missing()}")

PLUGIN = SHIPPED_PLUGINS / "incus.py"


@pytest.fixture(scope="module")
def lxd() -> Iterator[LxdDaemon]:
    daemon = LxdDaemon().start()
    yield daemon
    daemon.stop()


@pytest.fixture
async def plugin() -> Any:
    module = load_plugin(PLUGIN, PLUGIN.read_bytes(), "incus").module
    yield module
    await module._aclose_all()


def order_spec(request_id: str) -> dict[str, Any]:
    """A create_instance spec as the host passes it: the smallest busybox container."""
    return {"cpu_cores": 1, "memory_gb": 1, "disk_gb": 5, "bandwidth_mbps": 0, "region": "", "os": "busybox",
            "extra_specs": {}, "request_id": request_id}  # fmt: skip


def lxd_op(lxd: LxdDaemon, op_id: str) -> dict[str, Any]:
    return lxd.request("GET", f"/1.0/operations/{op_id}")  # type: ignore[no-any-return]


def test_an_order_through_the_server_is_a_running_container(
    server: ServerProcess, stub: Any, admin_token: str, lxd: LxdDaemon
) -> None:
    """LXD 5.0 ignores ``"start": true`` (no instance_create_start): the plugin reads api_extensions
    and starts the new container itself, as the official clients do."""
    iface = create_interface(stub, admin_token, "incus", json.dumps(lxd.config))
    checked = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(admin_token))
    assert checked.is_healthy, checked.message
    server_spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=5, os="busybox")
    reply = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=server_spec), metadata=md(admin_token), timeout=60
    )
    name = reply.provider_instance_id
    assert name.startswith("rb-") and reply.status == "running"
    inst = lxd.instance(name)
    assert inst is not None and inst["status"] == "Running" and inst["state"]["pid"] > 0
    assert inst["config"]["limits.cpu"] == "1" and inst["config"]["limits.memory"] == "1GiB"
    assert inst["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default", "size": "5GiB"}
    rows = query_db(server.db_url, "SELECT status FROM instances WHERE provider_instance_id = :n", n=name)
    assert rows == [("running",)]
    status = stub.GetInstanceStatus(
        pb.InstanceStatusRequest(interface_id=iface.id, instance_id=name), metadata=md(admin_token)
    )
    assert status.status == "running"

    deleted = stub.CallPluginAction(
        pb.CallPluginActionRequest(
            interface_id=iface.id, function="admin_delete", args_json=json.dumps({"name": name, "force": True})
        ),
        metadata=md(admin_token),
        timeout=60,
    )
    assert json.loads(deleted.result_json)["status"] == "deleted" and lxd.instance(name) is None


async def test_start_on_create_false_leaves_it_stopped(plugin: Any, lxd: LxdDaemon) -> None:
    made = await plugin.create_instance({**lxd.config, "start_on_create": False}, order_spec(str(uuid.uuid4())))
    assert made["status"] == "stopped"
    assert lxd.instance(made["instance_id"])["last_used_at"].startswith("1970-01-01")


async def test_two_concurrent_creates_for_one_request_give_its_one_instance(plugin: Any, lxd: LxdDaemon) -> None:
    """Both POSTs are accepted; the loser's operation fails as "busy running a create operation".
    docs/plugins.md section 10: a second call with the same request_id returns the instance the
    first one opened — so the loser waits for the winner's create and returns that instance."""
    for _ in range(5):  # the race needs both lookups to miss the instance; it nearly always does
        rid = str(uuid.uuid4())
        name = f"rb-{rid}"
        results = await asyncio.gather(
            plugin.create_instance(lxd.config, order_spec(rid)),
            plugin.create_instance(lxd.config, order_spec(rid)),
            return_exceptions=True,
        )
        if any('busy running a "create" operation' in (op.get("err") or "") for op in lxd.operations(name)):
            break
    else:
        pytest.fail("the two creates never raced at LXD")
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result["instance_id"] == name and result["status"] == "running"
    names = [i["name"] for i in lxd.request("GET", "/1.0/instances?recursion=1")]
    assert names.count(name) == 1 and lxd.instance(name)["config"]["user.rustbill.request_id"] == rid


async def test_a_retry_neither_waits_for_nor_fails_with_an_admins_stop(plugin: Any, lxd: LxdDaemon) -> None:
    """Only the create operation's outcome counts: an admin's stop running on the instance is not
    waited for by a retried create_instance or by find_instance, and its failure is not theirs. (The
    container's halt signal is one busybox's init ignores, so that the clean stop runs out its
    3 s timeout and fails, as LXD's stop of a hung guest does.)"""
    rid = str(uuid.uuid4())
    made = await plugin.create_instance({**lxd.config, "start_on_create": False}, order_spec(rid))
    name = made["instance_id"]
    lxd.request("PATCH", f"/1.0/instances/{name}", {"config": {"raw.lxc": "lxc.signal.halt = SIGWINCH"}})
    lxd.request("PUT", f"/1.0/instances/{name}/state", {"action": "start"})

    stop = lxd.request("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "timeout": 3}, wait=False)
    again = await plugin.create_instance(lxd.config, order_spec(rid))
    found = await plugin.find_instance(lxd.config, rid)
    assert lxd_op(lxd, stop["id"])["status"] == "Running", "the retry waited for the admin's stop"
    assert found == again and again["instance_id"] == name and again["status"] == "running"
    stopped = lxd.wait(stop["id"])
    assert stopped["status"] == "Failure" and "Failed shutting down instance" in stopped["err"]
    # once it has failed, a retry is still the order's instance, not the stop's failure
    assert (await plugin.create_instance(lxd.config, order_spec(rid)))["instance_id"] == name


async def test_a_failed_create_leaves_nothing(plugin: Any, lxd: LxdDaemon) -> None:
    rid = str(uuid.uuid4())
    images = {"busybox": {"alias": "no-such-image"}}
    with pytest.raises(sdk.PluginError) as info:
        await plugin.create_instance({**lxd.config, "images": images}, order_spec(rid))
    assert info.value.code == "FAILED_PRECONDITION", info.value.message
    assert "Image alias not found (check the interface's images" in info.value.message
    assert lxd.instance(f"rb-{rid}") is None
    assert await plugin.find_instance(lxd.config, rid) is None
