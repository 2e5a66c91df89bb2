"""Test helpers: run real server processes and the CLI against a fresh database."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import grpc

from rustbill.db import Database
from rustbill.pb import (
    balance_pb2_grpc,
    downstream_pb2_grpc,
    instance_pb2_grpc,
    integration_pb2_grpc,
    order_pb2,
    product_service_pb2_grpc,
)
from rustbill.pb import integration_pb2 as pb
from rustbill.plugins.host import _Zygote
from rustbill.sdk import testing

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PLUGINS = ROOT / "plugins"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"
ADMIN_PASSWORD = "test-admin-password"
_LISTEN_RE = re.compile(r"listening on (\S+):(\d+)")
_HTTP_RE = re.compile(r"HTTP \(.*\) on https?://(\S+):(\d+)")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------- databases


def _in_thread(coro: Any) -> Any:
    """Run ``coro`` to its end in a thread of its own (callers may be inside a running event loop:
    async fixtures)."""
    import asyncio

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Databases:
    """Fresh databases for server processes: SQLite files, or PostgreSQL databases when
    RUSTBILL_TEST_DATABASE_URL names one (each extra server gets its own database on that
    PostgreSQL server, dropped afterwards).

    ``share_base=False`` never hands out the named database itself: parallel test workers
    (pytest-xdist) each run their own shared server, and two servers on one database would see
    each other's rows."""

    def __init__(self, tmp: Path, *, share_base: bool = True) -> None:
        self.tmp = tmp
        self.base = os.environ.get("RUSTBILL_TEST_DATABASE_URL", "")
        self.is_pg = self.base.startswith(("postgresql", "postgres"))
        self._created: list[str] = []
        self._used_base = not share_base
        self._template: str | None = None

    def new(self) -> str:
        """A database at the newest migration, with no rows: a copy of one migrated once (the
        servers' own ``migrate`` at start then has nothing to do; a full migration costs a server
        start a third of a second, more on PostgreSQL). The first PostgreSQL one may be the named
        database itself, as it is."""
        if not self.is_pg:
            path = self.tmp / (unique("db") + ".sqlite3")
            _in_thread(testing._new_schema(path))
            return f"sqlite:///{path}"
        if not self._used_base:
            self._used_base = True
            return self.base
        if self._template is None:
            self._template = self._create(None)
            migrated = Database(self._url(self._template))

            async def migrate() -> None:
                try:
                    await migrated.migrate()
                finally:
                    await migrated.dispose()

            _in_thread(migrate())
        return self._url(self._create(self._template))

    def _create(self, template: str | None) -> str:
        name = f"{self.base.rsplit('/', 1)[1].split('?')[0]}_{secrets.token_hex(3)}"
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self._created.append(name)
        return name

    def _url(self, name: str) -> str:
        return f"{self.base.rsplit('/', 1)[0]}/{name}"

    def _admin(self, sql: str) -> None:
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self.base.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        _in_thread(go())

    def drop_all(self) -> None:
        for name in self._created:
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception:
                pass


# ---------------------------------------------------------------- the command line


