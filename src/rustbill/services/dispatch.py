"""The path of every RPC, whatever edge it came in on.

An edge (native gRPC in ``grpc_edge``, gRPC-Web and Connect in ``http_edge``) turns what arrived
into a ``Call`` and asks the ``Dispatcher`` to admit it (authenticate + authorise, before the body
is read), decode the request, and invoke the servicer method. Servicer methods take
``(request, call)`` and raise ``RustBillError``s; each edge maps the error's ``Code`` to its own
status with the one table in ``status``. Anything else a servicer raises becomes INTERNAL with a
reference that is also in the log (with the traceback, which never reaches the caller).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message

from ..auth import AuthService, Principal
from ..calls import caller
from ..errors import Code, Internal, InvalidArgument, PermissionDenied, RustBillError, Unauthenticated
from ..metrics import Metrics
from .permissions import PERMISSIONS, SERVICES, Access, authorize

__all__ = ["Call", "Dispatcher", "Method"]

log = logging.getLogger("rustbill.rpc")


@dataclass(slots=True)
class Call:
    """One RPC as the servicer sees it, the same on every edge."""

    method: Method
    edge: str  # "grpc", "grpc-web" or "connect"
    metadata: Mapping[str, str]  # request metadata / headers, lower-case names
    peer: str  # the client's address (no port), "" when unknown
    principal: Principal | None = None
    cookies: Mapping[str, str] = field(default_factory=dict)  # HTTP edge only
    # Extra response metadata (HTTP: headers): e.g. ``retry-after``, ``set-cookie``.
    response_metadata: list[tuple[str, str]] = field(default_factory=list)
    secure: bool = False  # came over TLS (HTTP edge: decides the cookie's Secure flag)
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class Method:
    path: str  # "/rustbill.integration.IntegrationService/QueryPrice"
    service: str  # "rustbill.integration.IntegrationService"
    name: str  # "QueryPrice"
    input: type[Message]
    output: type[Message]
    access: Access
    handler: Callable[[Any, Call], Awaitable[Message]]


class Dispatcher:
    """Admits, decodes and invokes calls of every served method (one instance per server)."""

    def __init__(
        self,
        auth: AuthService,
        servicers: Mapping[str, object],
        metrics: Metrics,
        *,
        table: Mapping[str, Access] = PERMISSIONS,
    ) -> None:
        from google.protobuf import message_factory

        self._auth = auth
        self._table = table
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}  # (kind, address) → (since, count)
        self.metrics = metrics
        self.methods: dict[str, Method] = {}
        for svc in SERVICES:
            servicer = servicers[svc.full_name]
            for m in svc.methods:
                path = f"/{svc.full_name}/{m.name}"
                handler = getattr(servicer, m.name, None)
                if handler is None:
                    raise RuntimeError(f"{type(servicer).__name__} does not implement {m.name}")
                self.methods[path] = Method(
                    path=path,
                    service=svc.full_name,
                    name=m.name,
                    input=message_factory.GetMessageClass(m.input_type),
                    output=message_factory.GetMessageClass(m.output_type),
                    access=table[path],
                    handler=handler,
                )

    async def admit(self, call: Call) -> None:
        """Authenticate and authorise ``call`` (sets ``call.principal``); raises Unauthenticated or
        PermissionDenied. Public methods need no credential (one sent anyway is not checked)."""
        if call.method.access is Access.PUBLIC:
            return
        try:
            call.principal = await self._auth.authenticate(call.metadata.get("authorization"))
        except Unauthenticated as exc:
            self._refused(call, exc.message)
            raise
        try:
            authorize(call.method.path, call.principal, self._table)
        except PermissionDenied as exc:
            self._refused(call, f"{exc.message} (user {call.principal.username})")
            raise

    def _refused(self, call: Call, reason: str) -> None:
        self._warn(call, "refused", f"refused {call.method.path} from {call.peer or '?'} over {call.edge}: {reason}")

    def undecodable(self, call: Call, reason: str) -> None:
        """A request body that is not the method's message (INVALID_ARGUMENT, no traceback)."""
        where = f"{call.method.path} from {call.peer or '?'} over {call.edge}"
        self._warn(call, "undecodable", f"undecodable request to {where}: {reason}")

    def _warn(self, call: Call, kind: str, line: str) -> None:
        """A WARNING per caller address and kind, at most one a minute (a flood stays one line)."""
        now = time.monotonic()
        key = (kind, call.peer)
        start, count = self._warned.get(key, (0.0, 0))
        if now - start >= 60:
            more = f" ({count - 1} more from this address in the last minute)" if count > 1 else ""
            log.warning("%s%s", line, more)
            if len(self._warned) > 10_000:
                self._warned.clear()
            self._warned[key] = (now, 1)
        else:
            self._warned[key] = (start, count + 1)

    def decode(self, call: Call, data: bytes) -> Message:
        try:
            return call.method.input.FromString(data)
        except (DecodeError, ValueError, RecursionError):
            name = call.method.input.DESCRIPTOR.full_name
            self.undecodable(call, f"{len(data)} bytes that are not a {name}")
            raise InvalidArgument(f"request is not a valid {name}") from None

    async def invoke(self, call: Call, request: Message) -> Message:
        """Run the servicer method; an unexpected exception becomes INTERNAL with a log reference."""
        caller.set(call.principal.username if call.principal is not None else "-")
        try:
            return await call.method.handler(request, call)
        except RustBillError:
            raise
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("internal error in %s (ref %s)", call.method.path, ref)
            raise Internal(f"internal error (ref {ref}); see the server log") from None

    def done(self, call: Call, code: Code | None) -> None:
        """Count the call in the metrics (``code`` None: OK)."""
        m = call.method
        self.metrics.rpc(
            m.service, m.name, "OK" if code is None else code.name, call.edge, time.perf_counter() - call.started
        )
