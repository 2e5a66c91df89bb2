"""The HTTP edge: gRPC-Web and Connect (unary, binary and JSON) over the ``Dispatcher``, payment
gateway callbacks, ``/metrics``, ``/healthz`` and ``/readyz``, served by uvicorn in the server's own
event loop.

gRPC-Web and Connect framing come from ``connectrpc``; two things are done here on top of it:
- a gRPC-Web error is sent *trailers-only* (HTTP 200, ``grpc-status``/``grpc-message`` in the
  headers, no body), as Envoy's gRPC-Web filter does it: RustBill's web client reads the status only
  from the headers, and would take an error carried in a trailer frame for an empty success;
- ``grpc-message`` is percent-encoded as the gRPC spec says (spaces stay spaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import urllib.parse
import uuid
import weakref
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

import uvicorn
from connectrpc.code import Code as ConnectCode
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from ..errors import Code, RustBillError
from ..metrics import CONTENT_TYPE
from .dispatch import Call, Dispatcher, Method
from .grpc_edge import error_metadata
from .status import connect_code, grpc_message

__all__ = ["HttpEdge", "build_app"]

log = logging.getLogger("rustbill.http")

# The same limit as the gRPC listener's (grpcio's default receive limit).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_NOTIFY_BYTES = 64 * 1024
_FROM_CONNECT = {connect_code(c): c for c in Code}
ASGI = ASGIApp


# ---------------------------------------------------------------- codecs


class _Undecodable(ConnectError):
    """A request body that is not the method's message (logged by the edge, at most once a minute)."""

    def __init__(self, message_class: type[Message], detail: str = "") -> None:
        name = message_class.DESCRIPTOR.full_name
        super().__init__(ConnectCode.INVALID_ARGUMENT, f"request is not a valid {name}{detail}")
        self.reason = f"not a {name}{detail}"


class _BinaryCodec:
    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        try:
            return message_class.FromString(bytes(data))
        except Exception:
            raise _Undecodable(message_class) from None


class _JsonCodec:
    """Proto3 JSON. Replies print every field, defaults included (a curl user sees
    ``"isHealthy": false`` instead of nothing); requests with unknown fields are refused."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, indent=None, ensure_ascii=False
        ).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        msg = message_class()
        try:
            json_format.Parse(bytes(data).decode("utf-8") or "{}", msg)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError, ValueError) as exc:
            detail = str(exc)[:200] if not isinstance(exc, RecursionError) else "nested too deeply"
            raise _Undecodable(message_class, f": {detail}") from None
        return msg


# ---------------------------------------------------------------- RPCs


def _cookies(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(Exception):
        jar.load(header)
    return {k: m.value for k, m in jar.items()}


class _RpcApp(ConnectASGIApplication[Dispatcher]):
    """Every method of the Dispatcher, on Connect and gRPC-Web."""

    path = "/"

    def __init__(self, d: Dispatcher) -> None:
        self._calls: weakref.WeakKeyDictionary[RequestContext[Any, Any], Call] = weakref.WeakKeyDictionary()
        self._d = d
        super().__init__(
            service=d,
            endpoints=self._endpoints_of,
            interceptors=[_Admission(self)],
            read_max_bytes=MAX_MESSAGE_BYTES,
            codecs=[_BinaryCodec(), _JsonCodec()],
        )

    def _endpoints_of(self, d: Dispatcher) -> dict[str, Any]:
        return {
            m.path: Endpoint.unary(
                MethodInfo(
                    name=m.name,
                    service_name=m.service,
                    input=m.input,
                    output=m.output,
                    idempotency_level=IdempotencyLevel.UNKNOWN,
                    stream_type=StreamType.UNARY,
                ),
                self._invoker(m),
            )
            for m in d.methods.values()
        }

    def _invoker(self, m: Method) -> Callable[[Message, RequestContext[Any, Any]], Awaitable[Message]]:
        async def invoke(request: Message, ctx: RequestContext[Any, Any]) -> Message:
            call = self._calls[ctx]
            try:
                reply = await self._d.invoke(call, request)
            except RustBillError as exc:
                raise _connect_error(exc, call, ctx) from None
            for k, v in call.response_metadata:
                ctx.response_headers.add(k, v)
            return reply

        return invoke


def _connect_error(exc: RustBillError, call: Call, ctx: RequestContext[Any, Any]) -> ConnectError:
    for k, v in error_metadata(exc, call):
        ctx.response_headers.add(k, v)
    return ConnectError(connect_code(exc.code), exc.message)


class _Admission:
    """Authenticates and authorises before the request body is read (a metadata interceptor)."""

    def __init__(self, app: _RpcApp) -> None:
        self._app = app

    async def on_start(self, ctx: RequestContext[Any, Any]) -> Call:
        d = self._app._d
        h = ctx.request_headers
        content_type = h.get("content-type", "")
        call = Call(
            method=d.methods["/" + ctx.method.service_name + "/" + ctx.method.name],
            edge="grpc-web" if content_type.startswith("application/grpc-web") else "connect",
            metadata={k: h[k] for k in h},
            peer=(ctx.client_address or "").rpartition(":")[0],
            cookies=_cookies(h.get("cookie")),
            secure=h.get("x-rustbill-scheme") == "https",
        )
        self._app._calls[ctx] = call
        try:
            await d.admit(call)
        except RustBillError as exc:
            raise _connect_error(exc, call, ctx) from None
        return call

    async def on_end(self, call: Call, ctx: RequestContext[Any, Any], error: Exception | None, /) -> None:
        code = None
        if isinstance(error, _Undecodable):
            self._app._d.undecodable(call, error.reason)
        if error is not None:
            code = _FROM_CONNECT.get(error.code, Code.INTERNAL) if isinstance(error, ConnectError) else Code.INTERNAL
        self._app._d.done(call, code)


def _grpc_web_trailers_only(app: ASGI) -> ASGI:
    """Sends a gRPC-Web reply that carries only a status (no message) as trailers-only, and
    encodes ``grpc-message`` as the gRPC spec says. Unary replies only: the body is buffered."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        start: AsgiMessage | None = None
        body = bytearray()

        async def capture(message: AsgiMessage) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"grpc-message"]
            status_headers = _trailer_frame_only(bytes(body))
            if status_headers is not None and status_headers.get(b"grpc-status", b"0") != b"0":
                headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length",)]
                headers += [(k, v) for k, v in status_headers.items() if k != b"grpc-message"]
                msg = status_headers.get(b"grpc-message")
                if msg:
                    headers.append((b"grpc-message", _reencode(msg)))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            for k, v in start["headers"]:
                if k.lower() == b"grpc-message":
                    headers.append((k, _reencode(v)))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": bytes(body), "more_body": False})

        await app(scope, receive, capture)

    return wrapped


