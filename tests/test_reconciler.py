"""Orders whose create_instance outcome is unknown are settled by the host (docs/plugins.md, section
10): the background reconciler asks the plugin's find_instance and records the instance or releases
the order; a keyed retry settles it at once or is told to wait (UNAVAILABLE, "retry in N s"); a
server killed mid-create leaves orders that the next start settles in seconds, without opening
anything twice. Real server processes on the test database (SQLite, or PostgreSQL with
RUSTBILL_TEST_DATABASE_URL); tests/plugins/t_provider.py (with find_instance) and
t_blind_provider.py (without) keep what they make in files, so that it survives a crash."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from helpers import (
    TEST_PLUGINS,
    Databases,
    ServerProcess,
    create_interface,
    md,
    query_db,
    raises_code,
    retry_while_reconciled,
    unique,
)
from sqlalchemy import delete, select

from rustbill.db import Database, Process
from rustbill.domain import ProcessRegistry
from rustbill.domain.processes import local_node, pid_start
from rustbill.ids import new_id, utcnow
from rustbill.pb import integration_pb2 as pb
from rustbill.pb import order_pb2

SPEC = order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10)
# create_instance gives up after 1 s; the reconciler runs every 0.5 s
# idempotency keys of this run (a reused test database may hold earlier runs' orders)
CRASH_MADE = unique("order-crash-made")
CRASH_LOST = unique("order-crash-lost")
MADE = unique("order-made")
LOST = unique("order-lost")
K7 = unique("order-7")
K9 = unique("order-9")
LATE = unique("order-late")
BLIND = unique("order-blind")
CUT = unique("order-cut")
FAST = {
    "plugins__timeouts": '{"create_instance": 1}',
    "plugins__reconcile_interval_seconds": "0.5",
    "plugins__release_after_seconds": "0",
}


def start(srv: ServerProcess, *plugins: str, **env: str) -> tuple[str, Any]:
    for p in plugins:
        srv.add_plugin(TEST_PLUGINS / f"{p}.py")
    srv.env.update({f"RUSTBILL_{k.upper()}": v for k, v in env.items()})
    srv.start()
    return srv.token(), srv.stub()


def order(stub: Any, token: str, iface: Any, key: str, timeout: float | None = None) -> Any:
    return stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=SPEC),
        metadata=[*md(token), ("idempotency-key", key)],
        timeout=timeout,
    )


def rows(srv: ServerProcess, key: str) -> list[tuple[Any, ...]]:
    """(id, status, provider_instance_id, owner) of the order ``key``; ids as UUID strings."""
    got = query_db(
        srv.db_url, "SELECT id, status, provider_instance_id, owner FROM instances WHERE idempotency_key = :k", k=key
    )
    return [(_uuid(r[0]), r[1], r[2], None if r[3] is None else _uuid(r[3])) for r in got]


def _uuid(v: Any) -> str:
    return str(uuid.UUID(str(v)))


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {got!r})")
        time.sleep(0.1)


def calls(store: Path) -> list[str]:
    path = store / "create_calls"
    return path.read_text().split() if path.exists() else []


def store(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def metric(srv: ServerProcess, outcome: str, by: str) -> float:
    text = httpx.get(srv.http_url + "/metrics").text
    for labels, value in re.findall(r"^rustbill_orders_reconciled_total\{(.*)\} (\S+)$", text, re.M):
        if set(labels.split(",")) == {f'outcome="{outcome}"', f'by="{by}"'}:
            return float(value)
    return 0.0


# ---------------------------------------------------------------- the background reconciler


def test_reconciler_settles_timed_out_orders_without_any_retry(fresh_server: ServerProcess, tmp_path: Path) -> None:
    # an order the provider has nothing for is released only 4 s after its attempt (a remote
    # provider may still act on it meanwhile)
    token, stub = start(fresh_server, "t_provider", **{**FAST, "plugins__release_after_seconds": "4"})
    made, lost = store(tmp_path, "made"), store(tmp_path, "lost")
    # the provider opens it, then the answer never comes back / the provider never gets to open it
    opened = create_interface(stub, token, "t_provider", json.dumps({"store_dir": str(made), "sleep_after_create": 5}))
    never = create_interface(stub, token, "t_provider", json.dumps({"store_dir": str(lost), "sleep": 5}))
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, token, opened, MADE)
    sent = time.monotonic()
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, token, never, LOST)

    [(row_id, *_)] = rows(fresh_server, MADE)
    [(lost_id, *_)] = rows(fresh_server, LOST)
    fresh_server.wait_for_log(rf"order {lost_id} at provider \S+: the provider has nothing for it yet; left 'unknown'")
    assert [r[1:3] for r in rows(fresh_server, LOST)] == [("unknown", None)]
    settled = wait_for("the opened order is recorded", lambda: rows(fresh_server, MADE)[0][2] is not None)
    assert settled
    assert rows(fresh_server, MADE) == [(row_id, "running", f"i-{row_id[-8:]}", None)]
    wait_for("the order that opened nothing is released", lambda: rows(fresh_server, LOST) == [])
    assert time.monotonic() - sent >= 4
    log = fresh_server.log
    assert re.search(rf"order {row_id} settled \(reconciler\): provider \S+ has instance i-{row_id[-8:]}", log)
    assert re.search(r"settled \(reconciler\): provider \S+ has no instance for it; the order is released", log)
    assert metric(fresh_server, "found", "reconciler") == 1 and metric(fresh_server, "released", "reconciler") == 1
    # nobody asked create_instance twice; the buyer's retry now just gets the recorded instance
    assert calls(made) == [row_id]
    again = order(stub, token, opened, MADE)
    assert again.provider_instance_id == f"i-{row_id[-8:]}" and calls(made) == [row_id]
    # a released order's key is a new order
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=never.id, config_json=json.dumps({"store_dir": str(lost)})),
        metadata=md(token),
    )
    fresh = order(stub, token, never, LOST)
    [(new_row, status, provider_id, owner)] = rows(fresh_server, LOST)
    assert (status, provider_id, owner) == ("running", fresh.provider_instance_id, None)
    assert len(calls(lost)) == 2 and calls(lost)[1] == new_row != calls(lost)[0]


def test_find_instance_failing_leaves_the_order_and_a_retry_is_told_to_wait(fresh_server: ServerProcess) -> None:
    token, stub = start(fresh_server, "t_provider", **FAST)
    iface = create_interface(stub, token, "t_provider", json.dumps({"sleep": 3, "find": "fail"}))
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, token, iface, K7)
    [(row_id, *_)] = rows(fresh_server, K7)
    line = rf"order {row_id} at provider \S+ could not be reconciled: .*the provider's order lookup is down"
    fresh_server.wait_for_log(line)
    time.sleep(2)  # several more rounds: said once, not every round
    assert len(re.findall(line, fresh_server.log)) == 1
    # (its owner is set for a moment each round, while the reconciler asks)
    assert [r[:3] for r in rows(fresh_server, K7)] == [(row_id, "unknown", None)]

    # (1 s: the reconciler's interval, rounded up; 2 s if the reconciler is asking right then)
    with raises_code(grpc.StatusCode.UNAVAILABLE, rf"^order '{K7}' is being reconciled; retry in [12] s$"):
        order(stub, token, iface, K7)
    try:  # the hint is also in the metadata
        order(stub, token, iface, K7)
        raise AssertionError("the retry succeeded")
    except grpc.RpcError as exc:
        assert dict(exc.trailing_metadata() or ()).get("retry-after") in ("1", "2")  # type: ignore[attr-defined]
    assert [r[:3] for r in rows(fresh_server, K7)] == [(row_id, "unknown", None)]  # left as it was

    # the provider's lookup works again: it has nothing for the order, which is released
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json='{"find": "none"}'), metadata=md(token)
    )
    wait_for("the order is released", lambda: rows(fresh_server, K7) == [])


def test_a_retry_while_the_first_attempt_runs_is_told_it_is_still_being_opened(fresh_server: ServerProcess) -> None:
    token, stub = start(fresh_server, "t_provider", plugins__timeouts='{"create_instance": 20}')
    iface = create_interface(stub, token, "t_provider", json.dumps({"sleep": 3}))
    first: dict[str, Any] = {}
    t = threading.Thread(target=lambda: first.update(reply=order(stub, token, iface, K9)))
    t.start()
    wait_for("the order is reserved", lambda: rows(fresh_server, K9))
    with raises_code(grpc.StatusCode.UNAVAILABLE, rf"^order '{K9}' is still being opened; retry in (1\d|20) s$"):
        order(stub, token, iface, K9)
    t.join()
    assert order(stub, token, iface, K9).provider_instance_id == first["reply"].provider_instance_id


def test_a_late_answer_is_recorded_and_without_find_instance_a_retry_asks_again(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    token, stub = start(
        fresh_server,
        "t_blind_provider",
        plugins__timeouts='{"create_instance": 1}',
        plugins__reconcile_interval_seconds="0.5",
        plugins__kill_grace_seconds="5",
    )
    # a def create_instance that answers after the host stopped waiting (within the grace after its
    # deadline, before its worker would be killed): its answer is recorded
    late_store = store(tmp_path, "late")
    late = create_interface(stub, token, "t_blind_provider", json.dumps({"store_dir": str(late_store), "sleep": 3}))
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, token, late, LATE)
    [(row_id, status, _, owner)] = rows(fresh_server, LATE)
    assert status == "unknown" and owner is not None  # the call still runs in its thread
    with raises_code(grpc.StatusCode.UNAVAILABLE, rf"^order '{LATE}' is being reconciled; retry in 1 s$"):
        order(stub, token, late, LATE)
    wait_for("the late answer is recorded", lambda: rows(fresh_server, LATE)[0][2])
    assert rows(fresh_server, LATE) == [(row_id, "running", f"b-{row_id[-8:]}", None)]
    fresh_server.wait_for_log(rf"order {row_id} settled \(late answer\)")
    assert metric(fresh_server, "found", "late_answer") == 1
    assert order(stub, token, late, LATE).provider_instance_id == f"b-{row_id[-8:]}"
    assert calls(late_store) == [row_id]

    # no answer at all, and no find_instance to ask: left "unknown" (said once); a keyed retry asks
    # create_instance again with the same request_id
    blind_store = store(tmp_path, "blind")
    cfg = {"store_dir": str(blind_store), "sleep": 1.5, "fail_first": True}
    blind = create_interface(stub, token, "t_blind_provider", json.dumps(cfg))
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, token, blind, BLIND)
    [(row_id, *_)] = rows(fresh_server, BLIND)
    line = rf"order {row_id} at provider \S+: outcome unknown, and plugin 't_blind_provider' has no find_instance"
    fresh_server.wait_for_log(line)
    time.sleep(1.5)
    assert len(re.findall(line, fresh_server.log)) == 1
    assert rows(fresh_server, BLIND) == [(row_id, "unknown", None, None)]
    cfg["sleep"] = 0
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=blind.id, config_json=json.dumps(cfg)), metadata=md(token)
    )
    assert order(stub, token, blind, BLIND).provider_instance_id == f"b-{row_id[-8:]}"
    assert calls(blind_store) == [row_id, row_id]


def test_a_call_still_running_past_the_grace_is_killed_and_a_retry_asks_again(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    token, stub = start(fresh_server, "t_blind_provider", plugins__timeouts='{"create_instance": 1}')
    # a def create_instance still running half a second after its deadline: its worker process is
    # killed (issue 10), no late answer comes, and the order is left "unknown" to nobody
    late_store = store(tmp_path, "cut")
    cfg = {"store_dir": str(late_store), "sleep": 3}
    late = create_interface(stub, token, "t_blind_provider", json.dumps(cfg))
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, token, late, CUT)
    fresh_server.wait_for_log(
        r"plugin t_blind_provider: killing worker process \d+: call create_instance of interface .* did not give"
    )
    [(row_id, *_)] = rows(fresh_server, CUT)
    wait_for(
        "the order is given up by its process", lambda: rows(fresh_server, CUT) == [(row_id, "unknown", None, None)]
    )
    time.sleep(2)  # (when the plugin's sleep would have ended)
    assert not (late_store / f"{row_id}.json").exists()  # nothing was made after the kill
    cfg["sleep"] = 0
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=late.id, config_json=json.dumps(cfg)), metadata=md(token)
    )
    assert order(stub, token, late, CUT).provider_instance_id == f"b-{row_id[-8:]}"  # asked again, same id
    assert calls(late_store) == [row_id, row_id]


# ---------------------------------------------------------------- a crash


def test_after_a_crash_a_keyed_retry_gets_the_settled_order_within_seconds(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    # a long create_instance timeout: before, such orders were stuck for timeout + 60 s
    token, stub = start(
        fresh_server, "t_provider", plugins__timeouts='{"create_instance": 300}', plugins__release_after_seconds="0"
    )
    made, lost = store(tmp_path, "made"), store(tmp_path, "lost")
    opened = create_interface(stub, token, "t_provider", json.dumps({"store_dir": str(made), "sleep_after_create": 60}))
    never = create_interface(stub, token, "t_provider", json.dumps({"store_dir": str(lost), "sleep": 60}))
    threads = [
        threading.Thread(target=lambda i=i, k=k: _swallow(lambda: order(stub, token, i, k)))
        for i, k in ((opened, CRASH_MADE), (never, CRASH_LOST))
    ]
    for t in threads:
        t.start()
    wait_for("both calls are inside create_instance", lambda: len(calls(made)) == 1 and len(calls(lost)) == 1)
    wait_for("the first has made its instance", lambda: list(made.glob("*.json")))
    [(made_id, status, _, owner)] = rows(fresh_server, CRASH_MADE)
    assert status == "provisioning" and owner is not None
    fresh_server.stop(signal.SIGKILL)
    for t in threads:
        t.join()

    fresh_server.start()
    t0 = time.monotonic()
    stub = fresh_server.stub()
    reply = retry_while_reconciled(lambda: order(stub, token, opened, CRASH_MADE, timeout=30))
    assert time.monotonic() - t0 < 10
    assert reply.provider_instance_id == f"i-{made_id[-8:]}" and reply.status == "running"
    assert calls(made) == [made_id]  # create_instance ran once
    assert rows(fresh_server, CRASH_MADE) == [(made_id, "running", f"i-{made_id[-8:]}", None)]
    # the order that opened nothing is released at start, without anybody asking
    wait_for("the order that opened nothing is released", lambda: rows(fresh_server, CRASH_LOST) == [], 10)
    assert len(calls(lost)) == 1


def _swallow(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except grpc.RpcError:
        pass  # the server was killed under it


# ---------------------------------------------------------------- which processes are alive


async def test_dead_processes_are_known_by_heartbeat_or_at_once_by_pid(databases: Databases) -> None:
    db = Database(databases.new())
    await db.migrate()
    me = ProcessRegistry(db, stale_seconds=15)
    await me.register()
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    old = utcnow() - timedelta(seconds=20)
    node = local_node()
    cases = {
        "stale heartbeat elsewhere": Process(node="other", pid=1, pid_start="1", heartbeat_at=old),
        "fresh heartbeat elsewhere": Process(node="other", pid=1, pid_start="1"),
        "exited pid here": Process(node=node, pid=gone.pid, pid_start="12345"),
        "reused pid here": Process(node=node, pid=os.getpid(), pid_start=str(int(pid_start(os.getpid())) + 1)),
        "running pid here": Process(node=node, pid=os.getpid(), pid_start=pid_start(os.getpid())),
    }
    ids = {}
    try:
        async with db.write() as s:
            for name, row in cases.items():
                row.id, row.hostname = new_id(), unique("host")
                ids[name] = row.id
                s.add(row)
        alive = await me.alive()
        assert me.id in alive and await me.is_alive(me.id)
        got = {name for name, pid in ids.items() if pid in alive}
        expected = {"fresh heartbeat elsewhere", "running pid here"} if node else {
            "fresh heartbeat elsewhere", "exited pid here", "reused pid here", "running pid here"}  # fmt: skip
        assert got == expected
        assert not await me.is_alive(new_id())  # never registered (or removed on stop)
        reaped = set(await me.reap())  # (the database may hold dead servers of other tests too)
        assert reaped >= {pid for name, pid in ids.items() if name not in expected}
        assert not reaped & {ids[name] for name in expected}
        await me.unregister()
        assert not await ProcessRegistry(db).is_alive(me.id)
    finally:
        async with db.write() as s:
            await s.execute(delete(Process).where(Process.id.in_([*ids.values(), me.id])))
        await db.dispose()


# ---------------------------------------------------------------- in process: the safety nets


class Host:
    """Providers and a Reconciler over one plugin file, in this process, on a fresh database."""

    def __init__(self, db: Database, path: Path, **timeouts: float) -> None:
        from rustbill.domain import Providers, Reconciler
        from rustbill.plugins import PluginRegistry, PluginRuntime

        self.db = db
        self.path = path
        self.registry = PluginRegistry()
        self.runtime = PluginRuntime(db, self.registry, default_timeout=30, timeouts=timeouts)
        self.loaded: Any = None
        self.processes = ProcessRegistry(db)
        self.providers = Providers(db, self.runtime, processes=self.processes)
        self.reconciler = Reconciler(db, self.runtime, self.providers, self.processes)

    async def interface(self, config: dict[str, Any]) -> uuid.UUID:
        from rustbill.db import Plugin, PluginInterface

        if self.loaded is None:
            self.loaded = await self.registry.load(self.path, self.path.read_bytes(), self.path.stem)
            self.registry.put(self.loaded)
        async with self.db.write() as s:
            plugin_def = (await s.execute(select(Plugin.id).where(Plugin.plugin_id == self.loaded.plugin_id))).scalar()
            if plugin_def is None:
                plugin = Plugin(plugin_type=self.loaded.plugin_type, plugin_id=self.loaded.plugin_id,
                                content_hash=self.loaded.content_hash)  # fmt: skip
                s.add(plugin)
                await s.flush()
                plugin_def = plugin.id
            iface = PluginInterface(plugin_def_id=plugin_def, plugin_type=self.loaded.plugin_type,
                                    plugin_id=self.loaded.plugin_id, display_name=unique("iface"),
                                    config_json=json.dumps(config), config_schema="{}")  # fmt: skip
            s.add(iface)
        return iface.id  # type: ignore[no-any-return]

    async def order(self, iid: uuid.UUID, key: str) -> Any:
        spec = {"cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "bandwidth_mbps": 0, "region": "", "os": "",
                "extra_specs": {}}  # fmt: skip
        return await self.providers.create_instance(iid, spec, has_spec=True, idempotency_key=key, customer_id=None)

    async def rows(self, key: str) -> list[tuple[Any, ...]]:
        from rustbill.db import Instance

        async with self.db.read() as s:
            got = (await s.execute(select(Instance).where(Instance.idempotency_key == key))).scalars()
            return [(r.id, r.status, r.provider_instance_id, r.owner) for r in got]

    async def close(self) -> None:
        await self.providers.close()
        await self.runtime.close()


async def test_an_instance_opened_after_its_order_was_released_is_recorded_again(
    databases: Databases, tmp_path: Path
) -> None:
    """A process taken for dead (no heartbeat) while its create_instance ran: another process settled
    and released the order meanwhile. When the provider answers, the instance is recorded again."""
    db = Database(databases.new())
    await db.migrate()
    host = Host(db, TEST_PLUGINS / "t_blind_provider.py")
    try:
        iid = await host.interface({"store_dir": str(store(tmp_path, "s")), "sleep": 1})
        key = unique("k")
        task = asyncio.ensure_future(host.order(iid, key))
        for _ in range(100):
            if await host.rows(key):
                break
            await asyncio.sleep(0.02)
        [(row_id, status, _, owner)] = await host.rows(key)
        assert status == "provisioning" and owner == host.processes.id
        async with db.write() as s:  # another process released it
            from rustbill.db import Instance

            await s.execute(delete(Instance).where(Instance.id == row_id))
        made = await task
        assert made.provider_instance_id == f"b-{str(row_id)[-8:]}"
        assert await host.rows(key) == [(row_id, "running", made.provider_instance_id, None)]
    finally:
        await host.close()
        await db.dispose()


SLOW_FIND = """
import asyncio, time
from pathlib import Path

