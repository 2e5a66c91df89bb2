"""The server's side of plugin isolation: worker processes started, watched, limited and replaced.

The unit of isolation is the plugin: each loaded plugin file (each version of it) has a
``PluginHost`` and at most one worker process at a time, shared by all interfaces of that
plugin. A fault can therefore cost only the calls of the plugin that has it. The workers are
forked by one zygote process (``zygote.py``), so they share the interpreter's and the SDK's memory.

What the host enforces from outside, whatever the plugin's code does:
- a deadline per call: at the deadline the caller gets DEADLINE_EXCEEDED at once; the call is
  cancelled in the worker, and when it has not ended ``grace`` seconds later (a blocking ``def``,
  a busy loop) the worker is killed; its other calls end UNAVAILABLE naming the reason;
- memory: the worker's address space is limited (RLIMIT_AS); a call that runs out of it gets
  RESOURCE_EXHAUSTED and the worker is replaced;
- CPU: a worker that uses more than ``cpu_seconds_per_call`` of CPU during its oldest running
  call is killed (RESOURCE_EXHAUSTED); one that burns CPU with no call running (a thread left
  spinning) is killed and replaced;
- crashes: a worker that exits gives its calls UNAVAILABLE "plugin process for 'x' exited
  (code N)"; it is restarted at the next call, with a growing delay after repeated faults, and a
  plugin that faults ``breaker_faults`` times within ``breaker_window`` seconds is suspended for
  ``suspend_seconds`` (calls fail fast, CheckPluginHealth says why).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .loader import LoadedPlugin, PluginLoadError, PluginMeta, content_hash
from .wire import Framed, WireError

__all__ = ["PluginFault", "PluginHost", "WorkerLimits", "Workers"]

log = logging.getLogger("rustbill.plugins")
StateHandler = Callable[[str, str, dict[str, Any]], Awaitable[Any]]  # (interface_id, op, args)


@dataclass(slots=True)
class WorkerLimits:
    # Address space of one worker process (MiB); 0: no limit.
    memory_limit_mb: int = 1024
    # Scheduling priority (nice) of the workers. A worker seen keeping a core busy is lowered to 19
    # anyway, so that a spinning plugin cannot slow the server or the other plugins.
    nice: int = 0
    # Threads of one worker for plugin functions written with plain ``def``.
    max_threads: int = 16
    # CPU seconds a worker may use during its oldest running call; 0: no limit (the deadline rules).
    cpu_seconds_per_call: float = 0.0
    # CPU seconds a worker may use in 10 s with no call running before it is replaced.
    idle_cpu_seconds: float = 5.0
    # After a deadline, how long a call has to end before its worker is killed.
    grace_seconds: float = 0.5
    # A worker with no call for this long is stopped (0: never); the next call starts one.
    idle_seconds: float = 120.0
    breaker_faults: int = 5
    breaker_window_seconds: float = 60.0
    suspend_seconds: float = 60.0


class PluginFault(Exception):
    """A call that did not produce a result, described as data (``kind`` and details); the
    runtime turns it into the caller's status."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info.get("kind", "fault"))
        self.info = info


# A zygote forked by ``start_zygote_here`` and not yet taken by a server: (pid, control socket).
_early: tuple[int, socket.socket] | None = None


def start_zygote_here() -> None:
    """Fork the plugin zygote from this process now, for the server this process will run
    (``rustbill serve`` calls this before the server starts any thread). The zygote then has the
    modules this process has imported instead of starting an interpreter and importing them again
    (about 0.4 s of CPU at every start). Without it, or when this process already has threads, the
    server starts the zygote as an interpreter of its own, as it does when a zygote has ended."""
    global _early
    if _early is None:
        from .zygote import fork_from_here

        _early = fork_from_here()


def _take_early() -> tuple[int, socket.socket] | None:
    global _early
    early, _early = _early, None
    return early


