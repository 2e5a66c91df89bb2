"""IdentityServicer: sign-in with a username and password (any edge: see dispatch)."""

from __future__ import annotations

import logging

from ..auth import AuthService, LoginFailed, LoginLimiter, Session
from ..db import User
from ..errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from ..ids import rfc3339
from ..metrics import Metrics
from ..pb import common_pb2
from ..pb import identity_pb2 as pb
from .dispatch import Call

__all__ = ["REFRESH_COOKIE", "IdentityServicer"]

log = logging.getLogger("rustbill.identity")

REFRESH_COOKIE = "rustbill_refresh"
_COOKIE_PATH = "/rustbill.identity.IdentityService/"
ADMIN_PATH = "/admin/"
USER_TYPES = ("", "admin", "customer")


def user_info(u: User) -> pb.UserInfo:
    return pb.UserInfo(
        id=str(u.id),
        username=u.username,
        display_name=u.username,
        role=u.role,
        is_active=u.is_active,
        created_at=rfc3339(u.created_at),
        user_type=u.role,
        customer_id=str(u.id) if u.role == "customer" else "",
    )


def _shown(name: str) -> str:
    return repr(name[:64] + ("…" if len(name) > 64 else ""))


class IdentityServicer:
    def __init__(self, auth: AuthService, limiter: LoginLimiter, metrics: Metrics, refresh_ttl: int) -> None:
        self._auth = auth
        self._limiter = limiter
        self._metrics = metrics
        self._refresh_ttl = refresh_ttl

    def _set_cookie(self, call: Call, token: str, max_age: int) -> None:
        """Over HTTP the refresh token also travels as an HttpOnly cookie that page scripts
        (and plugin pages) cannot read and that is sent only to IdentityService."""
        if call.edge == "grpc":
            return
        attrs = f"Path={_COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        if call.secure:
            attrs += "; Secure"
        call.response_metadata.append(("set-cookie", f"{REFRESH_COOKIE}={token}; {attrs}"))

    def _refresh_token(self, given: str, call: Call) -> str:
        token = given or call.cookies.get(REFRESH_COOKIE, "")
        if not token:
            raise Unauthenticated("no refresh token: send refresh_token, or sign in again")
        return token

    async def Login(self, request: pb.LoginRequest, call: Call) -> pb.LoginResponse:
        username = request.username.strip()
        if not username or not request.password:
            raise InvalidArgument("username and password are required")
        if request.user_type not in USER_TYPES:
            raise InvalidArgument("user_type must be 'admin', 'customer' or empty")
        try:
            self._limiter.check(username, call.peer)
        except ResourceExhausted:
            self._metrics.login_failures.labels("rate limited").inc()
            log.warning("sign-in refused: user=%s peer=%s reason=rate limited", _shown(username), call.peer or "?")
            raise
        try:
            session = await self._auth.login(username, request.password, admin_only=request.user_type == "admin")
        except LoginFailed as exc:
            self._limiter.failed(username, call.peer)
            self._metrics.login_failures.labels(exc.reason).inc()
            log.warning("sign-in failed: user=%s peer=%s reason=%s", _shown(username), call.peer or "?", exc.reason)
            raise
        except PermissionDenied:
            self._metrics.login_failures.labels("not an admin").inc()
            log.warning("sign-in refused: user=%s peer=%s reason=not an admin", _shown(username), call.peer or "?")
            raise
        self._limiter.succeeded(username)
        log.info("signed in: user=%s role=%s peer=%s", session.user.username, session.user.role, call.peer or "?")
        self._set_cookie(call, session.refresh_token, self._refresh_ttl)
        return pb.LoginResponse(
            access_token=session.access_token,
            refresh_token=session.refresh_token,
            expires_in=session.expires_in,
            user=user_info(session.user),
            admin_path=ADMIN_PATH if session.user.role == "admin" else "",
        )

    async def RefreshToken(self, request: pb.RefreshTokenRequest, call: Call) -> pb.RefreshTokenResponse:
        session: Session = await self._auth.refresh(self._refresh_token(request.refresh_token, call))
        self._set_cookie(call, session.refresh_token, self._refresh_ttl)
        return pb.RefreshTokenResponse(
            access_token=session.access_token, refresh_token=session.refresh_token, expires_in=session.expires_in
        )

    async def GetMe(self, request: common_pb2.EmptyRequest, call: Call) -> pb.GetMeResponse:
        assert call.principal is not None  # GetMe needs a credential (permissions table)
        return pb.GetMeResponse(user=user_info(await self._auth.user_by_id(call.principal.user_id)))

    async def Logout(self, request: pb.LogoutRequest, call: Call) -> common_pb2.EmptyResponse:
        token = request.refresh_token or call.cookies.get(REFRESH_COOKIE, "")
        if token:
            await self._auth.logout(token)
        self._set_cookie(call, "", 0)
        return common_pb2.EmptyResponse()
