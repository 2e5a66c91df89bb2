"""The native gRPC edge: one generic handler per service over the ``Dispatcher``.

Requests arrive as raw bytes and are decoded only after the caller is admitted, so that a bad
credential is UNAUTHENTICATED whatever the body, and an undecodable body is INVALID_ARGUMENT
("request is not a valid <Message>") instead of grpcio's UNKNOWN with parser internals.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from typing import Any

import grpc
from grpc import aio

from ..errors import Code, ResourceExhausted, RustBillError, Unavailable
from .dispatch import Call, Dispatcher, Method
from .status import grpc_code

__all__ = ["grpc_handlers", "peer_host"]


def peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` / ``ipv6:[::1]:5555`` → ``127.0.0.1`` / ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host.strip("[]")
    return peer


def error_metadata(exc: RustBillError, call: Call) -> list[tuple[str, str]]:
    md = list(call.response_metadata)
    retry_after = exc.retry_after if isinstance(exc, (ResourceExhausted, Unavailable)) else None
    if retry_after is not None:
        md.append(("retry-after", str(math.ceil(retry_after))))
    return md


def _behavior(d: Dispatcher, method: Method) -> Any:
    async def behavior(request: bytes, context: aio.ServicerContext[bytes, Any]) -> Any:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        call = Call(method=method, edge="grpc", metadata=md, peer=peer_host(context.peer()))
        code: Code | None = None
        try:
            await d.admit(call)
            reply = await d.invoke(call, d.decode(call, request))
            if call.response_metadata:
                context.set_trailing_metadata(tuple(call.response_metadata))
            return reply
        except RustBillError as exc:
            code = exc.code
            context.set_trailing_metadata(tuple(error_metadata(exc, call)))
            await context.abort(grpc_code(exc.code), exc.message)
        except asyncio.CancelledError:
            code = Code.CANCELLED
            raise
        finally:
            d.done(call, code)

    return behavior


def grpc_handlers(d: Dispatcher) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[bytes, Any]]] = defaultdict(dict)
    for m in d.methods.values():
        by_service[m.service][m.name] = grpc.unary_unary_rpc_method_handler(
            _behavior(d, m), request_deserializer=None, response_serializer=m.output.SerializeToString
        )
    return [grpc.method_handlers_generic_handler(name, handlers) for name, handlers in by_service.items()]
