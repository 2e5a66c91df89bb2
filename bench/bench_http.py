"""The HTTP listener (issue "Browsers and payment gateways reach the service"): ListProviders over
gRPC-Web against the same call over native gRPC, and what running the HTTP listener costs native
gRPC.

Two real servers (``python -m rustbill serve``, fresh SQLite each, 20 enabled ``demo_cloud``
providers): A with the HTTP listener, B without (``http.listen = ""``). One load generator,
``h2load`` (Debian's ``nghttp2-client``), drives every target so that client cost is alike:
- native gRPC on A and on B: HTTP/2, one connection, 16 streams in flight;
- gRPC-Web on A: HTTP/1.1 (as browsers send it), 16 connections, one call in flight each.
Targets are measured in rounds, order rotated; the median of the rounds is reported. Each reply's
size is checked so that an error reply (HTTP 200 with a grpc-status) cannot pass as throughput.

Targets: gRPC-Web >= 60 % of native gRPC; native gRPC on A >= 90 % of B's. Prints PASS/MISS and
exits 0 either way (a shared, noisy machine: read the ratios, run it again).

    python bench/bench_http.py               # about a minute
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

PATH = "/rustbill.integration.IntegrationService/ListProviders"


def h2load(
    url: str, token: str, body: Path, *, grpc_web: bool, requests: int, concurrency: int
) -> tuple[float, int, int]:
    """(requests/s, succeeded, bytes of DATA) of one h2load run of ``requests`` calls."""
    ctype = "application/grpc-web+proto" if grpc_web else "application/grpc"
    args = ["h2load", "-n", str(requests), "-d", str(body),
            "-H", f"content-type: {ctype}", "-H", f"authorization: Bearer {token}"]  # fmt: skip
    if grpc_web:
        args += ["--h1", "-c", str(concurrency), "-m", "1", "-H", "x-grpc-web: 1"]
    else:
        args += ["-c", "1", "-m", str(concurrency), "-H", "te: trailers"]
    res = subprocess.run([*args, url + PATH], capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    data = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data", out)
    if not (rps and ok and data):
        raise RuntimeError(f"could not read h2load's output:\n{out}")
    return float(rps.group(1)), int(ok.group(1)), int(data.group(3))


def setup(server: c.RustBillServer, n: int) -> str:
    token = server.token("admin")
    base = f"http://127.0.0.1:{server.http_port}" if server.http_port else None
    import grpc

    from rustbill.pb import integration_pb2 as pb
    from rustbill.pb import integration_pb2_grpc

    with grpc.insecure_channel(server.address) as ch:
        stub = integration_pb2_grpc.IntegrationServiceStub(ch)
        md = [("authorization", f"Bearer {token}")]
        demo = next(
            p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md).plugins if p.plugin_id == "demo_cloud"
        )
        for i in range(n):
            stub.CreatePluginInterface(
                pb.CreatePluginInterfaceRequest(plugin_def_id=demo.id, display_name=f"bench-{i:02d}", config_json="{}"),
                metadata=md,
            )
    if base:  # one gRPC-Web call by hand: a reply, not an error
        headers = {"content-type": "application/grpc-web+proto", "authorization": f"Bearer {token}"}
        r = httpx.post(base + PATH, content=struct.pack(">BI", 0, 0), headers=headers)
        assert r.status_code == 200 and "grpc-status" not in r.headers and len(r.content) > 100, r.headers
    return token


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=8000, help="calls per target and round (default 8000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--concurrency", type=int, default=16, help="calls in flight (default 16)")
    ap.add_argument("--interfaces", type=int, default=20, help="enabled providers (default 20)")
    a = ap.parse_args()
    if not shutil.which("h2load"):
        print("error: h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 1
    c.install_sigterm()
    results: dict[str, list[float]] = {
        "grpc (A, HTTP listener on)": [],
        "grpc-web (A)": [],
        "grpc (B, no HTTP listener)": [],
    }
    with c.workdir("rustbill-bench-http-") as tmp:
        plugins = [c.SHIPPED_PLUGINS / "demo_cloud.py"]
        a_srv = c.RustBillServer(tmp / "a", f"sqlite:///{tmp / 'a.sqlite3'}", plugins).start()
        b_srv = c.RustBillServer(
            tmp / "b", f"sqlite:///{tmp / 'b.sqlite3'}", plugins, extra_env={"RUSTBILL_HTTP__LISTEN": ""}
        ).start()
        try:
            print(f"# bench_http: {c.machine_line()}")
            ta, tb = setup(a_srv, a.interfaces), setup(b_srv, a.interfaces)
            body = tmp / "empty.frame"
            body.write_bytes(struct.pack(">BI", 0, 0))
            targets = [
                ("grpc (A, HTTP listener on)", f"http://{a_srv.address}", ta, False),
                ("grpc-web (A)", f"http://127.0.0.1:{a_srv.http_port}", ta, True),
                ("grpc (B, no HTTP listener)", f"http://{b_srv.address}", tb, False),
            ]
            for r in range(a.rounds):
                for name, url, token, web in targets[r % 3 :] + targets[: r % 3]:
                    rps, ok, data = h2load(
                        url, token, body, grpc_web=web, requests=a.requests, concurrency=a.concurrency
                    )
                    if ok == 0 or data / ok < 100:
                        raise RuntimeError(f"{name}: replies of {data / max(ok, 1):.0f} bytes: errors, not replies")
                    results[name].append(rps)
                    time.sleep(0.2)
        finally:
            a_srv.stop()
            b_srv.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        c.table(
            ["target", "req/s (median)", "rounds"],
            [[k, f"{v:,.0f}", " ".join(f"{x:,.0f}" for x in results[k])] for k, v in med.items()],
        )
    )
    web = med["grpc-web (A)"] / med["grpc (A, HTTP listener on)"]
    cost = med["grpc (A, HTTP listener on)"] / med["grpc (B, no HTTP listener)"]
    print(f"gRPC-Web / native gRPC (same server): {web:.0%} (target >= 60 %) {c.verdict(web >= 0.6)}")
    print(f"native gRPC with / without the HTTP listener: {cost:.0%} (target >= 90 %) {c.verdict(cost >= 0.9)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
