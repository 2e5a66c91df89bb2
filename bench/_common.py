"""Shared pieces of the benchmarks: server processes, databases, a gRPC load client, tables.

Layout of a benchmark run (both scripts):

- the *main* process never creates a gRPC object: it starts the servers (``python -m rustbill
  serve`` through the test suite's ``ServerProcess``, tests/helpers.py; the bare server through
  ``multiprocessing`` with ``spawn``),
  mints a token with the CLI, and spawns one *client* process that does all gRPC work and sends
  its figures back through a pipe;
- every process started here is stopped in ``finally`` blocks (also on Ctrl-C and SIGTERM).

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# Servers and commands as an operator starts them, each a new interpreter (not forked from the tests'
# fork server, whose shared pages would make a server's memory and start-up look smaller than they are).
os.environ["TESTS_CLI_SUBPROCESS"] = "1"
from helpers import SHIPPED_PLUGINS as SHIPPED_PLUGINS  # noqa: E402  (re-exported for the benchmarks)
from helpers import TEST_PLUGINS as TEST_PLUGINS  # noqa: E402
from helpers import ServerProcess  # noqa: E402  (the test suite's helpers)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"

# Hard bounds so that no loop of a benchmark can run away.
MAX_CALLS_PER_RUN = 2_000_000
CLIENT_RESULT_TIMEOUT = 900.0


# ---------------------------------------------------------------- signals


def install_sigterm() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the main process, so that ``finally`` blocks
    stop every process started here (also when started with SIGINT ignored, e.g. in background)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def child_signals() -> None:
    """Child processes leave Ctrl-C to the main process, which stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------- PostgreSQL databases


def pg_url_parts(url: str) -> tuple[str, str]:
    """``(server URL without database, database name or "")`` of a postgresql:// URL on loopback."""
    u = urlsplit(url)
    if u.scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"not a postgresql:// URL: {url}")
    if (u.hostname or "") not in LOOPBACK:
        raise SystemExit(f"the benchmarks only talk to 127.0.0.1; refusing database host {u.hostname!r}")
    name = u.path.lstrip("/")
    base = urlunsplit(("postgresql", u.netloc, "", u.query, ""))
    return base, name


def _pg_admin(base: str, *sql: str, fetch: str | None = None, timeout: float = 5.0) -> Any:
    import asyncpg

    async def go() -> Any:
        conn = await asyncpg.connect(f"{base}/postgres", timeout=timeout)
        try:
            if fetch is not None:
                return await conn.fetchval(fetch)
            for s in sql:
                await conn.execute(s)
            return None
        finally:
            await conn.close()

    return asyncio.run(go())


def pg_reachable(url: str = DEFAULT_PG) -> bool:
    try:
        base, _ = pg_url_parts(url)
        _pg_admin(base, fetch="SELECT 1", timeout=2.0)
        return True
    except (Exception, SystemExit):
        return False