def _reap(pid: int) -> None:
    """Wait for a zygote this process forked (blocking: run in a thread)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class _Zygote:
    """The zygote process and its control socket."""

    def __init__(self, on_exit: Callable[[int, int], None]) -> None:
        self._on_exit = on_exit
        self._ctl: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._forked: int | None = None  # the pid of a zygote forked by start_zygote_here
        self._ready: asyncio.Future[int] | None = None
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def _ensure(self) -> socket.socket:
        async with self._lock:
            if self._ctl is not None:
                return self._ctl
            loop = asyncio.get_running_loop()
            early = _take_early()
            if early is not None:
                self._forked, ours = early
            else:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "rustbill.plugins.zygote", str(theirs.fileno()), str(os.getpid()),
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                )  # fmt: skip
                theirs.close()
            ours.setblocking(False)
            self._ready = loop.create_future()
            self._ctl = ours
            loop.add_reader(ours, self._readable)
            try:
                await asyncio.wait_for(asyncio.shield(self._ready), 30)
            except BaseException:
                self._lost()
                raise
            return ours

    def _readable(self) -> None:
        assert self._ctl is not None
        while True:
            try:
                data = self._ctl.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            msg = json.loads(data)
            if "ready" in msg and self._ready is not None and not self._ready.done():
                self._ready.set_result(msg["ready"])
            elif "pid" in msg:
                fut = self._forks.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg["pid"])
            elif "exited" in msg:
                self._on_exit(msg["exited"], msg["code"])

    def _lost(self) -> None:
        """The zygote is gone (its workers die with it): the next fork starts a new one."""
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._ctl)
            self._ctl.close()
            self._ctl = None
        for fut in self._forks.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the plugin zygote process ended"))
        self._forks.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConnectionError("the plugin zygote process ended before it was ready"))
        self._end_forked()

    def _end_forked(self) -> asyncio.Future[None] | None:
        """Kill and reap a zygote this process forked (asyncio reaps the ones it started)."""
        pid, self._forked = self._forked, None
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return asyncio.get_running_loop().run_in_executor(None, _reap, pid)

    async def fork(self, request: dict[str, Any]) -> tuple[int, socket.socket]:
        ctl = await self._ensure()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rid = next(self._ids)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._forks[rid] = fut
        try:
            data = json.dumps({"id": rid, **request}).encode()
            while True:
                try:
                    socket.send_fds(ctl, [data], [theirs.fileno()])
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.005)
            theirs.close()
            pid = await asyncio.wait_for(fut, 30)
        except BaseException:
            self._forks.pop(rid, None)
            theirs.close()
            ours.close()
            raise
        return pid, ours

    async def close(self) -> None:
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._ctl)
            self._ctl.close()
            self._ctl = None
        reaped = self._end_forked()
        if reaped is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reaped, 5)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._proc.wait(), 5)
        self._proc = None


class _Worker:
    """One worker process, as the server sees it."""

    def __init__(self, host: PluginHost, pid: int) -> None:
        self.host = host
        self.pid = pid
        self.channel: Framed | None = None
        loop = asyncio.get_running_loop()
        # The worker's first message (loaded or load_error), or None when it ended before it.
        self.first: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        # Set when its connection ends: why (None, or the error that made the server drop it).
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.interfaces: dict[int, str] = {}  # call id → interface id (for its state requests)
        self.exit_code: asyncio.Future[int] = loop.create_future()
        self.gone = False
        # Why the server killed it: (status name, message), given to the calls it cut off.
        self.killed: tuple[str, str] | None = None
        self.stopping = False
        # No new calls: one of its def calls overran its deadline (see PluginHost._doom).
        self.doomed = False
        self.cpu_at_busy: float | None = None
        self.last_cpu: float | None = None
        self.lowered = False  # set to the lowest CPU priority (it kept a core busy)
        self.last_used = time.monotonic()
        self.idle_samples: collections.deque[tuple[float, float]] = collections.deque()
        self.reading: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        if not self.gone and self.channel is not None:
            self.channel.send(message)

    def received(self, message: dict[str, Any]) -> None:
        if not self.first.done():
            self.first.set_result(message)
        else:
            self.host.received(self, message)

    def lost(self, exc: BaseException | None) -> None:
        if not self.first.done():
            self.first.set_result(None)
        if not self.closed.done():
            self.closed.set_result(exc)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def kill(self, status: str, why: str) -> None:
        if self.gone or self.killed is not None:
            return
        self.killed = (status, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_TICK = 0.25  # seconds between two looks at the workers' CPU


class PluginHost:
    """Runs one loaded plugin file's functions in its worker process."""

    def __init__(self, workers: Workers, plugin_id: str, path: Path, data: bytes) -> None:
        self.workers = workers
        self.plugin_id = plugin_id
        self.path = path
        self.data = data
        self.content_hash = content_hash(data)
        self.meta: PluginMeta | None = None
        self._worker: _Worker | None = None
        self._start_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._faults: collections.deque[float] = collections.deque()
        self._consecutive = 0
        self._not_before = 0.0
        self._suspended_until = 0.0
        self._suspended_faults = 0
        self.last_fault = ""
        self.retired = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- state of the plugin, for health and the log ----

    def trouble(self) -> str | None:
        """Why calls of this plugin fail fast right now (suspended or waiting to restart), or None."""
        now = time.monotonic()
        if now < self._suspended_until:
            return (
                f"plugin {self.plugin_id!r} is suspended after {self._suspended_faults} faults in "
                f"{self.workers.limits.breaker_window_seconds:g} s (last: {self.last_fault}); "
                f"next try in {self._suspended_until - now:.0f} s"
            )
        if now < self._not_before:
            wait = self._not_before - now
            return f"plugin process for {self.plugin_id!r} restarts in {wait:.1f} s after: {self.last_fault}"
        return None

    def pid(self) -> int | None:
        w = self._worker
        return None if w is None or w.gone else w.pid

    # ---- starting ----

    async def load(self, seconds: float) -> PluginMeta:
        """Start the first worker: it executes the file and sends its metadata."""
        try:
            w = await asyncio.wait_for(self._start(), seconds)
        except TimeoutError:
            self._stop_starting()
            raise PluginLoadError(f"{self.path.name}: import took longer than {seconds:g}s") from None
        except _LoadFailed as exc:
            raise PluginLoadError(str(exc)) from None
        self._worker = w
        assert self.meta is not None
        return self.meta

    def _stop_starting(self) -> None:
        w = self._starting
        if w is not None:
            w.kill("UNAVAILABLE", "loading took too long")

    _starting: _Worker | None = None

    async def _start(self) -> _Worker:
        limits = self.workers.limits
        pid, sock = await self.workers.zygote.fork(
            {"plugin_id": self.plugin_id, "memory_limit_mb": limits.memory_limit_mb, "nice": limits.nice}
        )
        w = _Worker(self, pid)
        _, w.channel = await asyncio.get_running_loop().create_unix_connection(
            lambda: Framed(w.received, w.lost), sock=sock
        )
        self._starting = w
        self.workers.track(w)
        try:
            w.send(
                {
                    "t": "load",
                    "path": str(self.path),
                    "data": self.data,
                    "plugin_id": self.plugin_id,
                    "max_threads": limits.max_threads,
                    "log_level": logging.getLogger("rustbill.plugin").getEffectiveLevel(),
                }
            )
            first = await w.first
            if first is None:
                code = await _exit_code(w)
                raise _LoadFailed(f"{self.path.name}: the plugin's process exited (code {code}) while loading")
            if first.get("t") == "load_error":
                raise _LoadFailed(str(first.get("message", f"{self.path.name}: cannot be loaded")))
            meta = PluginMeta.from_dict(first["meta"])
        except BaseException:
            w.stopping = True
            w.kill("UNAVAILABLE", "load failed")
            w.close()
            self.workers.untrack(w)
            raise
        finally:
            self._starting = None
        if self.meta is None:
            self.meta = meta
        w.reading = asyncio.create_task(self._read(w), name=f"plugin-worker-{self.plugin_id}-{pid}")
        return w

    def _usable(self) -> _Worker | None:
        w = self._worker
        if w is not None and not w.gone and w.killed is None and not w.doomed:
            return w
        return None

    async def _ready_worker(self) -> _Worker:
        async with self._start_lock:
            w = self._usable()
            if w is not None:
                return w
            now = time.monotonic()
            if now < self._suspended_until:
                wait = self._suspended_until - now
                raise PluginFault({"kind": "suspended", "message": self.trouble(), "retry_after": max(1, round(wait))})
            if now < self._not_before:
                # The restart delay after repeated faults: waited out within the caller's deadline.
                await asyncio.sleep(self._not_before - now)
            try:
                w = await asyncio.wait_for(self._start(), self.workers.import_timeout)
            except (TimeoutError, _LoadFailed, OSError, WireError) as exc:
                self._stop_starting()
                why = str(exc) or "starting took too long"
                self._fault(f"restart failed: {why}")
                raise PluginFault({"kind": "start_failed", "message": why}) from None
            self._worker = w
            log.info("plugin %s: worker process %d started", self.plugin_id, w.pid)
            return w

    # ---- calls ----

    async def call(self, function: str, config: dict[str, Any], args: list[Any], *, seconds: float,
                   interface_id: str, interface_name: str, caller: str, request_id: str,
                   on_abandoned: Callable[[asyncio.Future[Any]], None] | None = None) -> Any:  # fmt: skip
        """The function's result within ``seconds``, or PluginFault describing why there is none.

        ``on_abandoned``: when the call ends for its caller (deadline, cancelled) while the plugin's
        ``def`` code still runs in its thread, it is given a future of that code's own end: its raw
        result when it answers late (within its deadline and the grace), or PluginFault when its
        worker is killed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        w = self._usable()
        if w is None:  # (none running, or a new one is starting: wait for it within the deadline)
            try:
                async with asyncio.timeout_at(deadline):
                    w = await self._ready_worker()
            except TimeoutError:
                raise PluginFault({"kind": "deadline"}) from None
        if w.gone:
            why = w.killed[1] if w.killed else "ended"
            raise PluginFault({"kind": "worker_lost", "status": "UNAVAILABLE", "message": why})
        cid = next(self._ids)
        fut: asyncio.Future[Any] = loop.create_future()
        w.last_used = time.monotonic()
        w.pending[cid] = fut
        w.interfaces[cid] = interface_id
        try:
            w.send(
                {
                    "t": "call", "id": cid, "fn": function, "config": config, "args": args,
                    "timeout": max(0.0, deadline - loop.time()), "interface_id": interface_id,
                    "interface_name": interface_name, "caller": caller, "request_id": request_id,
                    "now": self.workers.clock().isoformat() if self.workers.clock is not None else None,
                }
            )  # fmt: skip
        except WireError as exc:
            self._forget(w, cid)
            raise PluginFault({"kind": "bad_argument", "message": str(exc)}) from None
        timer = loop.call_at(deadline, _expire, fut)
        try:
            reply = await fut
        except BaseException as exc:
            if cid in w.pending:  # (no answer yet: awaiting it was cancelled, which cancels ``fut``)
                # Our deadline, or the caller went away: the call must give its time back.
                late: asyncio.Future[Any] = loop.create_future()
                w.pending[cid] = late
                is_async = self.meta is not None and self.meta.is_async.get(function, False)
                if on_abandoned is not None and not is_async:  # (a coroutine is cancelled at once)
                    on_abandoned(_unwrapped(late))
                w.send({"t": "cancel", "id": cid})
                at = max(deadline, loop.time()) + self.workers.limits.grace_seconds
                loop.call_at(at, self._overran, w, cid, function, interface_name)
                if isinstance(exc, _Expired):
                    if not is_async:
                        # A thread cannot be cancelled: new calls go to a new worker now, and
                        # this one is killed at the grace unless its late calls end first.
                        self._doom(w)
                    raise PluginFault({"kind": "deadline"}) from None
            raise
        finally:
            timer.cancel()
        self._consecutive = 0
        if reply.get("ok"):
            return reply.get("value")
        raise PluginFault(reply["error"])

    def _doom(self, w: _Worker) -> None:
        w.doomed = True
        if self._worker is w:
            self._worker = None

    def _overran(self, w: _Worker, cid: int, function: str, interface_name: str) -> None:
        if cid in w.pending and not w.gone:
            why = f"call {function} of interface {interface_name!r} did not give its time back after its deadline"
            log.warning("plugin %s: killing worker process %d: %s", self.plugin_id, w.pid, why)
            w.kill("UNAVAILABLE", why)

    def _forget(self, w: _Worker, cid: int) -> None:
        w.pending.pop(cid, None)
        w.interfaces.pop(cid, None)
        if not w.pending:
            w.cpu_at_busy = None
            w.last_used = time.monotonic()
            w.idle_samples.clear()
            if w.doomed or (self.retired and w is self._worker):
                self._stop(w)

    def received(self, w: _Worker, msg: dict[str, Any]) -> None:
        """A message from a running worker (an exception here drops the worker: see _read)."""
        kind = msg.get("t")
        if kind == "result":
            fut = w.pending.get(msg["id"])
            self._forget(w, msg["id"])
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "state":
            task = asyncio.create_task(self._state(w, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "log":
            _replay(self.plugin_id, msg)

    async def _read(self, w: _Worker) -> None:
        """Waits for the worker's connection to end; then its calls get their answers."""
        try:
            why = await w.closed
            if why is not None and not isinstance(why, OSError):  # (not the connection: its content)
                w.kill("UNAVAILABLE", f"sent a message the server cannot read ({why})")
        finally:
            w.gone = True
            w.close()
            await self._ended(w)

    async def _ended(self, w: _Worker) -> None:
        code = await _exit_code(w)
        status, why = w.killed or ("UNAVAILABLE", f"plugin process for {self.plugin_id!r} exited (code {code})")
        for fut in w.pending.values():
            if not fut.done():
                fut.set_exception(PluginFault({"kind": "worker_lost", "status": status, "message": why}))
        w.pending.clear()
        self.workers.untrack(w)
        if self._worker is w:
            self._worker = None
        if not w.stopping:  # (a worker the server stopped is no fault of the plugin's)
            log.warning("plugin %s: worker process %d ended: %s", self.plugin_id, w.pid, why)
            self._fault(why)

    def _fault(self, why: str) -> None:
        now = time.monotonic()
        limits = self.workers.limits
        self.last_fault = why
        self._consecutive += 1
        self._faults.append(now)
        while self._faults and self._faults[0] < now - limits.breaker_window_seconds:
            self._faults.popleft()
        if len(self._faults) >= limits.breaker_faults:
            self._suspended_until = now + limits.suspend_seconds
            self._suspended_faults = len(self._faults)
            log.error(
                "plugin %s suspended for %g s: %d faults in %g s (last: %s)",
                self.plugin_id, limits.suspend_seconds, len(self._faults), limits.breaker_window_seconds, why,
            )  # fmt: skip
            self._faults.clear()
        elif self._consecutive >= 2:
            self._not_before = now + min(0.25 * 2 ** (self._consecutive - 2), 30.0)

    async def _state(self, w: _Worker, msg: dict[str, Any]) -> None:
        iid = w.interfaces.get(msg.get("call", -1))
        reply: dict[str, Any] = {"t": "state_reply", "id": msg.get("id")}
        try:
            if iid is None:
                raise ValueError("sdk.state() is only available during a call")
            args = {k: v for k, v in msg.items() if k not in ("t", "id", "call", "op")}
            reply.update(ok=True, value=await self.workers.state(iid, str(msg.get("op")), args))
        except Exception as exc:  # (the plugin gets the error, the server goes on)
            reply.update(ok=False, message=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(WireError, OSError):
            w.send(reply)

    # ---- ending ----

    def retire(self) -> None:
        """A newer version replaced this one: its worker stops when its calls have ended."""
        self.retired = True
        w = self._worker
        if w is not None and not w.pending:
            self._stop(w)

    def stop_idle(self, w: _Worker) -> None:
        """No call for ``idle_seconds``: give the memory back; the next call starts a worker."""
        if w.pending or w.stopping:
            return
        if self._worker is w:
            self._worker = None
        log.info("plugin %s: worker process %d stopped after %g s without calls",
                 self.plugin_id, w.pid, self.workers.limits.idle_seconds)  # fmt: skip
        self._stop(w)

    def _stop(self, w: _Worker) -> None:
        w.stopping = True
        w.close()  # the worker exits when its socket closes
        asyncio.get_running_loop().call_later(2.0, w.kill, "UNAVAILABLE", "stopped")

    async def close(self) -> None:
        w = self._worker
        if w is not None:
            w.stopping = True
            w.kill("UNAVAILABLE", "the server is stopping")
            if w.reading is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(w.reading, 2)


class _LoadFailed(Exception):
    pass


class _Expired(Exception):
    """A call's deadline passed before its answer came."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


def _unwrapped(reply: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """A future of a call's value from the future of its reply message."""
    out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())  # type: ignore[arg-type]  # (checked just above)
        elif f.result().get("ok"):
            out.set_result(f.result().get("value"))
        else:
            out.set_exception(PluginFault(f.result()["error"]))

    reply.add_done_callback(done)
    return out


