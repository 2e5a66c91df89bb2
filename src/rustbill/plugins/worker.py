"""A plugin worker process: runs one plugin file's code for the server.

The zygote (``zygote.py``) forks it with a connected stream socket. The first message on it is
``load`` (the file's path, content and plugin id); the worker executes the file, answers
``loaded`` (the ``PluginMeta``) or ``load_error``, and then serves until the socket closes:

- ``call`` → runs the function (``async def`` on this process's event loop, ``def`` in its thread
  pool) and answers ``result`` — the value, or the error described as data (``_describe``);
- ``cancel`` → cancels a running ``async def`` call (a thread cannot be stopped: the server kills
  the whole process when a call does not give its time back);
- ``state_reply`` → answers a ``state`` request the worker sent for ``sdk.state()``;
- log records of the plugin go to the server as ``log`` messages.

Nothing here is trusted by the server: it checks every result with the contract's checkers, and
enforces deadlines and limits from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import os
import socket
import ssl
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from .. import errors, sdk
from ..sdk import PluginError
from .context import CallContext, current_call
from .loader import LoadedModule, PluginLoadError, load_plugin
from .wire import Framed, WireError, decode, encode

__all__ = ["preload", "run"]

# Failures that happen before a request reaches the remote system.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError, socket.gaierror, ssl.SSLError)


def preload() -> None:
    """Imports and one-time set-up done in the zygote, so that every worker shares them."""
    ssl.create_default_context()  # loads OpenSSL's tables
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401  # (each worker's event loop)


def run(sock: socket.socket) -> None:
    """The worker's life: load the plugin, then serve calls until the server goes away."""
    sock.setblocking(True)
    first = _recv_blocking(sock)
    if first is None or first.get("t") != "load":
        return
    logging.getLogger().setLevel(first.get("log_level", logging.INFO))
    try:
        loaded = load_plugin(Path(first["path"]), first["data"], first["plugin_id"])
    except PluginLoadError as exc:
        sock.sendall(encode({"t": "load_error", "message": str(exc)}))
        return
    try:
        sock.sendall(encode({"t": "loaded", "meta": loaded.meta.to_dict()}))
    except WireError as exc:
        sock.sendall(encode({"t": "load_error", "message": f"{loaded.path.name}: metadata cannot be sent: {exc}"}))
        return
    worker = _Worker(loaded, int(first.get("max_threads", 16)))
    try:
        import uvloop  # (the server's loop too: a faster round trip per call)
    except ImportError:
        asyncio.run(worker.serve(sock))
    else:
        uvloop.run(worker.serve(sock))


def _recv_blocking(sock: socket.socket) -> dict[str, Any] | None:
    header = _recv_exactly(sock, 4)
    if header is None:
        return None
    body = _recv_exactly(sock, int.from_bytes(header, "big"))
    return None if body is None else decode(body)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