class PgDatabase:
    """A fresh PostgreSQL database, created here and dropped in ``drop()``.

    A URL naming a database creates exactly that one (refusing to touch an existing database);
    a URL without one gets ``rustbill_bench_<random>``.
    """

    def __init__(self, url: str) -> None:
        self.base, name = pg_url_parts(url)
        self.name = name or f"rustbill_bench_{secrets.token_hex(4)}"
        if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", self.name):
            raise SystemExit(f"database name {self.name!r}: use letters, digits and _ only")
        self.created = False

    @property
    def url(self) -> str:
        return f"{self.base}/{self.name}"

    def create(self) -> str:
        exists = _pg_admin(self.base, fetch=f"SELECT count(*) FROM pg_database WHERE datname = '{self.name}'")
        if exists:
            raise SystemExit(f"database {self.name!r} already exists; name a new one (it is dropped afterwards)")
        _pg_admin(self.base, f'CREATE DATABASE "{self.name}"')
        self.created = True
        return self.url

    def drop(self) -> None:
        if self.created:
            with contextlib.suppress(Exception):
                _pg_admin(self.base, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False


# ---------------------------------------------------------------- the RustBill server process


class RustBillServer(ServerProcess):
    """The test suite's server process (tests/helpers.py) with the benchmarks' settings: the
    server's own defaults (not the tests' fast plugin rescans and short auth cache), no inherited
    ``RUSTBILL_*`` variables (they would make runs incomparable), no background health round in the
    middle of a measurement, a 2 s shutdown grace, uvloop and the log level as asked."""

    def __init__(
        self,
        workdir: Path,
        db_url: str,
        plugins: Sequence[Path],
        *,
        uvloop: bool = True,
        log_level: str = "INFO",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            "RUSTBILL_SERVER__GRACE_SECONDS": "2",
            "RUSTBILL_SERVER__UVLOOP": "true" if uvloop else "false",
            "RUSTBILL_BOOTSTRAP__ADMIN_PASSWORD": secrets.token_urlsafe(18),
            "RUSTBILL_LOG__LEVEL": log_level,
            **(extra_env or {}),
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUSTBILL_")}
        super().__init__(workdir, db_url, plugins=list(plugins), env=env, base_env=base)
        for test_setting in ("RUSTBILL_PLUGINS__RESCAN_SECONDS", "RUSTBILL_AUTH__CACHE_SECONDS"):
            if test_setting not in env:
                del self.env[test_setting]

    def start(self, timeout: float = 90.0) -> RustBillServer:
        super().start(timeout)
        return self


# ---------------------------------------------------------------- spawned helper processes


def spawn(target: Callable[..., None], *args: Any) -> tuple[mp.process.BaseProcess, Any]:
    """Start ``target(conn, *args)`` in a fresh interpreter (spawn); returns (process, our end)."""
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
    proc.start()
    theirs.close()
    return proc, ours


def receive(proc: mp.process.BaseProcess, conn: Any, what: str, timeout: float = CLIENT_RESULT_TIMEOUT) -> Any:
    """The next message from a spawned process; fails if it dies or says nothing in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(0.2):
            try:
                msg = conn.recv()
            except EOFError:
                break
            if isinstance(msg, dict) and "error" in msg:
                raise RuntimeError(f"{what} failed:\n{msg['error']}")
            return msg
        if not proc.is_alive():
            break
    raise RuntimeError(f"{what}: no answer (exit code {proc.exitcode})")


def stop_spawned(proc: mp.process.BaseProcess | None, conn: Any = None, grace: float = 5.0) -> None:
    """Ask a spawned process to stop (a message on its pipe), then SIGTERM, then SIGKILL."""
    if proc is None:
        return
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.send("stop")
        with contextlib.suppress(Exception):
            conn.close()
    proc.join(grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def run_child(conn: Any, fn: Callable[[], Awaitable[Any]], uvloop: bool) -> None:
    """Run the coroutine ``fn()`` in this (child) process and send its result, or the error."""
    import traceback

    child_signals()
    try:
        result = event_loop_run(fn, uvloop)
        conn.send(result)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send({"error": traceback.format_exc()})
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def event_loop_run(fn: Callable[[], Awaitable[Any]], uvloop: bool) -> Any:
    if uvloop:
        try:
            import uvloop as _uvloop

            return _uvloop.run(fn())  # type: ignore[arg-type]
        except ImportError:
            pass
    return asyncio.run(fn())  # type: ignore[arg-type]


# ---------------------------------------------------------------- the bare server


BARE_METHOD = "/bench.Bare/Empty"


def bare_server_main(conn: Any, uvloop: bool) -> None:
    """A grpc.aio server with one empty unary method (generic handler; no auth, no database)."""
    child_signals()

    async def main() -> None:
        import grpc
        from grpc import aio

        async def empty(request: bytes, context: Any) -> bytes:
            return b""

        handler = grpc.method_handlers_generic_handler(
            "bench.Bare", {"Empty": grpc.unary_unary_rpc_method_handler(empty)}
        )
        server = aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        conn.send(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # A message or EOF on the pipe (the main process is gone) both mean: stop.
        loop.add_reader(conn.fileno(), stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    event_loop_run(main, uvloop)


# ---------------------------------------------------------------- the load client


@dataclass
class LoadResult:
    name: str
    concurrency: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    # CPU seconds used meanwhile by the server process (all its threads; NaN where /proc is missing)
    # and by this client process.
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.ok += other.ok
        self.elapsed += other.elapsed
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        self.latencies.extend(other.latencies)
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def server_us_per_call(self) -> float:
        return self.server_cpu / self.ok * 1e6 if self.ok else float("nan")

    @property
    def client_us_per_call(self) -> float:
        return self.client_cpu / self.ok * 1e6 if self.ok else float("nan")


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``; NaN if unknown."""
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


async def load(
    name: str,
    call: Callable[[bytes], Awaitable[bytes]],
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    check: Callable[[bytes], bool] | None = None,
    max_calls: int = MAX_CALLS_PER_RUN,
    server_pid: int | None = None,
) -> LoadResult:
    """Keep ``concurrency`` calls in flight for ``duration`` seconds (at most ``max_calls``)."""
    import grpc

    res = LoadResult(name, concurrency)
    lat = res.latencies
    errors = res.errors
    perf = time.perf_counter
    cpu0, srv0 = time.process_time(), process_cpu(server_pid)
    started = perf()
    deadline = started + duration
    budget = [max_calls]

    async def worker(k: int) -> None:
        i = k
        n_req = len(requests)
        while budget[0] > 0 and perf() < deadline:
            budget[0] -= 1
            req = requests[i % n_req]
            i += concurrency
            t0 = perf()
            try:
                reply = await call(req)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                key = code.name if code is not None else "UNKNOWN"
                errors[key] = errors.get(key, 0) + 1
                continue
            except Exception as exc:  # e.g. a local failure of the client
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                continue
            dt = perf() - t0
            if check is not None and not check(reply):
                errors["BAD_REPLY"] = errors.get("BAD_REPLY", 0) + 1
                continue
            lat.append(dt)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    res.elapsed = perf() - started
    res.client_cpu = time.process_time() - cpu0
    res.server_cpu = process_cpu(server_pid) - srv0
    res.ok = len(lat)
    return res


def raw_call(channel: Any, method: str, metadata: Sequence[tuple[str, str]], timeout: float = 30.0) -> Any:
    """An async callable sending pre-serialised bytes and returning the reply's bytes (no
    protobuf work on the client, so that client cost is the same for every target)."""
    mc = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    md = tuple(metadata)

    async def call(req: bytes) -> bytes:
        return await mc(req, metadata=md, timeout=timeout)  # type: ignore[no-any-return]

    return call


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        # One connection per target: not shared with another channel of this process.
        ("grpc.use_local_subchannel_pool", 1),
    ]


# ---------------------------------------------------------------- output


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}" if seconds == seconds else "n/a"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line() -> str:
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = float("nan")
    return f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load1:.2f}"


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        if keep:
            print(f"(kept work folder {d})")
        else:
            shutil.rmtree(d, ignore_errors=True)