class _CliForkServer:
    """tests/cli_forkserver.py, started once per test process: it has imported the CLI's modules
    and forks one child per ``rustbill`` command line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._pids: dict[int, int] = {}
        self._codes: dict[int, int] = {}
        self._tmp: Path | None = None

    def _ensure(self) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self._proc
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("cli_forkserver.py")), str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if b"ready" not in ready:
                proc.kill()
                raise AssertionError(f"the CLI fork server did not start: {ready!r}")
            self._proc = proc
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="rustbill-cli-"))  # (the commands' stdio files)
                atexit.register(shutil.rmtree, self._tmp, True)
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()
            atexit.register(self._close, proc)
            return proc

    @staticmethod
    def _close(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            with self._cond:
                if "pid" in msg:
                    self._pids[msg["id"]] = msg["pid"]
                else:
                    self._codes[msg["id"]] = msg["code"]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _send(self, request: dict[str, Any]) -> None:
        proc = self._ensure()
        assert proc.stdin is not None
        with self._lock:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()

    def start(self, args: list[str], *, cwd: Path, env: Mapping[str, str], output: Path) -> _Forked:
        """``python -m rustbill ARGS`` as a long-running process (a server) in a session of its own,
        its stdout and stderr both written to ``output`` (a FIFO the caller reads)."""
        rid = next(self._ids)
        self._send({"id": rid, "args": args, "cwd": str(cwd), "env": dict(env), "stdin": None,
                    "stdout": str(output), "stderr": str(output), "new_session": True})  # fmt: skip
        pid = self._reported(self._pids, rid, None, about=args)
        assert pid is not None
        return _Forked(self, rid, pid)

    def _reported(
        self, table: dict[int, int], rid: int, timeout: float | None, *, about: list[str] | None = None
    ) -> int | None:
        """What the fork server reported for request ``rid`` in ``table`` (its pid, or its exit
        code), taken out of it; None when not within ``timeout`` seconds. With ``about`` (the
        command's arguments), the fork server ending first is an AssertionError naming it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while rid not in table:
                if about is not None and (self._proc is None or self._proc.poll() is not None):
                    code = self._proc.returncode if self._proc is not None else None
                    raise AssertionError(f"the CLI fork server ended ({code}) during rustbill {about}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(1.0 if left is None else min(left, 1.0))
            return table.pop(rid)

    def run(
        self, args: list[str], *, cwd: Path, env: Mapping[str, str], stdin: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        if not Path(cwd).is_dir():  # (as subprocess.run: an error here, not in the command)
            raise FileNotFoundError(2, "No such directory", str(cwd))
        self._ensure()
        assert self._tmp is not None
        rid = next(self._ids)
        files = {k: self._tmp / f"{rid}.{k}" for k in ("stdin", "stdout", "stderr")}
        if stdin is not None:
            files["stdin"].write_text(stdin)
        request = {
            "id": rid, "args": args, "cwd": str(cwd), "env": dict(env),
            "stdin": str(files["stdin"]) if stdin is not None else None,
            "stdout": str(files["stdout"]), "stderr": str(files["stderr"]),
        }  # fmt: skip
        self._send(request)
        cmd = [sys.executable, "-m", "rustbill", *args]
        code = self._reported(self._codes, rid, timeout, about=args)
        with self._cond:
            pid = self._pids.pop(rid, None)
        if code is None:  # (as subprocess.run: the process is killed at the timeout)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            # Text as subprocess.run(text=True) decodes it: the locale's encoding, universal newlines.
            out, err = (files[k].read_text() if files[k].exists() else "" for k in ("stdout", "stderr"))
        finally:
            for f in files.values():
                f.unlink(missing_ok=True)
        if code is None:
            raise subprocess.TimeoutExpired(cmd, timeout, out, err)
        return subprocess.CompletedProcess(cmd, code, out, err)


class _Forked:
    """What ServerProcess uses of a subprocess.Popen, for a process the CLI fork server forked."""

    def __init__(self, forks: _CliForkServer, rid: int, pid: int) -> None:
        self._forks = forks
        self._rid = rid
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._forks._reported(self._forks._codes, self._rid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._forks._reported(self._forks._codes, self._rid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(["rustbill", "serve"], timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # (as Popen: never a signal to a pid that may be reused)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_cli_forks = _CliForkServer()


def run_cli(
    args: list[str], *, cwd: Path, env: Mapping[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m rustbill ARGS`` in ``cwd`` with exactly ``env``, as subprocess.run(capture_output=True,
    text=True) runs it: a process of its own, its exit code, stdout and stderr. The process is forked
    from tests/cli_forkserver.py, which has the CLI's modules imported already (about a second less
    a command than a new interpreter); TESTS_CLI_SUBPROCESS=1 starts a new interpreter each time."""
    if os.environ.get("TESTS_CLI_SUBPROCESS") == "1":
        return subprocess.run(
            [sys.executable, "-m", "rustbill", *args], cwd=cwd, env=env, input=stdin,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    return _cli_forks.run(args, cwd=cwd, env=env, stdin=stdin, timeout=timeout)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


# ---------------------------------------------------------------- server processes


class ServerProcess:
    """A real ``python -m rustbill serve`` on a port chosen by the OS."""

    def __init__(
        self,
        workdir: Path,
        db_url: str,
        *,
        plugins: list[Path] | None = None,
        env: dict[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        """``env`` overrides the settings below; ``base_env`` is what the process inherits
        (default: this process's environment)."""
        self.workdir = workdir
        self.db_url = db_url
        self.plugins_dir = workdir / "plugins"
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        for p in plugins or []:
            shutil.copy(p, self.plugins_dir / p.name)
        self.log_path = workdir / "server.log"
        self.env = {
            **(os.environ if base_env is None else base_env),
            "RUSTBILL_DB__URL": db_url,
            "RUSTBILL_SERVER__LISTEN": "127.0.0.1:0",
            "RUSTBILL_HTTP__LISTEN": "127.0.0.1:0",
            "RUSTBILL_SERVER__GRACE_SECONDS": "10",
            "RUSTBILL_PLUGINS__DIR": str(self.plugins_dir),
            "RUSTBILL_PLUGINS__RESCAN_SECONDS": "0.2",
            "RUSTBILL_PLUGINS__HEALTH_INTERVAL_SECONDS": "0",
            "RUSTBILL_DATA__DIR": str(workdir / "data"),
            "RUSTBILL_BOOTSTRAP__ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RUSTBILL_AUTH__CACHE_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[str] | _Forked | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._channel: grpc.Channel | None = None

    # -- lifecycle

    def start(self, timeout: float = 60) -> ServerProcess:
        mark = self.log_mark()  # a restarted server: read only what this run logs
        self.http_port = None
        if os.environ.get("TESTS_CLI_SUBPROCESS") == "1":
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rustbill", "serve"],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            output: Any = self.proc.stdout
        else:  # forked from the CLI fork server (see run_cli): the same process, a second sooner
            fifo = Path(tempfile.mkdtemp(prefix="rustbill-serve-")) / "output"
            os.mkfifo(fifo)
            self.proc = _cli_forks.start(["serve"], cwd=self.workdir, env=self.env, output=fifo)
            output = fifo
        self._pump_thread = threading.Thread(target=self._pump, args=(output,), daemon=True)
        self._pump_thread.start()
        self.port = self.wait_for_listen(timeout, start=mark)
        if self.env.get("RUSTBILL_HTTP__LISTEN"):
            m = self.wait_for_log(_HTTP_RE.pattern, timeout, mark)
            self.http_port = int(m.group(2))
        return self

    def _pump(self, output: Any) -> None:
        """Copy the server's output to the log (a pipe, or a FIFO's path: opened here, once the
        server has opened its end, and removed)."""
        if isinstance(output, Path):
            stream = output.open()  # (text, as Popen(text=True) reads)
            shutil.rmtree(output.parent, ignore_errors=True)
        else:
            stream = output
        with self.log_path.open("a") as f, stream:
            for line in stream:
                f.write(line)
                f.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 30, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern!r}; log:\n{''.join(self._lines[-40:])}")
                if self.proc is not None and self.proc.poll() is not None and i >= len(self._lines):
                    raise AssertionError(f"server exited ({self.proc.returncode}); log:\n{''.join(self._lines[-40:])}")
                self._cond.wait(min(left, 0.2))

    def log_mark(self) -> int:
        with self._cond:
            return len(self._lines)

    @property
    def log(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def log_tail(self, n: int = 40) -> str:
        with self._cond:
            return "".join(self._lines[-n:])

    def wait_for_listen(self, timeout: float = 60, start: int = 0) -> int:
        m = self.wait_for_log(r"listening on \S+:\d+", timeout, start)
        return int(_LISTEN_RE.search(m.group(0)).group(2))  # type: ignore[union-attr]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
            self._pump_thread.join(5)
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop within the timeout") from None

    # -- clients

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def stub(self) -> integration_pb2_grpc.IntegrationServiceStub:
        return integration_pb2_grpc.IntegrationServiceStub(self.channel())

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``rustbill ARGS`` run in the server's folder with its environment: a process of its own
        (forked from the tests' CLI fork server, see run_cli)."""
        res = run_cli(list(args), cwd=self.workdir, env=self.env, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"rustbill {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def token(self, user: str = "admin", ttl: int | None = None) -> str:
        args = ["token", "create", "--user", user]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        return self.cli(*args).stdout.strip()

    def add_plugin(self, path: Path, name: str | None = None) -> Path:
        dest = self.plugins_dir / (name or path.name)
        tmp = dest.with_suffix(".tmp")
        shutil.copy(path, tmp)
        tmp.replace(dest)
        return dest


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def plugin_def_id(stub: Any, token: str, plugin_id: str) -> str:
    for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins:
        if p.plugin_id == plugin_id:
            return p.id
    raise AssertionError(f"plugin {plugin_id} not listed")


def create_interface(stub: Any, token: str, plugin_id: str, config: str = "{}", name: str | None = None) -> Any:
    req = pb.CreatePluginInterfaceRequest(
        plugin_def_id=plugin_def_id(stub, token, plugin_id), display_name=name or unique(plugin_id), config_json=config
    )
    return stub.CreatePluginInterface(req, metadata=md(token)).interface


def but_health(iface: Any) -> Any:
    """An interface message without its health fields: a new or re-enabled interface is checked at
    once in the background, so they may change between two reads."""
    out = type(iface)()
    out.CopyFrom(iface)
    for f in ("is_healthy", "last_check_at", "health_error"):
        out.ClearField(f)
    return out


@contextmanager
def raises_code(code: grpc.StatusCode, match: str | None = None) -> Iterator[dict[str, Any]]:
    """Assert that the block raises an RpcError with ``code`` (and a details text matching)."""
    info: dict[str, Any] = {}
    try:
        yield info
    except grpc.RpcError as exc:
        got = exc.code()  # type: ignore[attr-defined]
        details = exc.details() or ""  # type: ignore[attr-defined]
        info["details"] = details
        assert got == code, f"expected {code.name}, got {got.name}: {details}"
        assert "Traceback" not in details
        if match is not None:
            assert re.search(match, details), f"{details!r} does not match {match!r}"
        return
    raise AssertionError(f"expected {code.name}, but the call succeeded")


# The order the customer tests place (tests/plugins/t_provider.py prices it).
SERVER_SPEC = order_pb2.ServerSpec(cpu_cores=2, memory_gb=4, disk_gb=50, region="eu", os="debian-12")


def customer_stubs(channel: grpc.Channel) -> dict[str, Any]:
    """The customer-facing services on one channel: products, instances, balance, (API) keys."""
    return {
        "products": product_service_pb2_grpc.ProductServiceStub(channel),
        "instances": instance_pb2_grpc.InstanceServiceStub(channel),
        "balance": balance_pb2_grpc.BalanceServiceStub(channel),
        "keys": downstream_pb2_grpc.ApiKeyServiceStub(channel),
    }


def place_order(
    stub: Any, interface_id: str, token: str, key: str | None = None, spec: Any = SERVER_SPEC, **kwargs: Any
) -> Any:
    """CreateUpstreamInstance as ``token``, with an ``idempotency-key`` when ``key`` is given."""
    meta = md(token) + ([("idempotency-key", key)] if key else [])
    request = pb.UpstreamOrderRequest(interface_id=interface_id, server_spec=spec)
    return stub.CreateUpstreamInstance(request, metadata=meta, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_uuid() -> str:
    return str(uuid.uuid4())


def query_db(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read straight from a server's database (to check what was written)."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from rustbill.config import async_db_url

    async def go() -> list[tuple[Any, ...]]:
        engine = create_async_engine(async_db_url(db_url))
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def write_db(db_url: str, sql: str, **params: Any) -> int:
    """Run a statement straight on a server's database (to stage a state, e.g. an order whose answer
    was lost); returns the number of rows it changed."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from rustbill.config import async_db_url

    async def go() -> int:
        engine = create_async_engine(async_db_url(db_url))
        try:
            async with engine.begin() as conn:
                return int((await conn.execute(text(sql), params)).rowcount)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def lose_the_answer(db_url: str, key: str) -> None:
    """Make the order ``key`` look like one whose create_instance answer never arrived: no provider
    instance id, status "unknown", no attempt running."""
    n = write_db(
        db_url,
        "UPDATE instances SET provider_instance_id = NULL, status = 'unknown', ip_address = '', owner = NULL "
        "WHERE idempotency_key = :k",
        k=key,
    )
    assert n == 1, f"{n} orders with key {key!r}"


def retry_while_reconciled(call: Any, timeout: float = 15) -> Any:
    """``call()`` again while it answers UNAVAILABLE "order … is being reconciled" (the reconciler
    or another request is settling that order right now), up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            details = exc.details() or ""  # type: ignore[attr-defined]
            if exc.code() != grpc.StatusCode.UNAVAILABLE or "is being reconciled" not in details:  # type: ignore[attr-defined]
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _SharedZygote:
    """What a ``Workers`` sees of the plugin zygote (rustbill.plugins.host._Zygote): here one
    zygote process per event loop, shared by the in-process hosts of this test process, instead of
    a new one (a new interpreter) per host. Each worker is still forked fresh for its host, with
    its limits; its exit is reported to the host's ``Workers``; a host's close() stops its own
    workers, and the zygote lives on for the next host (it dies with this process)."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[Any, tuple[_Zygote, dict[int, Any], dict[int, int]]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, on_exit: Any) -> None:
        self._on_exit = on_exit

    async def fork(self, request: dict[str, Any]) -> tuple[int, socket.socket]:
        import asyncio

        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is None:
            owners: dict[int, Any] = {}
            early: dict[int, int] = {}  # exits seen before the fork's caller got the pid

            def route(pid: int, code: int) -> None:
                on_exit = owners.pop(pid, None)
                if on_exit is None:
                    early[pid] = code
                else:
                    on_exit(pid, code)

            entry = self._by_loop[loop] = (_Zygote(route), owners, early)
        zygote, owners, early = entry
        pid, sock = await zygote.fork(request)
        if pid in early:
            self._on_exit(pid, early.pop(pid))
        else:
            owners[pid] = self._on_exit
        return pid, sock

    async def close(self) -> None:
        pass  # (the hosts' workers are stopped by their Workers; the zygote serves the next host)


class PluginHost(testing.PluginHost):
    """A shipped plugin in process on the test's database (rustbill.sdk.testing.PluginHost, which
    authors use too): Channels and Providers over a PluginRuntime, interfaces made the way the
    server makes them. The plugin is loaded at the first ``interface()``. Its workers are forked by
    a plugin zygote shared with the other hosts of this test process (_SharedZygote)."""

    def __init__(self, db: Any, plugin_id: str, *, call_timeout: float = 30.0) -> None:
        super().__init__(SHIPPED_PLUGINS / f"{plugin_id}.py", db=db, call_timeout=call_timeout)
        workers = self.registry.workers
        workers.zygote = _SharedZygote(workers._exited)  # type: ignore[assignment]


class TlsServer(ServerProcess):
    """A server whose two listeners serve TLS with a certificate of ``ca`` (a ``trustme.CA``) for
    127.0.0.1 and localhost; its clients trust only that CA."""

    def __init__(self, workdir: Path, db_url: str, ca: Any, **kw: Any) -> None:
        super().__init__(workdir, db_url, **kw)
        self.ca = ca
        self.tls_dir = workdir / "tls"
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self.ca_pem = ca.cert_pem.bytes()
        (self.tls_dir / "ca.pem").write_bytes(self.ca_pem)
        self.write_cert(ca)
        self.env["RUSTBILL_SERVER__TLS_CERT"] = str(self.tls_dir / "cert.pem")
        self.env["RUSTBILL_SERVER__TLS_KEY"] = str(self.tls_dir / "key.pem")

    def write_cert(self, ca: Any, *, key_of: Any = None) -> Any:
        """Replace the served files with a new certificate of ``ca`` (atomically, file by file);
        ``key_of``: write another certificate's key instead (a broken pair)."""
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        for name, blob in (("cert.pem", leaf.cert_chain_pems), ("key.pem", [(key_of or leaf).private_key_pem])):
            tmp = self.tls_dir / (name + ".tmp")
            tmp.write_bytes(b"".join(b.bytes() for b in blob))
            tmp.replace(self.tls_dir / name)
        return leaf

    @property
    def http_url(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.secure_channel(self.address, grpc.ssl_channel_credentials(self.ca_pem))
        return self._channel
