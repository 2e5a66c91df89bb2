"""What plugin isolation costs (issue 10), each figure against a baseline measured in the same run.

(a) Dispatch of a trivial ``async def`` query_price through ``PluginRuntime.call``, on uvloop as in
    the server: through its worker process against the same call in this process (a bench-only in-process host that runs
    the module here, as the runtime did before isolation). Target: p50 < 150 us through the worker.
(b) Throughput of that call with 16 in flight (16 callers, each calling again as soon as its call
    returns): worker against in-process. Target: >= 60 %.
(c) Through a real server: QueryPrice (t_provider) against GetPluginInterface, p50 with one call
    in flight. Target: QueryPrice <= 1.3x.
(d) Memory of a real server with 100 plugins and 1,000 interfaces, every one called once: RSS
    and PSS (shared pages counted once) of the server, the zygote and every worker.
    Target: <= 400 MB.
(e) A worker killed with SIGKILL: time until a call of its plugin succeeds again. Target: < 1 s.

    python bench/bench_isolation.py            # a few minutes
    python bench/bench_isolation.py --quick    # fewer plugins and calls

Prints a table with PASS/MISS against each target; exits 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (servers as an operator starts them: new interpreters, not the tests' fork server)
from helpers import TEST_PLUGINS, Databases, ServerProcess, child_pids, create_interface, md

TRIVIAL = '''"""Bench plugin {n}: a trivial query_price."""
from decimal import Decimal

PLUGIN_TYPE = "first_party_provider"


async def query_price(config, spec):
    return {{"amount": Decimal("1.25"), "currency": "USD", "billing_cycle": "monthly"}}


def health_check(config):
    return None
'''
SPEC = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 50, "bandwidth_mbps": 100}


class InProcessHost:
    """Bench-only: runs a plugin module in this process, as the runtime did before isolation
    (an ``async def`` awaited on the loop, a ``def`` in a thread), behind PluginHost's interface."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def trouble(self) -> None:
        return None

    async def call(self, function: str, config: dict[str, Any], args: list[Any], *, seconds: float, **_: Any) -> Any:
        fn = getattr(self.module, function)
        async with asyncio.timeout(seconds):
            if asyncio.iscoroutinefunction(fn):
                return await fn(config, *args)
            return await asyncio.to_thread(fn, config, *args)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def runtime_part(quick: bool) -> dict[str, float]:
    import logging

    from rustbill.db import Database
    from rustbill.plugins import PluginRegistry, PluginRuntime, load_plugin
    from rustbill.plugins.contract import check_price
    from rustbill.plugins.loader import LoadedPlugin
    from rustbill.plugins.runtime import Binding

    logging.disable(logging.INFO)  # (the call log line is the same on both sides)
    tmp = Path(tempfile.mkdtemp(prefix="bench-iso-"))
    path = tmp / "bench_trivial.py"
    path.write_text(TRIVIAL.format(n=0))
    db = Database(f"sqlite:///{tmp / 'db.sqlite3'}")
    await db.migrate()
    registry = PluginRegistry()
    runtime = PluginRuntime(db, registry)
    hosted = await registry.load(path, path.read_bytes(), "bench_trivial")
    local = load_plugin(path, path.read_bytes(), "bench_trivial")
    inproc = LoadedPlugin("bench_trivial", path, local.content_hash, local.meta, InProcessHost(local.module))

    def binding(plugin: Any) -> Binding:
        return Binding(uuid.uuid4(), "bench", plugin.plugin_type, True, plugin, {}, ())

    b_worker, b_local = binding(hosted), binding(inproc)
    n = 2000 if quick else 10000
    out: dict[str, float] = {}
    for name, b in (("worker", b_worker), ("inproc", b_local)):
        for _ in range(200):  # warm-up
            await runtime.call(b, "query_price", SPEC, check=check_price)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await runtime.call(b, "query_price", SPEC, check=check_price)
            times.append(time.perf_counter() - t)
        out[f"p50_{name}"] = statistics.median(times)

        async def caller(calls: int, b: Binding = b) -> None:
            for _ in range(calls):
                await runtime.call(b, "query_price", SPEC, check=check_price)

        # 16 callers, each calling again as soon as its call returns: always 16 in flight
        t = time.perf_counter()
        await asyncio.gather(*(caller(n // 16) for _ in range(16)))
        out[f"rps_{name}"] = (n // 16) * 16 / (time.perf_counter() - t)
    await runtime.close()
    await db.dispose()
    return out


def memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB of ``pid`` and all its descendants."""
    rss = pss = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            continue
        todo.extend(child_pids(p))
    return rss, pss


def price(interface_id: str) -> Any:
    from rustbill.pb import integration_pb2 as pb

    return pb.QueryPriceRequest(interface_id=interface_id, cpu_cores=1, memory_gb=1, disk_gb=10, bandwidth_mbps=10)


def server_part(quick: bool) -> dict[str, float]:
    from rustbill.pb import integration_pb2 as pb

    tmp = Path(tempfile.mkdtemp(prefix="bench-iso-srv-"))
    dbs = Databases(tmp / "db")
    (tmp / "db").mkdir(exist_ok=True)
    n_plugins, per = (20, 5) if quick else (100, 10)
    srv = ServerProcess(tmp / "srv", dbs.new(), plugins=[TEST_PLUGINS / "t_provider.py"])
    for i in range(n_plugins):
        (srv.plugins_dir / f"bench_p{i:03d}.py").write_text(TRIVIAL.format(n=i))
    srv.env["RUSTBILL_PLUGINS__HEALTH_INTERVAL_SECONDS"] = "0"
    srv.env["RUSTBILL_PLUGINS__WORKER_IDLE_SECONDS"] = "8"
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        srv.start(timeout=300)
        out["start_s"] = time.perf_counter() - t
        token = srv.token()
        stub = srv.stub()
        meta = md(token)
        # (c) QueryPrice against GetPluginInterface
        prov = create_interface(stub, token, "t_provider", json.dumps({"regions": ["eu"]}))
        qreq = price(prov.id)
        greq = pb.GetPluginInterfaceRequest(interface_id=prov.id)
        times: dict[str, list[float]] = {"q": [], "g": []}
        for _ in range(300 if quick else 1500):
            for k, fn, req in (("q", stub.QueryPrice, qreq), ("g", stub.GetPluginInterface, greq)):
                t = time.perf_counter()
                fn(req, metadata=meta)
                times[k].append(time.perf_counter() - t)
        out["qp_p50"], out["gpi_p50"] = statistics.median(times["q"]), statistics.median(times["g"])
        # (d) 1,000 interfaces, each called once
        ifaces = []
        for i in range(n_plugins):
            for _ in range(per):
                ifaces.append(create_interface(stub, token, f"bench_p{i:03d}"))
        for iface in ifaces:
            stub.QueryPrice(
                price(iface.id),
                metadata=meta,
            )
        assert srv.proc is not None
        out["rss_mb"], out["pss_mb"] = memory(srv.proc.pid)
        out["interfaces"] = len(ifaces)
        out["workers"] = sum(len(child_pids(z)) for z in child_pids(srv.proc.pid))
        time.sleep(12)  # idle workers stop (worker_idle_seconds = 8 here, 120 by default)
        out["idle_rss_mb"], out["idle_pss_mb"] = memory(srv.proc.pid)
        out["idle_workers"] = sum(len(child_pids(z)) for z in child_pids(srv.proc.pid))
        # (e) kill a worker; time until its plugin answers again (each time another plugin's: five
        # faults of one plugin within a minute would suspend it, by design)
        samples = []
        for k in range(3 if quick else 10):
            req = price(ifaces[k * per].id)
            stub.QueryPrice(req, metadata=meta, timeout=5)  # (its worker may have stopped when idle)
            before = set(w for z in child_pids(srv.proc.pid) for w in child_pids(z))
            victim = _worker_of(before, f"bench_p{k:03d}")
            t = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while True:
                try:
                    stub.QueryPrice(req, metadata=meta, timeout=5)
                    break
                except Exception:
                    time.sleep(0.005)
            samples.append(time.perf_counter() - t)
        out["restart_s"] = max(samples)
    finally:
        srv.stop()
        dbs.drop_all()
    return out


def _worker_of(pids: set[int], plugin_id: str) -> int:
    """The worker of ``plugin_id``: workers name themselves ``rb:<plugin id>`` (ps, top)."""
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == f"rb:{plugin_id}"[:15]:
                return pid
        except OSError:
            continue
    raise AssertionError(f"no worker for {plugin_id}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    try:  # (the server's own loop: [server] uvloop, on by default)
        import uvloop

        r = uvloop.run(runtime_part(a.quick))
    except ImportError:
        r = asyncio.run(runtime_part(a.quick))
    s = server_part(a.quick)
    rows = [
        ("(a) dispatch p50, worker", f"{r['p50_worker'] * 1e6:.0f} us", f"in-process {r['p50_inproc'] * 1e6:.0f} us",
         "< 150 us", r["p50_worker"] < 150e-6),
        ("(b) throughput, 16 in flight", f"{r['rps_worker']:.0f}/s", f"in-process {r['rps_inproc']:.0f}/s",
         ">= 60 %", r["rps_worker"] >= 0.6 * r["rps_inproc"]),
        ("(c) QueryPrice p50 via server", f"{s['qp_p50'] * 1e3:.2f} ms", f"GetPluginInterface {s['gpi_p50'] * 1e3:.2f} ms",  # noqa: E501
         "<= 1.3x", s["qp_p50"] <= 1.3 * s["gpi_p50"]),
        (f"(d) memory, {int(s['workers'])} workers, {int(s['interfaces'])} interfaces",
         f"PSS {s['pss_mb']:.0f} MB", f"RSS sum {s['rss_mb']:.0f} MB", "<= 400 MB", s["pss_mb"] <= 400),
        (f"(d') the same once idle ({int(s['idle_workers'])} workers left)",
         f"PSS {s['idle_pss_mb']:.0f} MB", f"RSS sum {s['idle_rss_mb']:.0f} MB", "<= 400 MB", s["idle_pss_mb"] <= 400),
        ("(e) killed worker serving again", f"{s['restart_s'] * 1e3:.0f} ms", "", "< 1 s", s["restart_s"] < 1.0),
    ]  # fmt: skip
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}; server start {s['start_s']:.1f} s")
    print(f"{'measure':48} {'value':>12}  {'baseline':32} {'target':>10}  verdict")
    for name, value, base, target, ok in rows:
        print(f"{name:48} {value:>12}  {base:32} {target:>10}  {'PASS' if ok else 'MISS'}")
    print(f"(a) ratio worker/in-process p50: {r['p50_worker'] / r['p50_inproc']:.1f}x; "
          f"(b) throughput ratio {r['rps_worker'] / r['rps_inproc']:.0%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
