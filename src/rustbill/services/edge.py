"""The edge: the one place where domain errors become gRPC statuses, and where callers are
authenticated and authorised (an interceptor over the permission table)."""

from __future__ import annotations

import contextvars
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from ..auth import PUBLIC_SERVICES, AuthService, Principal, authorize
from ..errors import RustBillError

__all__ = ["AuthInterceptor", "current_principal", "rpc"]

log = logging.getLogger("rustbill.rpc")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being served (set by AuthInterceptor)."""
    return _principal.get()


def rpc(fn: F) -> F:
    """Wrap a servicer method: domain errors → their status; anything else → INTERNAL with a
    reference that is also in the log (with the traceback, which never reaches the caller)."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except RustBillError as exc:
            await context.abort(exc.code, exc.message)
        except aio.AbortError:
            raise
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("internal error in %s (ref %s)", fn.__name__, ref)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see the server log")

    return wrapper  # type: ignore[return-value]


def _refuse(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(aio.ServerInterceptor):
    """Authenticates the Bearer credential and checks the permission table (default deny)."""

    def __init__(self, auth: AuthService) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith(PUBLIC_SERVICES):
            return await continuation(details)
        authorization = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode()
                break
        try:
            principal = await self._auth.authenticate(authorization)
            authorize(method, principal)
        except RustBillError as exc:
            return _refuse(exc.code, exc.message)
        except Exception:
            log.exception("authentication failed unexpectedly")
            return _refuse(grpc.StatusCode.UNAVAILABLE, "authentication is unavailable; retry later")
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def with_principal(request: Any, context: aio.ServicerContext) -> Any:
            token = _principal.set(principal)
            try:
                return await inner(request, context)
            finally:
                _principal.reset(token)

        return handler._replace(unary_unary=with_principal)