def _trailer_frame_only(body: bytes) -> dict[bytes, bytes] | None:
    """The headers of a body that is one gRPC-Web trailer frame, else None."""
    if len(body) < 5 or not body[0] & 0x80:
        return None
    (length,) = struct.unpack(">I", body[1:5])
    if len(body) != 5 + length:
        return None
    out: dict[bytes, bytes] = {}
    for line in body[5:].split(b"\r\n"):
        k, sep, v = line.partition(b":")
        if sep:
            out[k.strip().lower()] = v.strip()
    return out


def _reencode(value: bytes) -> bytes:
    return grpc_message(urllib.parse.unquote(value.decode("latin-1"))).encode()


# ---------------------------------------------------------------- the app


def build_app(
    *,
    dispatcher: Dispatcher,
    channels: Any,
    ready: Callable[[], Awaitable[str | None]],
    health_rows: Callable[[], Awaitable[list[tuple[str, str, str, str, bool]]]],
    cors_origins: list[str],
    extra_routes: list[Any] | None = None,
    public_https: bool = False,
) -> ASGI:
    """The ASGI app of the HTTP listener."""
    rpc = _RpcApp(dispatcher)
    grpc_web = _grpc_web_trailers_only(rpc)
    metrics = dispatcher.metrics

    async def notify(request: Request) -> Response:
        try:
            iid = uuid.UUID(request.path_params["interface_id"])
        except ValueError:
            return Response(status_code=404)
        if not await channels.accepts_notifications(iid):
            return Response(status_code=404)
        if int(request.headers.get("content-length") or 0) > MAX_NOTIFY_BYTES:
            return PlainTextResponse("notification too large", status_code=413)
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > MAX_NOTIFY_BYTES:
                return PlainTextResponse("notification too large", status_code=413)
        body = raw.decode("utf-8", "replace")
        form = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        peer = request.client.host if request.client else "?"
        try:
            result = await channels.verify_notify(
                iid,
                {
                    "method": request.method,
                    "query": dict(request.query_params),
                    "form": form,
                    "headers": dict(request.headers),
                    "body": body,
                    "check_stored_order": True,
                },
            )
        except RustBillError as exc:
            metrics.payment_notifications.labels("error").inc()
            log.warning("payment notification interface=%s peer=%s failed: %s", iid, peer, exc.message)
            return PlainTextResponse("fail", status_code=400 if exc.code is Code.INVALID_ARGUMENT else 503)
        if result["paid"]:
            outcome = "paid"
            log.info(
                "payment notification interface=%s peer=%s: order %s paid %s (trade %s)",
                iid, peer, result["order_id"], result["amount"], result["trade_no"],
            )  # fmt: skip
        elif result.get("duplicate"):
            outcome = "duplicate"
            log.info("payment notification interface=%s peer=%s: %s", iid, peer, result.get("error"))
        elif not result.get("valid", True) or result.get("error"):
            outcome = "refused"
            log.warning(
                "payment notification interface=%s peer=%s refused: %s", iid, peer, result.get("error") or "invalid"
            )
        else:
            outcome = "unpaid"
        metrics.payment_notifications.labels(outcome).inc()
        return PlainTextResponse(str(result.get("reply", "")))

    async def metrics_route(request: Request) -> Response:
        with contextlib.suppress(Exception):
            metrics.set_health(await health_rows())
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        problem = await ready()
        if problem:
            return PlainTextResponse(f"not ready: {problem}", status_code=503)
        return PlainTextResponse("ready")

    routes = [
        Route("/pay/notify/{interface_id}", notify, methods=["GET", "POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *(extra_routes or []),
    ]
    site = Starlette(routes=routes)
    rpc_paths = frozenset(dispatcher.methods)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in rpc_paths:
            # Whether browsers reach us over TLS (here, or at a proxy in front: [http] public_url):
            # the refresh cookie is then Secure. A client cannot claim it.
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-rustbill-scheme"]
            if scope.get("scheme") == "https" or public_https:
                headers.append((b"x-rustbill-scheme", b"https"))
            scope = {**scope, "headers": headers}
            content_type = _header(scope, b"content-type")
            if scope["method"] != "POST":
                await PlainTextResponse(_HOW, status_code=405, headers={"allow": "POST"})(scope, receive, send)
                return
            if not content_type.startswith((b"application/json", b"application/proto", b"application/grpc")):
                await PlainTextResponse(_HOW, status_code=415, headers={"accept-post": _ACCEPT})(scope, receive, send)
                return
            if content_type.startswith(b"application/grpc-web"):
                return await grpc_web(scope, receive, send)
            if content_type.startswith(b"application/grpc"):
                # Native gRPC belongs on the gRPC port (HTTP/2 with trailers).
                await PlainTextResponse("native gRPC is served on the gRPC port", status_code=415)(scope, receive, send)
                return
            return await rpc(scope, receive, send)
        await site(scope, receive, send)

    if not cors_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=[
            "authorization",
            "content-type",
            "x-grpc-web",
            "x-user-agent",
            "grpc-timeout",
            "idempotency-key",
            "max-price",
            "connect-protocol-version",
            "connect-timeout-ms",
            "connect-accept-encoding",
            "connect-content-encoding",
        ],
        expose_headers=["grpc-status", "grpc-message", "grpc-status-details-bin", "retry-after"],
        max_age=600,
    )


_ACCEPT = "application/json, application/proto, application/grpc-web+proto"
_HOW = (
    "RPCs are called with POST and one of these content types: application/json (Connect JSON, e.g. "
    "curl -H 'content-type: application/json' -d '{}'), application/proto (Connect binary) or "
    "application/grpc-web+proto (gRPC-Web)\n"
)


def _header(scope: Scope, name: bytes) -> bytes:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for k, v in headers:
        if k == name:
            return v
    return b""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the App owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class HttpEdge:
    """Runs the HTTP listener as a task of the running event loop."""

    def __init__(self, app: ASGI, listen: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._app = app
        self._listen = listen
        self._ssl = ssl_context
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            sock.close()
            raise SystemExit(f"cannot listen on {self._listen} (http.listen): {exc.strerror}") from None
        sock.listen(2048)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            access_log=False,
            log_config=None,
            http="httptools",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=None,
        )
        config.load()
        config.ssl = self._ssl  # our context, which rustbill.tls reloads in place
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-listener")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise SystemExit("the HTTP listener stopped at start")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self, grace: float) -> None:
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(grace, 0.1)  # type: ignore[assignment]  # uvicorn says int; any float works
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, grace + 2)
