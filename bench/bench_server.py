"""Throughput and latency of the RustBill server against a bare grpc.aio server (issue 2).

Starts a real ``python -m rustbill serve`` (fresh SQLite database in a temporary folder, or a fresh
PostgreSQL database with ``--db``), creates 20 enabled ``demo_cloud`` provider interfaces over gRPC,
and starts a bare grpc.aio server (one empty unary method, no auth, no database) in a process of its
own. One client process (spawned) then drives each target with a fixed number of calls in flight and
prints requests/s and p50/p99 latency, and the ratios against the bare server.

Targets (issue 2): ListProviders requests/s >= 70 % of the bare server's, and its p99 <= 2x the
bare server's p99. The script prints PASS/MISS and exits 0 either way.

    python bench/bench_server.py                       # about a minute
    python bench/bench_server.py --db postgresql://postgres@127.0.0.1:5432/rustbill_bench
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

SERVICE = "/rustbill.integration.IntegrationService/"


# ---------------------------------------------------------------- client process


def client_main(conn: Any, job: dict[str, Any]) -> None:
    c.run_child(conn, lambda: _client(job), job["uvloop"])


async def _client(job: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from grpc import aio

    from rustbill.pb import common_pb2
    from rustbill.pb import integration_pb2 as pb

    md = [("authorization", f"Bearer {job['token']}")]
    opts = c.channel_options()
    rb = aio.insecure_channel(job["rustbill"], options=opts)
    bare = aio.insecure_channel(job["bare"], options=opts)
    try:
        # ---- set-up: N enabled demo_cloud interfaces
        t0 = time.perf_counter()
        list_plugins = rb.unary_unary(
            SERVICE + "ListPlugins",
            request_serializer=pb.ListPluginsRequest.SerializeToString,
            response_deserializer=pb.ListPluginsResponse.FromString,
        )
        create = rb.unary_unary(
            SERVICE + "CreatePluginInterface",
            request_serializer=pb.CreatePluginInterfaceRequest.SerializeToString,
            response_deserializer=pb.CreatePluginInterfaceResponse.FromString,
        )
        plugins = (await list_plugins(pb.ListPluginsRequest(), metadata=md, timeout=30)).plugins
        demo = next((p for p in plugins if p.plugin_id == "demo_cloud"), None)
        if demo is None:
            raise RuntimeError(f"plugin demo_cloud not loaded; plugins: {[p.plugin_id for p in plugins]}")
        ids = []
        for i in range(job["interfaces"]):
            reply = await create(
                pb.CreatePluginInterfaceRequest(
                    plugin_def_id=demo.id, display_name=f"bench-{i:02d}", config_json='{"currency": "USD"}'
                ),
                metadata=md,
                timeout=30,
            )
            if not reply.interface.enabled:
                raise RuntimeError("created interface is not enabled")
            ids.append(reply.interface.id)
        # A new interface is health-checked once, at once, in the background: wait for those checks,
        # so that the replies (whose bytes are compared) do not change mid-measurement.
        get = rb.unary_unary(
            SERVICE + "GetPluginInterface",
            request_serializer=pb.GetPluginInterfaceRequest.SerializeToString,
            response_deserializer=pb.GetPluginInterfaceResponse.FromString,
        )
        for iid in ids:
            for _ in range(300):
                got = await get(pb.GetPluginInterfaceRequest(interface_id=iid), metadata=md, timeout=30)
                if got.interface.HasField("last_check_at"):
                    break
                await asyncio.sleep(0.05)
        setup_s = time.perf_counter() - t0

        list_providers = c.raw_call(rb, SERVICE + "ListProviders", md)
        get_iface = c.raw_call(rb, SERVICE + "GetPluginInterface", md)
        empty = c.raw_call(bare, c.BARE_METHOD, md)  # the same metadata: same client and HTTP/2 work

        first = pb.ListProvidersResponse.FromString(await list_providers(common_pb2.EmptyRequest().SerializeToString()))
        if len(first.providers) != len(ids):
            raise RuntimeError(f"ListProviders returned {len(first.providers)} providers, expected {len(ids)}")
        if any(len(p.spec_template.fields) == 0 for p in first.providers):
            raise RuntimeError("a provider came back without its spec template")
        lp_size = first.ByteSize()
        gpi_reqs = [pb.GetPluginInterfaceRequest(interface_id=i).SerializeToString() for i in ids]
        one = pb.GetPluginInterfaceResponse.FromString(await get_iface(gpi_reqs[0]))
        if one.interface.id != ids[0]:
            raise RuntimeError("GetPluginInterface returned another interface")

        targets = [
            ("bare grpc.aio", empty, [b""], lambda r: r == b"", job["bare_pid"]),
            ("ListProviders", list_providers, [b""], lambda r: len(r) == lp_size, job["rustbill_pid"]),
            ("GetPluginInterface", get_iface, gpi_reqs, lambda r: len(r) > 100, job["rustbill_pid"]),
        ]
        conc = job["concurrency"]
        for name, call, reqs, check, _pid in targets:  # warm-up, not counted
            await c.load(name, call, reqs, concurrency=conc, duration=job["warmup"], check=check)
        rounds: list[dict[str, c.LoadResult]] = []
        for r in range(job["rounds"]):
            k = r % len(targets)
            this: dict[str, c.LoadResult] = {}
            for name, call, reqs, check, pid in targets[k:] + targets[:k]:  # rotate the order per round
                this[name] = await c.load(
                    name, call, reqs, concurrency=conc, duration=job["duration"], check=check, server_pid=pid
                )
            rounds.append(this)
        return {
            "setup_s": setup_s,
            "providers": len(first.providers),
            "list_providers_bytes": lp_size,
            "rounds": rounds,
        }
    finally:
        await rb.close()
        await bare.close()


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--db",
        default="",
        help="postgresql://USER@127.0.0.1:5432/NEWDB: create that database, drop it "
        "afterwards (default: a fresh SQLite file)",
    )
    ap.add_argument("--concurrency", type=int, default=16, help="calls in flight (default 16)")
    ap.add_argument("--duration", type=float, default=3.5, help="seconds measured per target and round (default 3.5)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds over all targets, order rotated (default 4)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per target (default 1)")
    ap.add_argument("--interfaces", type=int, default=20, help="enabled provider interfaces (default 20)")
    ap.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="server log level (default INFO, the server's default)",
    )
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop in servers and client")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (server log)")
    a = ap.parse_args()
    for name in ("concurrency", "rounds", "interfaces"):
        if not 1 <= getattr(a, name) <= 1000:
            ap.error(f"--{name} must be between 1 and 1000")
    if not (0 < a.duration <= 600 and 0 <= a.warmup <= 60):
        ap.error("--duration must be in (0, 600], --warmup in [0, 60]")
    uvloop = not a.no_uvloop
    c.install_sigterm()

    pg = c.PgDatabase(a.db) if a.db else None
    server: c.RustBillServer | None = None
    bare_proc = bare_conn = client_proc = client_conn = None
    with c.workdir("rustbill-bench-server-", keep=a.keep) as tmp:
        try:
            db_url = pg.create() if pg else f"sqlite:///{tmp / 'bench.sqlite3'}"
            print(f"# bench_server: {c.machine_line()}")
            print(
                f"# database {'PostgreSQL ' + pg.name if pg else 'SQLite (temporary file)'}, "
                f"uvloop {'on' if uvloop else 'off'}, server log level {a.log_level}"
            )
            t0 = time.perf_counter()
            server = c.RustBillServer(
                tmp / "server", db_url, [c.SHIPPED_PLUGINS / "demo_cloud.py"], uvloop=uvloop, log_level=a.log_level
            ).start()
            start_s = time.perf_counter() - t0
            token = server.token("admin")
            bare_proc, bare_conn = c.spawn(c.bare_server_main, uvloop)
            bare_port = c.receive(bare_proc, bare_conn, "bare server", timeout=60)
            print(
                f"# RustBill server on {server.address} (started in {start_s:.1f}s), "
                f"bare server on 127.0.0.1:{bare_port}"
            )
            job = {
                "rustbill": server.address,
                "bare": f"127.0.0.1:{bare_port}",
                "rustbill_pid": server.proc.pid if server.proc else None,
                "bare_pid": bare_proc.pid,
                "token": token,
                "interfaces": a.interfaces,
                "concurrency": a.concurrency,
                "duration": a.duration,
                "rounds": a.rounds,
                "warmup": a.warmup,
                "uvloop": uvloop,
            }
            client_proc, client_conn = c.spawn(client_main, job)
            out = c.receive(client_proc, client_conn, "client")
        except KeyboardInterrupt:
            print("\ninterrupted; stopping servers", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if server is not None:
                print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
            return 1
        finally:
            c.stop_spawned(client_proc, client_conn, grace=0.5)
            c.stop_spawned(bare_proc, bare_conn)
            if server is not None:
                server.stop()
            if pg is not None:
                pg.drop()

    report(out, a)
    return 0


def report(out: dict[str, Any], a: argparse.Namespace) -> None:
    res: dict[str, c.LoadResult] = {}
    for rnd in out["rounds"]:
        for name, r in rnd.items():
            res.setdefault(name, c.LoadResult(name, r.concurrency)).merge(r)
    bare = res["bare grpc.aio"]
    print(
        f"# set-up: {out['providers']} enabled demo_cloud interfaces created in {out['setup_s']:.2f}s; "
        f"ListProviders reply {out['list_providers_bytes']} bytes"
    )
    print(
        f"# {a.concurrency} calls in flight, {a.rounds} x {a.duration:g}s per target (after {a.warmup:g}s warm-up), "
        "one client process (spawned), reply bytes checked\n"
    )
    rows = []
    for name, r in res.items():
        rows.append(
            [
                name,
                r.ok,
                f"{r.rps:,.0f}",
                c.ms(r.pct(50)),
                c.ms(r.pct(99)),
                f"{r.rps / bare.rps:.2f}" if bare.rps else "n/a",
                f"{r.pct(99) / bare.pct(99):.2f}" if bare.latencies else "n/a",
                f"{r.server_us_per_call:.0f}",
                f"{r.client_us_per_call:.0f}",
                r.n_errors,
            ]
        )
    print(
        c.table(
            [
                "target",
                "calls",
                "rps",
                "p50 ms",
                "p99 ms",
                "rps/bare",
                "p99/bare",
                "server CPU us/call",
                "client CPU us/call",
                "errors",
            ],
            rows,
        )
    )
    lp = res["ListProviders"]
    rps_ratio = lp.rps / bare.rps if bare.rps else 0.0
    p99_ratio = lp.pct(99) / bare.pct(99) if bare.latencies and lp.latencies else float("inf")
    print("\ntargets (issue 2):")
    print(f"  ListProviders rps >= 70% of bare : {rps_ratio * 100:5.1f}%   {c.verdict(rps_ratio >= 0.70)}")
    print(f"  ListProviders p99 <= 2x bare     : {p99_ratio:5.2f}x   {c.verdict(p99_ratio <= 2.0)}")
    per_round = [
        (
            rnd["ListProviders"].rps / rnd["bare grpc.aio"].rps,
            rnd["ListProviders"].pct(99) / rnd["bare grpc.aio"].pct(99),
        )
        for rnd in out["rounds"]
        if rnd["bare grpc.aio"].rps and rnd["ListProviders"].latencies
    ]
    if len(per_round) > 1:
        print(
            "  per round (noise)                : rps "
            + ", ".join(f"{x * 100:.0f}%" for x, _ in per_round)
            + "; p99 "
            + ", ".join(f"{y:.2f}x" for _, y in per_round)
        )
    total_errors = sum(r.n_errors for r in res.values())
    detail = {n: r.errors for n, r in res.items() if r.errors}
    print(
        f"  error replies (must be 0)        : {total_errors}   {c.verdict(total_errors == 0)}"
        + (f"  {detail}" if detail else "")
    )
    print(
        "\nCPU us/call: CPU time (all threads) of the server process and of the client process per "
        "successful call,\nfrom /proc; on 2 shared cores the client needs about as much as a server, so the "
        "rps of the bare\nserver is partly the client's own limit, and server CPU per call is the steadier figure."
    )


if __name__ == "__main__":
    sys.exit(main())