class _Worker:
    def __init__(self, loaded: LoadedModule, max_threads: int) -> None:
        self.loaded = loaded
        self.executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="plugin")
        self.calls: dict[int, asyncio.Task[None]] = {}
        self.names: dict[int, str] = {}  # call id → function
        self.asks: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.loop: asyncio.AbstractEventLoop
        self.channel: Framed
        self._thread = threading.get_ident()

    async def serve(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        ended: asyncio.Future[BaseException | None] = self.loop.create_future()
        _, self.channel = await self.loop.create_unix_connection(
            lambda: Framed(self._message, functools.partial(_settle, ended)), sock=sock
        )
        root = logging.getLogger()
        root.handlers[:] = [_Forward(self)]
        try:
            await ended
        finally:
            # The server closed the connection (or is gone): nothing may outlive it here.
            os._exit(0)

    def _message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "call":
            task = self.loop.create_task(self._call(msg))
            self.calls[msg["id"]] = task
            self.names[msg["id"]] = msg["fn"]
            task.add_done_callback(functools.partial(self._done, msg["id"]))
        elif kind == "cancel":
            # Only a coroutine can be cancelled; a thread cannot be stopped, so a def call runs on
            # (and the server kills this process if it does not end in time).
            running = self.calls.get(msg["id"])
            if running is not None and self.loaded.meta.is_async.get(self.names.get(msg["id"], ""), False):
                running.cancel()
        elif kind == "state_reply":
            fut = self.asks.pop(msg["id"], None)
            if fut is not None and not fut.done():
                if msg.get("ok"):
                    fut.set_result(msg.get("value"))
                else:
                    fut.set_exception(ValueError(msg.get("message", "state request refused")))

    def _done(self, cid: int, _task: asyncio.Task[None]) -> None:
        self.calls.pop(cid, None)
        self.names.pop(cid, None)

    def send(self, message: dict[str, Any]) -> None:
        """Send from any thread (plugin threads log and ask for state too)."""
        if threading.get_ident() == self._thread:
            self.channel.send(message)
        else:
            self.loop.call_soon_threadsafe(self._send_checked, message)

    def _send_checked(self, message: dict[str, Any]) -> None:
        try:
            self.channel.send(message)
        except WireError as exc:  # (a log record or a state request that cannot be encoded)
            print(f"plugin message lost: {exc}", file=sys.stderr)

    async def _ask_state(self, call_id: int, op: str, **args: Any) -> Any:
        ask = next(self.ids)
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.asks[ask] = fut
        self.send({"t": "state", "id": ask, "call": call_id, "op": op, **args})
        return await fut

    async def _call(self, msg: dict[str, Any]) -> None:
        cid = msg["id"]
        name = msg["fn"]
        fn = self.loaded.function(name)
        ctx = CallContext(
            interface_id=msg.get("interface_id", ""),
            interface_name=msg.get("interface_name", ""),
            plugin_id=self.loaded.plugin_id,
            function=name,
            request_id=msg.get("request_id", ""),
            caller=msg.get("caller", "system"),
            deadline=self.loop.time() + float(msg.get("timeout", 30.0)),
            loop=self.loop,
            state_request=lambda op, **args: self._ask_state(cid, op, **args),
            now=datetime.fromisoformat(msg["now"]) if msg.get("now") else None,
        )
        current_call.set(ctx)
        try:
            if fn is None:
                raise PluginError(f"plugin {self.loaded.plugin_id!r} does not implement {name}", "UNIMPLEMENTED")
            args = [msg.get("config", {}), *msg.get("args", [])]
            if self.loaded.meta.is_async.get(name, False):
                value = await fn(*args)
            else:
                value = await self.loop.run_in_executor(self.executor, contextvars.copy_context().run, fn, *args)
            try:
                self.channel.send({"t": "result", "id": cid, "ok": True, "value": value})
            except WireError as exc:
                self.channel.send(
                    {"t": "result", "id": cid, "ok": False, "error": {"kind": "bad_result", "message": str(exc)}}
                )
        except asyncio.CancelledError:
            self.send({"t": "result", "id": cid, "ok": False, "error": {"kind": "cancelled"}})
        except BaseException as exc:  # (every failure is the caller's answer)
            self.send({"t": "result", "id": cid, "ok": False, "error": _describe(exc)})
            if isinstance(exc, MemoryError):
                for _ in range(100):  # (the answer first, within a second)
                    if not self.channel.pending_bytes():
                        break
                    await asyncio.sleep(0.01)
                os._exit(3)  # its heap may be in any state: the server starts a fresh worker


def _settle(fut: asyncio.Future[BaseException | None], exc: BaseException | None) -> None:
    if not fut.done():
        fut.set_result(exc)


def _describe(exc: BaseException) -> dict[str, Any]:
    """An exception of plugin code as data; the server turns it into the caller's status."""
    if isinstance(exc, PluginError):
        return {"kind": "plugin", "code": exc.code, "message": exc.message}
    if isinstance(exc, errors.RustBillError):
        return {"kind": "plugin", "code": exc.code.name, "message": exc.message}
    if isinstance(exc, MemoryError):
        return {"kind": "memory"}
    if isinstance(exc, _NOT_SENT) or (
        isinstance(exc, (httpx.TransportError, ConnectionError, ssl.SSLError, socket.gaierror))
        and not isinstance(exc, httpx.TimeoutException)
    ):
        sent = not isinstance(exc, _NOT_SENT)
        return {"kind": "unreachable", "sent": sent, "message": f"{type(exc).__name__}: {exc}"}
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        # The plugin's own timeout (a socket's, an HTTP client's): the request may have been acted on.
        return {"kind": "remote_timeout", "message": str(exc) or "timed out"}
    if not isinstance(exc, Exception):
        return {"kind": "stopped", "type": type(exc).__name__}
    return {
        "kind": "exception",
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


class _Forward(logging.Handler):
    """Log records of plugin code go to the server's log."""

    def __init__(self, worker: _Worker) -> None:
        super().__init__()
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            ctx = current_call.get()
            self._worker.send(
                {
                    "t": "log",
                    "level": record.levelno,
                    "name": record.name,
                    "msg": text,
                    "interface": ctx.interface_name if ctx else "",
                }
            )
        except Exception:  # (a log record must never break a call)
            print(f"plugin log record lost: {record!r}", file=sys.stderr)


_ = sdk  # imported for the zygote's preload: every worker shares the SDK's modules