async def _exit_code(w: _Worker) -> int | str:
    try:
        return await asyncio.wait_for(asyncio.shield(w.exit_code), 1.0)
    except TimeoutError:
        return "unknown"


def _replay(plugin_id: str, msg: dict[str, Any]) -> None:
    name = str(msg.get("name", ""))
    if not name.startswith("rustbill.plugin."):
        name = f"rustbill.plugin.{plugin_id}" + (f".{name}" if name and name != "root" else "")
    logger = logging.getLogger(name)
    level = int(msg.get("level", logging.INFO))
    if logger.isEnabledFor(level):
        where = f" [interface {msg['interface']}]" if msg.get("interface") else ""
        logger.log(level, "%s%s", msg.get("msg", ""), where)


class Workers:
    """All worker processes of this server: the zygote, the limits, the CPU watch."""

    def __init__(self, limits: WorkerLimits | None = None, *, import_timeout: float = 10.0) -> None:
        self.limits = limits or WorkerLimits()
        self.import_timeout = import_timeout
        self.zygote = _Zygote(self._exited)
        self._by_pid: dict[int, _Worker] = {}
        self._exits: dict[int, int] = {}
        self._watch: asyncio.Task[None] | None = None
        self._state: StateHandler | None = None
        self.hosts: set[PluginHost] = set()
        # A test's fake clock (rustbill.sdk.testing): sent with every call, for sdk.now().
        self.clock: Callable[[], datetime] | None = None

    def serve_state(self, handler: StateHandler) -> None:
        self._state = handler

    async def state(self, interface_id: str, op: str, args: dict[str, Any]) -> Any:
        if self._state is None:
            raise RuntimeError("no state store")
        return await self._state(interface_id, op, args)

    async def load(self, path: Path, data: bytes, plugin_id: str, *, seconds: float | None = None) -> LoadedPlugin:
        """Execute a plugin file in a new worker; its metadata and host, or PluginLoadError."""
        host = PluginHost(self, plugin_id, path, data)
        meta = await host.load(self.import_timeout if seconds is None else seconds)
        self.hosts.add(host)
        return LoadedPlugin(plugin_id=plugin_id, path=path, content_hash=host.content_hash, meta=meta, host=host)

    def retire(self, plugin: LoadedPlugin) -> None:
        plugin.host.retire()
        self.hosts.discard(plugin.host)

    def track(self, w: _Worker) -> None:
        self._by_pid[w.pid] = w
        code = self._exits.pop(w.pid, None)
        if code is not None:
            w.exit_code.set_result(code)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_cpu(), name="plugin-cpu-watch")

    def untrack(self, w: _Worker) -> None:
        if self._by_pid.get(w.pid) is w:
            del self._by_pid[w.pid]

    def _exited(self, pid: int, code: int) -> None:
        w = self._by_pid.get(pid)
        if w is None:
            self._exits[pid] = code  # before track(): rare, a worker that died at once
            return
        if not w.exit_code.done():
            w.exit_code.set_result(code)

    async def _watch_cpu(self) -> None:
        """Every quarter second: a worker keeping a core busy is lowered to the lowest CPU priority
        at once (the server and the other plugins come first); workers over their CPU limits are
        killed."""
        limits = self.limits
        while self._by_pid:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            for w in list(self._by_pid.values()):
                if w.gone or w.killed is not None:
                    continue
                cpu = w.cpu_seconds()
                if cpu is None:
                    continue
                if w.last_cpu is not None and cpu - w.last_cpu >= 0.5 * _TICK and not w.lowered:
                    w.lowered = True
                    with contextlib.suppress(OSError):
                        os.setpriority(os.PRIO_PROCESS, w.pid, 19)
                        log.info("plugin %s: worker process %d keeps a core busy: lowered to the lowest CPU "
                                 "priority", w.host.plugin_id, w.pid)  # fmt: skip
                w.last_cpu = cpu
                if w.pending:
                    if w.cpu_at_busy is None:
                        w.cpu_at_busy = cpu  # (the watch's own clock: within a tick of the call)
                    elif limits.cpu_seconds_per_call > 0:
                        if cpu - w.cpu_at_busy > limits.cpu_seconds_per_call:
                            why = (
                                f"plugin {w.host.plugin_id!r} used more than {limits.cpu_seconds_per_call:g} s "
                                "of CPU in one call (plugins.cpu_seconds_per_call)"
                            )
                            log.warning("plugin %s: killing worker process %d: %s", w.host.plugin_id, w.pid, why)
                            w.kill("RESOURCE_EXHAUSTED", why)
                    continue
                if limits.idle_seconds > 0 and now - w.last_used > limits.idle_seconds:
                    w.host.stop_idle(w)
                    continue
                samples = w.idle_samples
                samples.append((now, cpu))
                while samples and samples[0][0] < now - 10.0:
                    samples.popleft()
                if samples and cpu - samples[0][1] > limits.idle_cpu_seconds:
                    why = (
                        f"plugin {w.host.plugin_id!r} used {cpu - samples[0][1]:.1f} s of CPU in "
                        f"{now - samples[0][0]:.0f} s with no call running (a thread left running?)"
                    )
                    log.warning("plugin %s: killing worker process %d: %s", w.host.plugin_id, w.pid, why)
                    w.kill("UNAVAILABLE", why)

    async def close(self) -> None:
        """Stop every worker and the zygote (the server is stopping)."""
        await asyncio.gather(*(h.close() for h in list(self.hosts)), return_exceptions=True)
        for w in list(self._by_pid.values()):
            w.kill("UNAVAILABLE", "the server is stopping")
        if self._watch is not None:
            self._watch.cancel()
        await self.zygote.close()
