"""Users, credentials and the permission table.

A caller sends ``authorization: Bearer <credential>``. A credential is either a JWT (HS256, signed
with the server's secret, ``sub`` = user id) or an API key (``rbk_<prefix>_<secret>``, stored as a
sha256 hash). Both are checked against the database: a disabled user, a revoked or expired key or
a token issued before ``rustbill token revoke`` is refused. Verified credentials are cached for
``auth.cache_seconds`` (never past a key's expiry) so that the hot path does not touch the database
on every call; a key's last use is written at most once a minute per key and process, for the same
reason.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .config import Settings
from .db import ApiKey, Database, RefreshToken, Setting, User, rowcount
from .errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unauthenticated
from .ids import new_id, utcnow

__all__ = [
    "AuthService",
    "LoginLimiter",
    "Principal",
    "Session",
    "hash_password",
    "verify_password",
]

log = logging.getLogger(__name__)

ROLES = ("admin", "customer")
API_KEY_PREFIX = "rbk_"
REFRESH_PREFIX = "rbr_"
USE_RECORD_SECONDS = 60  # an API key's last_used_at is written at most this often (per process)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: uuid.UUID
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


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


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(12))


class LoginFailed(Unauthenticated):
    """A failed login: ``message`` for the caller, ``reason`` for the log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Session:
    """What a successful login or refresh hands out."""

    access_token: str
    refresh_token: str
    expires_in: int
    user: User


class LoginLimiter:
    """Counts failed logins per user name and per client address in a sliding window; past the
    limit, further attempts are refused with RESOURCE_EXHAUSTED until the oldest failure ages out.
    Kept in process memory: each process of a scale-out deployment counts on its own."""

    def __init__(self, *, per_user: int, per_address: int, window_seconds: float) -> None:
        self._limits = {"user": per_user, "address": per_address}
        self._window = window_seconds
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self._window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def check(self, username: str, address: str) -> None:
        """Raise ResourceExhausted when either key is over its limit."""
        now = time.monotonic()
        for kind, value in (("user", username), ("address", address)):
            q = self._recent((kind, value), now)
            if len(q) >= self._limits[kind]:
                wait = max(1, int(q[0] + self._window - now) + 1)
                what = "this account" if kind == "user" else "this address"
                raise ResourceExhausted(f"too many failed sign-ins for {what}; retry in {wait} s", retry_after=wait)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        if len(self._failures) > 100_000:
            self._failures.clear()  # bounded memory under a flood of distinct names
        for key in (("user", username), ("address", address)):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("user", username), None)


