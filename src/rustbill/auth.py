"""Users, credentials and the permission table.

A caller sends ``authorization: Bearer <credential>``. A credential is either a JWT (HS256, signed
with the server's secret, ``sub`` = user id) or an API key (``rbk_<prefix>_<secret>``, stored as a
sha256 hash). Both are checked against the database: a disabled user, a revoked key or a token
issued before ``rustbill token revoke`` is refused. Verified credentials are cached for
``auth.cache_seconds`` so that the hot path does not touch the database on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .config import Settings
from .db import ApiKey, Database, Setting, User
from .errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from .ids import utcnow

__all__ = [
    "PERMISSIONS",
    "PUBLIC_SERVICES",
    "Access",
    "AuthService",
    "Principal",
    "hash_password",
    "verify_password",
]

log = logging.getLogger(__name__)

ROLES = ("admin", "customer")
API_KEY_PREFIX = "rbk_"
_SERVICE = "/rustbill.integration.IntegrationService/"


class Access(Enum):
    ADMIN = "admin"
    AUTHENTICATED = "authenticated"


# The spec's 权限 column, one entry per RPC. A method missing here is refused (default deny).
PERMISSIONS: dict[str, Access] = {
    _SERVICE + name: access
    for name, access in {
        "ListProviders": Access.ADMIN,
        "ListGateways": Access.ADMIN,
        "ListNotifiers": Access.ADMIN,
        "ListPlugins": Access.ADMIN,
        "GetPlugin": Access.ADMIN,
        "ListPluginInterfaces": Access.ADMIN,
        "GetPluginInterface": Access.ADMIN,
        "CreatePluginInterface": Access.ADMIN,
        "UpdatePluginInterface": Access.ADMIN,
        "TogglePluginInterface": Access.ADMIN,
        "DeletePluginInterface": Access.ADMIN,
        "CheckPluginHealth": Access.ADMIN,
        "GetPluginAdminPage": Access.ADMIN,
        "CallPluginAction": Access.ADMIN,
        "RestartServer": Access.ADMIN,
        "SyncProducts": Access.AUTHENTICATED,
        "QueryPrice": Access.AUTHENTICATED,
        "CreateUpstreamInstance": Access.AUTHENTICATED,
        "GetInstanceStatus": Access.ADMIN,
        "SyncUpstreamInstances": Access.ADMIN,
        "ImportUpstreamInstance": Access.ADMIN,
        "GetUpstreamBalance": Access.ADMIN,
    }.items()
}

# Services that answer without a credential: health checks and reflection (grpcurl needs it).
PUBLIC_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: uuid.UUID
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def authorize(method: str, principal: Principal) -> None:
    """Raise PermissionDenied unless ``principal`` may call ``method``."""
    access = PERMISSIONS.get(method)
    if access is None:
        raise PermissionDenied(f"method {method} is not allowed")
    if access is Access.ADMIN and not principal.is_admin:
        raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} requires the admin role")


# ---- passwords (scrypt from the standard library) ----

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class AuthService:
    """Issues and verifies credentials; manages users."""

    def __init__(self, db: Database, settings: Settings, *, clock: type[datetime] = datetime) -> None:
        self._db = db
        self._settings = settings
        self._secret: str | None = settings.jwt.secret or None
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._cache_seconds = settings.auth.cache_seconds

    # ---- set-up ----

    async def jwt_secret(self) -> str:
        """The configured secret, or the one generated on first start and kept in ``settings``."""
        if self._secret:
            return self._secret
        async with self._db.read() as s:
            row = await s.get(Setting, "jwt_secret")
        if row is None:
            try:
                async with self._db.write() as s:
                    s.add(Setting(key="jwt_secret", value=secrets.token_urlsafe(48)))
            except IntegrityError:
                pass  # another process generated it first
            async with self._db.read() as s:
                row = await s.get(Setting, "jwt_secret")
        assert row is not None
        self._secret = row.value
        return self._secret

    async def bootstrap_admin(self) -> str | None:
        """Create the admin on first start. Returns the generated password, if one was generated."""
        async with self._db.read() as s:
            if (await s.execute(select(User.id).limit(1))).first() is not None:
                return None
        password = self._settings.bootstrap.admin_password
        generated = None
        if not password:
            password = generated = secrets.token_urlsafe(18)
        try:
            await self.create_user(self._settings.bootstrap.admin_username, "admin", password=password)
        except AlreadyExists:
            return None  # another process bootstrapped at the same time
        return generated

    # ---- users ----

    async def create_user(self, username: str, role: str, *, password: str | None = None) -> User:
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        username = username.strip()
        if not username or len(username) > 128:
            raise InvalidArgument("username must be 1 to 128 characters")
        user = User(
            username=username,
            role=role,
            password_hash=hash_password(password) if password else None,
            is_active=True,
        )
        try:
            async with self._db.write() as s:
                s.add(user)
        except IntegrityError:
            raise AlreadyExists(f"user {username!r} already exists") from None
        return user

    async def get_user(self, username: str) -> User:
        async with self._db.read() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is None:
            raise NotFound(f"user {username!r} not found")
        return user

    async def set_user_active(self, username: str, active: bool) -> None:
        async with self._db.write() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                raise NotFound(f"user {username!r} not found")
            user.is_active = active

    # ---- tokens and keys ----

    async def create_token(self, username: str, ttl_seconds: int | None = None) -> str:
        user = await self.get_user(username)
        if not user.is_active:
            raise InvalidArgument(f"user {username!r} is disabled")
        now = utcnow()
        ttl = ttl_seconds if ttl_seconds is not None else self._settings.jwt.ttl_seconds
        if ttl <= 0:
            raise InvalidArgument("--ttl must be positive")
        claims = {
            "sub": str(user.id),
            "iss": self._settings.jwt.issuer,
            "iat": int(now.timestamp()),
            "exp": now + timedelta(seconds=ttl),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, await self.jwt_secret(), algorithm="HS256")

    async def revoke_tokens(self, username: str) -> None:
        """Refuse every token of ``username`` issued until now."""
        async with self._db.write() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                raise NotFound(f"user {username!r} not found")
            # iat has one-second resolution: a token issued in this second is revoked too.
            user.tokens_valid_after = utcnow().replace(microsecond=0) + timedelta(seconds=1)

    async def create_api_key(self, username: str, name: str = "") -> str:
        user = await self.get_user(username)
        prefix = secrets.token_hex(4)
        key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        async with self._db.write() as s:
            s.add(ApiKey(user_id=user.id, key_prefix=prefix, key_hash=_key_hash(key), name=name))
        return key

    async def revoke_api_key(self, prefix: str) -> None:
        async with self._db.write() as s:
            row = (await s.execute(select(ApiKey).where(ApiKey.key_prefix == prefix))).scalar_one_or_none()
            if row is None:
                raise NotFound(f"API key with prefix {prefix!r} not found")
            row.revoked_at = utcnow()

    # ---- verification (hot path) ----

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``authorization`` metadata value, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated("missing authorization metadata (expected 'Bearer <token>')")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        now = time.monotonic()
        hit = self._cache.get(credential)
        if hit is not None and hit[0] > now:
            return hit[1]
        if credential.startswith(API_KEY_PREFIX):
            principal = await self._verify_api_key(credential)
        else:
            principal = await self._verify_jwt(credential)
        if self._cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[credential] = (now + self._cache_seconds, principal)
        return principal

    async def _verify_jwt(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                await self.jwt_secret(),
                algorithms=["HS256"],
                issuer=self._settings.jwt.issuer,
                options={"require": ["exp", "iat", "sub"]},
            )
            user_id = uuid.UUID(claims["sub"])
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except (jwt.InvalidTokenError, ValueError):
            raise Unauthenticated("invalid token") from None
        async with self._db.read() as s:
            user = await s.get(User, user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("token's user does not exist or is disabled")
        if user.tokens_valid_after is not None:
            issued = datetime.fromtimestamp(int(claims["iat"]), UTC)
            if issued < user.tokens_valid_after:
                raise Unauthenticated("token revoked")
        return Principal(user.id, user.username, user.role)

    async def _verify_api_key(self, key: str) -> Principal:
        async with self._db.read() as s:
            row = (
                await s.execute(
                    select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == _key_hash(key))
                )
            ).first()
        if row is None:
            raise Unauthenticated("invalid API key")
        api_key, user = row
        if api_key.revoked_at is not None:
            raise Unauthenticated("API key revoked")
        if not user.is_active:
            raise Unauthenticated("API key's user is disabled")
        return Principal(user.id, user.username, user.role)