PLUGIN_TYPE = "upstream_provider"


async def create_instance(config, spec):
    await asyncio.sleep(10)  # never answers in time


def find_instance(config, request_id):
    with (Path(config["dir"]) / "finds").open("a") as f:
        f.write(request_id + "\\n")
    time.sleep(1.5)  # a def that outlives its timeout: its worker is killed at the deadline + grace
    return None
"""


async def test_a_find_instance_thread_still_running_is_not_asked_again(databases: Databases, tmp_path: Path) -> None:
    db = Database(databases.new())
    await db.migrate()
    path = tmp_path / "t_slow_find.py"
    path.write_text(SLOW_FIND)
    host = Host(db, path, create_instance=0.2, find_instance=0.3)
    try:
        iid, key = await host.interface({"dir": str(tmp_path)}), unique("k")
        try:
            await host.order(iid, key)
            raise AssertionError("the order did not time out")
        except Exception as exc:
            assert type(exc).__name__ == "DeadlineExceeded"
        finds = tmp_path / "finds"
        assert (await host.reconciler.reconcile())["error"] == 1  # find_instance timed out; its thread runs on
        assert sum((await host.reconciler.reconcile()).values()) == 0  # not asked while that thread runs
        assert len(finds.read_text().split()) == 1
        await asyncio.sleep(1.5)
        assert (await host.reconciler.reconcile())["error"] == 1  # asked again once it is over
        assert len(finds.read_text().split()) == 2
        [(_, status, provider_id, owner)] = await host.rows(key)
        assert (status, provider_id, owner) == ("unknown", None, None)
    finally:
        await host.close()
        await db.dispose()
