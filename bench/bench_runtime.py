"""Cost of the plugin runtime (issue 3): dispatch, first call after an eviction, product sync.

(a) Through the whole server: a trivial QueryPrice (``t_provider`` answers at once) against
    GetPluginInterface: p50/p99 latency with 1 call in flight, requests/s with 16.
    Target: QueryPrice latency within 1.3x GetPluginInterface's.
(b) In one process: ``await runtime.call(binding, "query_price", spec, check=check_price)``
    against calling the plugin's function directly, for an ``async def`` and a plain ``def``
    plugin (and t_provider itself). Target: overhead < 150 us per call (through the plugin's worker
    process since issue 10; it was 50 us when plugins ran in the server's process).
(c) The first call after an eviction: in-process (evict, then ``Providers.query_price``: bind
    from the database, spec_template, query_price) and through the server (UpdatePluginInterface,
    then QueryPrice). Target: < 5 ms.
(d) SyncProducts of 10,000 products through the server, a first run and an unchanged re-run,
    on SQLite and PostgreSQL (when reachable, or with --pg). Targets: first run < 2 s, re-run
    < 1 s, and the re-run writes no row (unchanged == 10000, created == updated == 0, and
    max(updated_at) and count(*) of the products table unchanged).

    python bench/bench_runtime.py                      # about a minute and a half
    python bench/bench_runtime.py --pg postgresql://postgres@127.0.0.1:5432/rustbill_bench_rt
    python bench/bench_runtime.py --no-pg

Prints tables with PASS/MISS against each target; exits 0 either way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SERVICE = "/rustbill.integration.IntegrationService/"
SPEC = {
    "cpu_cores": 2,
    "memory_gb": 4,
    "disk_gb": 50,
    "bandwidth_mbps": 100,
    "region": "",
    "os": "",
    "extra_specs": {},
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as rustbill.cli._setup_logging

BENCH_ASYNC = '''"""Bench plugin: a trivial query_price, nothing else."""
from decimal import Decimal

PLUGIN_TYPE = "first_party_provider"


def version():
    return "1.0.0"


async def query_price(config, spec):
    return {"amount": Decimal("1.25") * spec["cpu_cores"], "currency": "USD", "billing_cycle": "monthly"}
'''

BENCH_SYNC = BENCH_ASYNC.replace("async def query_price", "def query_price").replace("async def", "def")


# ================================================================ (b), (c): in one process


def inproc_main(conn: Any, job: dict[str, Any]) -> None:
    c.run_child(conn, lambda: _inproc(job), job["uvloop"])


async def _timeit(fn: Any, target_s: float, repeats: int) -> float:
    """Median over ``repeats`` batches of the mean seconds per ``await fn()``."""
    perf = time.perf_counter
    n = 1
    while True:  # calibrate: a batch of about 50 ms
        t = perf()
        for _ in range(n):
            await fn()
        dt = perf() - t
        if dt >= 0.05 or n >= 100_000:
            break
        n *= 4
    n = max(1, min(200_000, int(n * target_s / max(dt, 1e-9))))
    samples = []
    for _ in range(repeats):
        t = perf()
        for _ in range(n):
            await fn()
        samples.append((perf() - t) / n)
    return statistics.median(samples)


def _variants(runtime: Any, binding: Any, check_price: Any, module: Any) -> tuple[Any, Any, Any]:
    """Three ways to get a price from ``binding``'s plugin: the function alone (its module loaded
    in this process), the function and the result check, and ``runtime.call`` (which does both in
    the plugin's worker process, and everything else)."""
    fn = module.query_price
    cfg = binding.config
    if binding.plugin.is_async["query_price"]:

        async def direct() -> Any:
            return await fn(cfg, SPEC)

        async def direct_checked() -> Any:
            return check_price(await fn(cfg, SPEC))
    else:

        async def direct() -> Any:
            return fn(cfg, SPEC)

        async def direct_checked() -> Any:
            return check_price(fn(cfg, SPEC))

    async def via_runtime() -> Any:
        return await runtime.call(binding, "query_price", SPEC, check=check_price)

    return direct, direct_checked, via_runtime


async def _inproc(job: dict[str, Any]) -> dict[str, Any]:
    import asyncio
    import copy
    import json
    import logging
    import shutil

    from rustbill.config import PluginSettings
    from rustbill.db import Database, Plugin, PluginInterface
    from rustbill.domain import Providers
    from rustbill.ids import new_id, utcnow
    from rustbill.plugins import PluginRegistry, PluginRuntime, load_plugin
    from rustbill.plugins.contract import check_price

    tmp = Path(job["tmp"])
    pdir = tmp / "plugins"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "bench_async.py").write_text(BENCH_ASYNC)
    (pdir / "bench_sync.py").write_text(BENCH_SYNC)
    shutil.copy(c.TEST_PLUGINS / "t_provider.py", pdir / "t_provider.py")

    # Logging as the server sets it up (INFO, one line per plugin call), into a file.
    root = logging.getLogger()
    handler = logging.FileHandler(tmp / "inproc.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    registry = PluginRegistry()
    loaded = {}
    modules = {}
    for pid in ("bench_async", "bench_sync", "t_provider"):
        path = pdir / f"{pid}.py"
        loaded[pid] = await registry.load(path, path.read_bytes(), pid)
        registry.put(loaded[pid])
        modules[pid] = load_plugin(path, path.read_bytes(), pid).module

    db = Database(f"sqlite:///{tmp / 'inproc.sqlite3'}")
    await db.migrate()
    ps = PluginSettings()  # the server's defaults (timeouts, threads)
    runtime = PluginRuntime(db, registry, default_timeout=ps.call_timeout_seconds, timeouts=ps.timeouts)
    providers = Providers(db, runtime)
    rows: dict[str, PluginInterface] = {}
    now = utcnow()
    async with db.write() as s:
        for pid, lp in loaded.items():
            plugin_row = Plugin(
                plugin_id=pid,
                plugin_type=lp.plugin_type,
                has_admin_page=lp.has_admin_page,
                version=lp.version,
                content_hash=lp.content_hash,
                file_present=True,
                created_at=now,
                updated_at=now,
            )
            s.add(plugin_row)
            await s.flush()
            row = PluginInterface(
                id=new_id(),
                plugin_def_id=plugin_row.id,
                plugin_type=lp.plugin_type,
                plugin_id=pid,
                display_name=f"bench {pid}",
                enabled=True,
                config_json="{}",
                config_schema=json.dumps(lp.config_schema),
                is_healthy=True,
                has_admin_page=lp.has_admin_page,
                plugin_version=lp.version,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            rows[pid] = row

    t_s, reps = job["target_s"], job["repeats"]
    out: dict[str, Any] = {"dispatch": {}, "breakdown": {}, "evict": {}}
    try:
        # ---- (b) dispatch cost
        for pid in ("bench_async", "bench_sync", "t_provider"):
            binding = runtime.bind_row(rows[pid])
            is_async = binding.plugin.is_async["query_price"]
            direct, direct_checked, via_runtime = _variants(runtime, binding, check_price, modules[pid])
            await via_runtime()
            root.setLevel(logging.INFO)
            d = await _timeit(direct, t_s, reps)
            dc = await _timeit(direct_checked, t_s, reps)
            rt_log = await _timeit(via_runtime, t_s, reps)
            root.setLevel(logging.WARNING)
            rt_quiet = await _timeit(via_runtime, t_s, reps)
            root.setLevel(logging.INFO)
            out["dispatch"][pid] = {
                "kind": "async def" if is_async else "def",
                "direct": d,
                "direct_checked": dc,
                "runtime": rt_log,
                "runtime_quiet": rt_quiet,
            }

        # ---- what one runtime.call spends its time on (bench_async's binding)
        binding = runtime.bind_row(rows["bench_async"])
        fn = modules["bench_async"].query_price
        demo_cfg = {
            "currency": "USD",
            "per_core": "2.00",
            "per_gb_memory": "1.00",
            "per_gb_disk": "0.05",
            "regions": ["us-west", "eu-central"],
        }
        calls_log = logging.getLogger("rustbill.plugin_calls")
        loop = asyncio.get_running_loop()

        async def b_deepcopy_empty() -> Any:
            return copy.deepcopy(binding.config)

        async def b_deepcopy_demo() -> Any:
            return copy.deepcopy(demo_cfg)

        async def b_wait_for() -> Any:
            return await asyncio.wait_for(fn(binding.config, SPEC), 30.0)

        async def b_timeout_cm() -> Any:
            async with asyncio.timeout(30.0):
                return await fn(binding.config, SPEC)

        async def b_plain_await() -> Any:
            return await fn(binding.config, SPEC)

        async def b_log_line() -> Any:
            calls_log.info(
                "plugin call interface=%s name=%s plugin=%s function=%s caller=%s duration_ms=%.1f outcome=%s",
                binding.interface_id,
                binding.display_name,
                binding.plugin_id,
                "query_price",
                "bench",
                0.01,
                "ok",
            )

        async def b_check() -> Any:
            return check_price({"amount": "2.50", "currency": "USD", "billing_cycle": "monthly"})

        def noop() -> None:
            return None

        async def b_executor() -> Any:
            return await loop.run_in_executor(runtime._executor, noop)

        for name, f in [
            ("copy.deepcopy(config) (empty config)", b_deepcopy_empty),
            ("copy.deepcopy(config) (demo_cloud-like config)", b_deepcopy_demo),
            ("asyncio.wait_for(plugin coroutine) - plain await", (b_wait_for, b_plain_await)),
            ("asyncio.timeout() block - plain await (for comparison)", (b_timeout_cm, b_plain_await)),
            ("log line 'plugin call ...' at INFO to a file", b_log_line),
            ("check_price(result)", b_check),
            ("thread-pool hop (run_in_executor, def plugins)", b_executor),
        ]:
            if isinstance(f, tuple):
                out["breakdown"][name] = await _timeit(f[0], t_s, reps) - await _timeit(f[1], t_s, reps)
            else:
                out["breakdown"][name] = await _timeit(f, t_s, reps)

        # ---- (c) first call after an eviction, in-process (t_provider, as QueryPrice does it)
        iid = rows["t_provider"].id
        await providers.query_price(iid, dict(SPEC))
        perf = time.perf_counter
        samples: dict[str, list[float]] = {"steady": [], "evict+bind_row+call": [], "evict+Providers.query_price": []}
        for _ in range(job["evictions"]):
            t = perf()
            await providers.query_price(iid, dict(SPEC))
            samples["steady"].append(perf() - t)
            runtime.evict(iid)
            t = perf()
            b = runtime.bind_row(rows["t_provider"])
            await runtime.call(b, "query_price", SPEC, check=check_price)
            samples["evict+bind_row+call"].append(perf() - t)
            runtime.evict(iid)
            t = perf()
            await providers.query_price(iid, dict(SPEC))
            samples["evict+Providers.query_price"].append(perf() - t)
        out["evict"] = samples
    finally:
        await runtime.close()
        await db.dispose()
        root.removeHandler(handler)
        handler.close()
    return out


# ================================================================ (a), (c), (d): through the server


def server_client_main(conn: Any, job: dict[str, Any]) -> None:
    c.run_child(conn, lambda: _server_client(job), job["uvloop"])


async def _db_products_state(db_url: str) -> tuple[Any, int]:
    """(max(updated_at), count(*)) of the products table, read straight from the database."""
    if db_url.startswith("sqlite"):
        import sqlite3

        path = db_url.split("sqlite:///", 1)[1]
        con = sqlite3.connect(path, timeout=30)
        try:
            return tuple(con.execute("SELECT max(updated_at), count(*) FROM products").fetchone())  # type: ignore[return-value]
        finally:
            con.close()
    import asyncpg

    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        r = await conn.fetchrow("SELECT max(updated_at), count(*) FROM products")
        return r[0], r[1]
    finally:
        await conn.close()


async def _server_client(job: dict[str, Any]) -> dict[str, Any]:
    from grpc import aio

    from rustbill.pb import integration_pb2 as pb
    from rustbill.pb import product_pb2

    md = [("authorization", f"Bearer {job['token']}")]
    ch = aio.insecure_channel(job["address"], options=c.channel_options())
    out: dict[str, Any] = {}
    try:

        def stub(name: str, req: Any, resp: Any) -> Any:
            return ch.unary_unary(
                SERVICE + name, request_serializer=req.SerializeToString, response_deserializer=resp.FromString
            )

        list_plugins = stub("ListPlugins", pb.ListPluginsRequest, pb.ListPluginsResponse)
        create = stub("CreatePluginInterface", pb.CreatePluginInterfaceRequest, pb.CreatePluginInterfaceResponse)
        update = stub("UpdatePluginInterface", pb.UpdatePluginInterfaceRequest, pb.UpdatePluginInterfaceResponse)
        plugins = (await list_plugins(pb.ListPluginsRequest(), metadata=md, timeout=30)).plugins
        tp = next((p for p in plugins if p.plugin_id == "t_provider"), None)
        if tp is None:
            raise RuntimeError(f"plugin t_provider not loaded; plugins: {[p.plugin_id for p in plugins]}")

        async def new_interface(name: str, config: str) -> str:
            r = await create(
                pb.CreatePluginInterfaceRequest(plugin_def_id=tp.id, display_name=name, config_json=config),
                metadata=md,
                timeout=30,
            )
            return r.interface.id  # type: ignore[no-any-return]

        query_price = c.raw_call(ch, SERVICE + "QueryPrice", md)
        get_iface = c.raw_call(ch, SERVICE + "GetPluginInterface", md)
        sync = c.raw_call(ch, SERVICE + "SyncProducts", md, timeout=120)

        if {"a", "c"} & set(job["parts"]):
            iid = await new_interface("rt-price", "{}")
            qp_req = pb.QueryPriceRequest(
                interface_id=iid, cpu_cores=2, memory_gb=4, disk_gb=50, bandwidth_mbps=100
            ).SerializeToString()
            gpi_req = pb.GetPluginInterfaceRequest(interface_id=iid).SerializeToString()
            price = pb.QueryPriceResponse.FromString(await query_price(qp_req))
            if price.amount != "2.24" or price.currency != "CNY":
                raise RuntimeError(f"unexpected QueryPrice reply: {price}")
            expect_price = len(price.SerializeToString())
            targets = [
                ("QueryPrice", query_price, [qp_req], lambda r: len(r) == expect_price),
                ("GetPluginInterface", get_iface, [gpi_req], lambda r: len(r) > 100),
            ]
        if "a" in job["parts"]:
            for name, call, reqs, check in targets:
                await c.load(name, call, reqs, concurrency=16, duration=job["warmup"], check=check)
            res: dict[str, dict[int, c.LoadResult]] = {name: {} for name, *_ in targets}
            for conc in (1, 16):
                for r in range(job["rounds"]):
                    order = targets if r % 2 == 0 else targets[::-1]
                    for name, call, reqs, check in order:
                        got = await c.load(
                            name,
                            call,
                            reqs,
                            concurrency=conc,
                            duration=job["duration"],
                            check=check,
                            server_pid=job["server_pid"],
                        )
                        res[name].setdefault(conc, c.LoadResult(name, conc)).merge(got)
            out["a"] = res

        if "c" in job["parts"]:
            # ---- (c) through the server: UpdatePluginInterface evicts; the next QueryPrice rebinds
            first: list[float] = []
            steady: list[float] = []
            errors = 0
            perf = time.perf_counter
            for _ in range(job["evictions"]):
                await update(
                    pb.UpdatePluginInterfaceRequest(interface_id=iid, config_json="{}"), metadata=md, timeout=30
                )
                for bucket in (first, steady):
                    t = perf()
                    reply = await query_price(qp_req)
                    dt = perf() - t
                    if len(reply) != expect_price:
                        errors += 1
                    bucket.append(dt)
            out["c"] = {"first": first, "steady": steady, "errors": errors}

        if "d" in job["parts"]:
            iid = await new_interface("rt-products", f'{{"product_count": {job["products"]}}}')
            req = product_pb2.SyncProductsRequest(interface_id=iid).SerializeToString()
            runs = []
            for label in ("first run", "re-run", "re-run again"):
                before = await _db_products_state(job["db_url"])
                t = time.perf_counter()
                raw = await sync(req)
                dt = time.perf_counter() - t
                after = await _db_products_state(job["db_url"])
                r = product_pb2.SyncProductsResponse.FromString(raw)
                runs.append(
                    {
                        "label": label,
                        "seconds": dt,
                        "bytes": len(raw),
                        "created": r.created,
                        "updated": r.updated,
                        "deactivated": r.deactivated,
                        "unchanged": r.unchanged,
                        "products": len(r.products),
                        "before": before,
                        "after": after,
                    }
                )
            out["d"] = runs
    finally:
        await ch.close()
    return out


# ================================================================ main


def run_server_part(tmp: Path, db_url: str, parts: str, a: argparse.Namespace, label: str) -> dict[str, Any]:
    server = None
    proc = conn = None
    try:
        t0 = time.perf_counter()
        server = c.RustBillServer(
            tmp, db_url, [c.TEST_PLUGINS / "t_provider.py"], uvloop=not a.no_uvloop, log_level=a.log_level
        ).start()
        print(f"# {label}: server on {server.address} (started in {time.perf_counter() - t0:.1f}s)", flush=True)
        job = {
            "address": server.address,
            "token": server.token("admin"),
            "db_url": db_url,
            "parts": parts,
            "server_pid": server.proc.pid if server.proc else None,
            "duration": a.duration,
            "rounds": a.rounds,
            "warmup": a.warmup,
            "evictions": a.evictions,
            "products": a.products,
            "uvloop": not a.no_uvloop,
        }
        proc, conn = c.spawn(server_client_main, job)
        return c.receive(proc, conn, f"client ({label})")  # type: ignore[no-any-return]
    except RuntimeError:
        if server is not None:
            print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        c.stop_spawned(proc, conn, grace=0.5)
        if server is not None:
            server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--pg",
        default="",
        help="PostgreSQL server or new database for (d), e.g. "
        f"{c.DEFAULT_PG}/rustbill_bench_rt (created, dropped afterwards). Default: {c.DEFAULT_PG} "
        "with a random database name, when reachable",
    )
    g.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per target, concurrency and round for (a)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds for (a), order alternated (default 2)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per target for (a)")
    ap.add_argument("--repeats", type=int, default=7, help="timed batches per in-process figure (median; default 7)")
    ap.add_argument("--batch", type=float, default=0.1, help="seconds per in-process batch (default 0.1)")
    ap.add_argument("--evictions", type=int, default=50, help="evict-then-call samples for (c)")
    ap.add_argument("--products", type=int, default=10_000, help="products for (d) (default 10000)")
    ap.add_argument("--only", default="abcd", help="parts to run, e.g. 'bd' (default abcd)")
    ap.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="server log level (default INFO, the server's default)",
    )
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop everywhere")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (server logs)")
    a = ap.parse_args()
    if not (
        0 < a.duration <= 600
        and 0 <= a.warmup <= 60
        and 1 <= a.rounds <= 100
        and 1 <= a.repeats <= 100
        and 0 < a.batch <= 10
        and 1 <= a.evictions <= 10_000
        and 1 <= a.products <= 1_000_000
    ):
        ap.error("an option is out of range")
    parts = set(a.only)
    c.install_sigterm()

    pg: c.PgDatabase | None = None
    if "d" in parts and not a.no_pg:
        if a.pg:
            pg = c.PgDatabase(a.pg)
        elif c.pg_reachable():
            pg = c.PgDatabase(c.DEFAULT_PG)
    print(f"# bench_runtime: {c.machine_line()}")
    print(
        f"# uvloop {'off' if a.no_uvloop else 'on'}, server log level {a.log_level}, "
        f"PostgreSQL {'database ' + pg.name if pg else 'skipped'}",
        flush=True,
    )

    results: dict[str, Any] = {}
    proc = conn = None
    with c.workdir("rustbill-bench-runtime-", keep=a.keep) as tmp:
        try:
            if parts & {"b", "c"}:
                t0 = time.perf_counter()
                job = {
                    "tmp": str(tmp / "inproc"),
                    "uvloop": not a.no_uvloop,
                    "target_s": a.batch,
                    "repeats": a.repeats,
                    "evictions": a.evictions,
                }
                proc, conn = c.spawn(inproc_main, job)
                results["inproc"] = c.receive(proc, conn, "in-process benchmark")
                c.stop_spawned(proc, conn)
                proc = conn = None
                print(f"# in-process part done in {time.perf_counter() - t0:.1f}s", flush=True)
            server_parts = "".join(sorted(parts & {"a", "c", "d"}))
            if server_parts:
                results["sqlite"] = run_server_part(
                    tmp / "sqlite", f"sqlite:///{tmp / 'sqlite.sqlite3'}", server_parts, a, "SQLite"
                )
            if pg is not None:
                db_url = pg.create()
                results["pg"] = run_server_part(tmp / "pg", db_url, "d", a, "PostgreSQL")
        except KeyboardInterrupt:
            print("\ninterrupted; stopping servers", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            c.stop_spawned(proc, conn, grace=0.5)
            if pg is not None:
                pg.drop()

    report(results, a, parts)
    return 0


# ================================================================ report


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def report(results: dict[str, Any], a: argparse.Namespace, parts: set[str]) -> None:
    verdicts: list[tuple[str, str, bool]] = []
    sq = results.get("sqlite", {})

    if "a" in sq:
        res = sq["a"]
        print(f"\n(a) through the server (SQLite), t_provider query_price; {a.rounds} x {a.duration:g}s per cell")
        rows = []
        for name in ("QueryPrice", "GetPluginInterface"):
            r1, r16 = res[name][1], res[name][16]
            rows.append(
                [
                    name,
                    c.ms(r1.pct(50)),
                    c.ms(r1.pct(99)),
                    f"{r1.rps:,.0f}",
                    f"{r16.rps:,.0f}",
                    c.ms(r16.pct(50)),
                    c.ms(r16.pct(99)),
                    f"{r16.server_us_per_call:.0f}",
                    r1.n_errors + r16.n_errors,
                ]
            )
        print(
            c.table(
                [
                    "RPC",
                    "c=1 p50 ms",
                    "c=1 p99 ms",
                    "c=1 rps",
                    "c=16 rps",
                    "c=16 p50 ms",
                    "c=16 p99 ms",
                    "c=16 server CPU us/call",
                    "errors",
                ],
                rows,
            )
        )
        q, g = res["QueryPrice"][1], res["GetPluginInterface"][1]
        p50r, p99r = q.pct(50) / g.pct(50), q.pct(99) / g.pct(99)
        rps_r = res["QueryPrice"][16].rps / res["GetPluginInterface"][16].rps
        print(f"QueryPrice / GetPluginInterface: p50 {p50r:.2f}x, p99 {p99r:.2f}x (c=1); rps {rps_r:.2f}x (c=16)")
        verdicts.append(("(a) QueryPrice p50 <= 1.3x GetPluginInterface p50", f"{p50r:.2f}x", p50r <= 1.3))
        verdicts.append(("(a) QueryPrice p99 <= 1.3x GetPluginInterface p99", f"{p99r:.2f}x", p99r <= 1.3))
        errs = sum(r.n_errors for d in res.values() for r in d.values())
        verdicts.append(("(a) error replies == 0", str(errs), errs == 0))

    ip = results.get("inproc")
    if ip is not None and "b" in parts:
        print(
            "\n(b) in-process dispatch, us per call (median of batches; runtime logs at INFO to a file, "
            "as the server does)"
        )
        rows = []
        for pid, d in ip["dispatch"].items():
            over = d["runtime"] - d["direct"]
            rows.append(
                [
                    pid,
                    d["kind"],
                    us(d["direct"]),
                    us(d["direct_checked"]),
                    us(d["runtime"]),
                    us(d["runtime_quiet"]),
                    us(over),
                    us(d["runtime_quiet"] - d["direct"]),
                ]
            )
            verdicts.append(
                (f"(b) runtime.call overhead < 150 us ({d['kind']}, {pid})", f"{over * 1e6:.1f} us", over < 150e-6)
            )
        print(
            c.table(
                [
                    "plugin",
                    "kind",
                    "direct",
                    "direct+check",
                    "runtime.call",
                    "call (no log)",
                    "overhead",
                    "overhead (no log)",
                ],
                rows,
            )
        )
        print("overhead = runtime.call(check=check_price) - the plugin function called directly")
        print("\nwhere runtime.call spends it (us):")
        print(c.table(["step", "us"], [[k, us(v)] for k, v in ip["breakdown"].items()]))

    if "c" in parts:
        rows = []
        if ip is not None:
            for k, v in ip["evict"].items():
                rows.append(
                    [f"in-process: {k}", len(v), c.ms(c.percentile(v, 50)), c.ms(c.percentile(v, 90)), c.ms(max(v))]
                )
        if "c" in sq:
            for k in ("steady", "first"):
                v = sq["c"][k]
                label = (
                    "server: QueryPrice right after UpdatePluginInterface"
                    if k == "first"
                    else "server: QueryPrice, binding cached"
                )
                rows.append([label, len(v), c.ms(c.percentile(v, 50)), c.ms(c.percentile(v, 90)), c.ms(max(v))])
        print("\n(c) first call after an eviction (t_provider)")
        print(c.table(["case", "n", "p50 ms", "p90 ms", "max ms"], rows))
        if ip is not None:
            v = ip["evict"]["evict+Providers.query_price"]
            verdicts.append(
                (
                    "(c) in-process first call after evict < 5 ms (p50)",
                    f"{c.percentile(v, 50) * 1e3:.2f} ms",
                    c.percentile(v, 50) < 5e-3,
                )
            )
        if "c" in sq:
            v = sq["c"]["first"]
            verdicts.append(
                (
                    "(c) server first QueryPrice after evict < 5 ms (p50)",
                    f"{c.percentile(v, 50) * 1e3:.2f} ms",
                    c.percentile(v, 50) < 5e-3,
                )
            )
            verdicts.append(("(c) bad replies == 0", str(sq["c"]["errors"]), sq["c"]["errors"] == 0))

    if "d" in parts:
        print(f"\n(d) SyncProducts of {a.products:,} products through the server")
        rows = []
        for db_label, key in (("SQLite", "sqlite"), ("PostgreSQL", "pg")):
            runs = results.get(key, {}).get("d")
            if not runs:
                continue
            for r in runs:
                wrote = r["before"] != r["after"]
                rows.append(
                    [
                        db_label,
                        r["label"],
                        f"{r['seconds']:.3f}",
                        r["created"],
                        r["updated"],
                        r["deactivated"],
                        r["unchanged"],
                        r["products"],
                        f"{r['bytes'] / 1e6:.2f}",
                        "yes" if wrote else "no",
                    ]
                )
            first, rerun = runs[0], runs[1]
            verdicts.append(
                (
                    f"(d) {db_label}: first run < 2 s",
                    f"{first['seconds']:.3f} s",
                    first["seconds"] < 2.0 and first["created"] == a.products,
                )
            )
            verdicts.append((f"(d) {db_label}: re-run < 1 s", f"{rerun['seconds']:.3f} s", rerun["seconds"] < 1.0))
            clean = all(
                r["unchanged"] == a.products
                and r["created"] == 0
                and r["updated"] == 0
                and r["deactivated"] == 0
                and r["before"] == r["after"]
                for r in runs[1:]
            )
            verdicts.append(
                (
                    f"(d) {db_label}: re-runs wrote no row",
                    f"unchanged {rerun['unchanged']}, "
                    + ("no write" if rerun["before"] == rerun["after"] else "TABLE CHANGED"),
                    clean,
                )
            )
        print(
            c.table(
                [
                    "db",
                    "run",
                    "seconds",
                    "created",
                    "updated",
                    "deact.",
                    "unchanged",
                    "products",
                    "reply MB",
                    "table changed",
                ],
                rows,
            )
        )
        print("table changed: max(updated_at) or count(*) of products differ before/after the call")

    print("\ntargets (issue 3):")
    w = max((len(v[0]) for v in verdicts), default=10)
    for name, fig, ok in verdicts:
        print(f"  {name.ljust(w)}  {fig:>24}  {c.verdict(ok)}")


if __name__ == "__main__":
    sys.exit(main())