class AuthService:
    """Issues and verifies credentials; manages users."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._secret: str | None = settings.jwt.secret or None
        # credential -> (cached until, monotonic; principal; the API key's id or None)
        self._cache: dict[str, tuple[float, Principal, uuid.UUID | None]] = {}
        self._cache_seconds = settings.auth.cache_seconds
        self._use_recorded: dict[uuid.UUID, float] = {}  # API key id -> when its use was last written

    # ---- set-up ----

    async def jwt_secret(self) -> str:
        """The configured secret, or the one generated on first start and kept in ``settings``."""
        if self._secret:
            return self._secret
        async with self._db.read() as s:
            row = await s.get(Setting, "jwt_secret")
        if row is None:
            try:
                await self._db.add(Setting(key="jwt_secret", value=secrets.token_urlsafe(48)))
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
            await self._db.add(user)
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

    async def set_password(self, username: str, password: str) -> None:
        """Set a user's login password (kept as a scrypt hash); ends the user's logins."""
        if len(password) < 8:
            raise InvalidArgument("password must be at least 8 characters")
        async with self._db.write() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                raise NotFound(f"user {username!r} not found")
            user.password_hash = hash_password(password)
            await s.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    # ---- tokens and keys ----

    async def create_token(self, username: str, ttl_seconds: int | None = None) -> str:
        user = await self.get_user(username)
        if not user.is_active:
            raise InvalidArgument(f"user {username!r} is disabled")
        ttl = ttl_seconds if ttl_seconds is not None else self._settings.jwt.ttl_seconds
        if ttl <= 0:
            raise InvalidArgument("--ttl must be positive")
        return await self._access_token(user, ttl)

    async def _access_token(self, user: User, ttl: int) -> str:
        now = utcnow()
        claims = {
            "sub": str(user.id),
            "iss": self._settings.jwt.issuer,
            "iat": int(now.timestamp()),
            "exp": now + timedelta(seconds=ttl),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, await self.jwt_secret(), algorithm="HS256")

    # ---- logins (IdentityService) ----

    async def login(self, username: str, password: str, *, admin_only: bool = False) -> Session:
        """Check a username and password and open a login. Every failure reads the same to the
        caller ("invalid username or password"); the reason is logged by the caller."""
        async with self._db.read() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
        stored = user.password_hash if user is not None else None
        # Hash even when the user does not exist, so that timing does not tell which names exist.
        ok = verify_password(password, stored or _dummy_hash()) and stored is not None
        if user is None or not ok:
            raise LoginFailed("invalid username or password", "no such user" if user is None else "wrong password")
        if not user.is_active:
            raise LoginFailed("invalid username or password", "user disabled")
        if admin_only and user.role != "admin":
            raise PermissionDenied(f"user {username!r} is not an admin")
        return await self._open_session(user, family_id=new_id())

    async def refresh(self, refresh_token: str) -> Session:
        """Use up ``refresh_token`` and return a new access and refresh token of the same login.
        A token that was already used revokes its whole login (someone replayed a stolen token)."""
        if not refresh_token.startswith(REFRESH_PREFIX):
            raise Unauthenticated("invalid refresh token")
        now = utcnow()
        digest = _key_hash(refresh_token)
        async with self._db.write() as s:
            row = (await s.execute(select(RefreshToken).where(RefreshToken.token_hash == digest))).scalar_one_or_none()
            if row is None:
                raise Unauthenticated("invalid refresh token")
            if row.revoked_at is not None:
                raise Unauthenticated("refresh token revoked; sign in again")
            if row.expires_at <= now:
                raise Unauthenticated("refresh token expired; sign in again")
            # Atomically claim it: of two concurrent uses only one gets a rowcount of 1.
            claimed = await s.execute(
                update(RefreshToken)
                .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
                .values(used_at=now)
            )
            family_id, user_id = row.family_id, row.user_id
            reused = rowcount(claimed) != 1
            if reused:
                await s.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
        if reused:
            log.warning("refresh token reused: revoked every token of login family %s (user %s)", family_id, user_id)
            raise Unauthenticated("refresh token was already used; every token of this login is revoked")
        async with self._db.read() as s:
            user = await s.get(User, user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("the token's user does not exist or is disabled")
        return await self._open_session(user, family_id=family_id)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the login that ``refresh_token`` belongs to (unknown tokens are ignored)."""
        async with self._db.write() as s:
            row = (
                await s.execute(select(RefreshToken).where(RefreshToken.token_hash == _key_hash(refresh_token)))
            ).scalar_one_or_none()
            if row is not None:
                await s.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )

    async def _open_session(self, user: User, *, family_id: uuid.UUID) -> Session:
        a = self._settings.auth
        refresh_token = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await self._db.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id,
                token_hash=_key_hash(refresh_token),
                expires_at=utcnow() + timedelta(seconds=a.refresh_ttl_seconds),
            )
        )
        access = await self._access_token(user, a.login_ttl_seconds)
        return Session(access, refresh_token, a.login_ttl_seconds, user)

    async def user_by_id(self, user_id: uuid.UUID) -> User:
        async with self._db.read() as s:
            user = await s.get(User, user_id)
        if user is None:
            raise NotFound("user not found")
        return user

    async def revoke_tokens(self, username: str) -> None:
        """Refuse every token of ``username`` issued until now."""
        async with self._db.write() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                raise NotFound(f"user {username!r} not found")
            # iat has one-second resolution: a token issued in this second is revoked too.
            user.tokens_valid_after = utcnow().replace(microsecond=0) + timedelta(seconds=1)

    async def create_api_key(self, username: str, name: str = "", expires_at: datetime | None = None) -> str:
        user = await self.get_user(username)
        key, _ = await self.issue_api_key(user.id, name, expires_at=expires_at)
        return key

    async def issue_api_key(
        self, user_id: uuid.UUID, name: str = "", *, expires_at: datetime | None = None
    ) -> tuple[str, ApiKey]:
        """A new API key of ``user_id``: the key (shown once; only its hash is stored) and its row.
        ``expires_at`` (optional) must be in the future."""
        if len(name) > 200:
            raise InvalidArgument("the key's name is longer than 200 characters")
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise InvalidArgument(f"expires_at must be in the future, got {expires_at.isoformat()}")
        prefix = secrets.token_hex(4)
        key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            user_id=user_id, key_prefix=prefix, key_hash=_key_hash(key), name=name, created_at=now,
            expires_at=expires_at,
        )  # fmt: skip
        try:
            await self._db.add(row)
        except IntegrityError:
            raise NotFound("user not found") from None
        return key, row

    async def api_keys(self, user_id: uuid.UUID) -> list[ApiKey]:
        """``user_id``'s API keys, newest first (revoked ones included)."""
        async with self._db.read() as s:
            q = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
            return list((await s.execute(q)).scalars())

    async def revoke_api_key_id(self, key_id: uuid.UUID, *, owner: uuid.UUID | None) -> ApiKey:
        """Revoke the key ``key_id`` (of ``owner``, unless None: an admin's revocation). Another
        user's key is NOT_FOUND. Revoking a revoked key changes nothing."""
        async with self._db.write() as s:
            row = await s.get(ApiKey, key_id)
            if row is None or (owner is not None and row.user_id != owner):
                raise NotFound(f"API key {key_id} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        return row

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
            _, principal, key_id = hit
        else:
            lifetime = float(self._cache_seconds)
            key_id = None
            if credential.startswith(API_KEY_PREFIX):
                principal, key_id, expires_at = await self._verify_api_key(credential)
                if expires_at is not None:  # not served from the cache past its expiry
                    lifetime = min(lifetime, (expires_at - utcnow()).total_seconds())
            else:
                principal = await self._verify_jwt(credential)
            if lifetime > 0:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[credential] = (now + lifetime, principal, key_id)
        if key_id is not None:
            await self._record_use(key_id, now)
        return principal

    async def _record_use(self, key_id: uuid.UUID, now: float) -> None:
        """Write the key's last_used_at unless this process did in the last USE_RECORD_SECONDS: one
        small write a minute per busy key, none per call. A failed write is logged, never refused."""
        last = self._use_recorded.get(key_id)
        if last is not None and now - last < USE_RECORD_SECONDS:
            return
        if len(self._use_recorded) > 100_000:
            self._use_recorded.clear()
        self._use_recorded[key_id] = now
        try:
            async with self._db.write() as s:
                await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
        except Exception as exc:
            log.warning("could not record the use of API key %s: %s", key_id, exc)

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

    async def _verify_api_key(self, key: str) -> tuple[Principal, uuid.UUID, datetime | None]:
        """The key's principal, its id and its expiry."""
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
        if api_key.expires_at is not None and api_key.expires_at <= utcnow():
            raise Unauthenticated(f"API key expired at {api_key.expires_at.isoformat()}")
        if not user.is_active:
            raise Unauthenticated("API key's user is disabled")
        return Principal(user.id, user.username, user.role), api_key.id, api_key.expires_at
