"""Settings: one object built at the entry point from defaults, a TOML file and ``RUSTBILL_*``.

Precedence, highest first: environment variables (``RUSTBILL_<SECTION>__<KEY>``, e.g.
``RUSTBILL_DB__URL``), the TOML file given with ``--config`` (or ``RUSTBILL_CONFIG``), defaults.
Every key is documented in ``config.example.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "async_db_url", "load_settings"]


def _check_host_port(key: str, v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{key} must be HOST:PORT, got {v!r}")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    listen: str = "127.0.0.1:50051"
    grace_seconds: float = Field(10.0, ge=0)
    restart_mode: Literal["reexec", "exit"] = "reexec"
    uvloop: bool = True
    max_concurrent_rpcs: int | None = Field(None, ge=1)
    # PEM files of the certificate (chain) and private key both listeners serve TLS with. Empty:
    # plaintext. Reloaded when either file changes (checked every tls_reload_seconds) or on SIGHUP.
    tls_cert: str = ""
    tls_key: str = ""
    tls_reload_seconds: float = Field(2.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        return _check_host_port("server.listen", v)

    @model_validator(mode="after")
    def _check_tls(self) -> ServerSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("server.tls_cert and server.tls_key go together: set both (or neither)")
        return self


class DbSettings(_Section):
    # Empty: an SQLite file ``rustbill.db`` in the data folder.
    url: str = ""
    echo: bool = False
    pool_size: int = Field(10, ge=1)


class JwtSettings(_Section):
    # Empty: a random secret is generated on first start and kept in the database.
    secret: str = ""
    ttl_seconds: int = Field(86400, ge=1)
    issuer: str = "rustbill"

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, v: str) -> str:
        if v and (len(v) < 32 or v.lower() in ("changeme", "change-me", "secret")):
            raise ValueError("jwt.secret must be at least 32 characters (or empty to generate one)")
        return v


class AuthSettings(_Section):
    # How long a verified credential is trusted before the database is asked again
    # (revocations take effect within this time). 0 checks the database on every call.
    cache_seconds: float = Field(2.0, ge=0)
    # Sign-in (IdentityService.Login): lifetime of the access token it hands out, and of the
    # refresh token that renews it.
    login_ttl_seconds: int = Field(900, ge=30)
    refresh_ttl_seconds: int = Field(30 * 86400, ge=60)
    # Failed sign-ins allowed per user name and per client address within login_window_seconds;
    # past that, attempts are refused (RESOURCE_EXHAUSTED) until the oldest failure is older.
    login_max_failures_per_user: int = Field(5, ge=1)
    login_max_failures_per_address: int = Field(20, ge=1)
    login_window_seconds: float = Field(900.0, gt=0)
    # Who may call a method, where the default does not suit: "Service/Method" = "admin",
    # "authenticated" or "public", e.g. {"IntegrationService/ListProviders" = "authenticated"}.
    permissions: dict[str, str] = Field(default_factory=dict)


class HttpSettings(_Section):
    # HOST:PORT of the HTTP listener (gRPC-Web, Connect, payment callbacks, /metrics, /admin).
    # Empty: no HTTP listener.
    listen: str = "127.0.0.1:8080"
    # The address gateways and browsers reach this listener at (behind a proxy: the proxy's),
    # used to build payment notification URLs. Empty: http://<listen>.
    public_url: str = ""
    # Origins (scheme://host[:port]) allowed to call the API from a browser page of another
    # origin (CORS). Empty: none; "*" allows any origin.
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        return _check_host_port("http.listen", v) if v else v

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"http.public_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, v: list[str]) -> list[str]:
        for o in v:
            if o != "*" and (not o.startswith(("http://", "https://")) or o.rstrip("/") != o or o.count("/") != 2):
                raise ValueError(f"http.cors_origins: {o!r} is not an origin like https://admin.example.com")
        return v


class SecretsSettings(_Section):
    # Fernet key (32 url-safe base64 bytes; `rustbill secrets new-key` makes one) that encrypts the
    # secret fields of plugin configs in the database. Empty: <data.dir>/secrets.key, generated once.
    key: str = ""
    # Older keys that still decrypt (during a rotation: see `rustbill secrets rotate`).
    previous_keys: list[str] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _check_key(cls, v: str) -> str:
        if v:
            _check_fernet_key("secrets.key", v)
        return v

    @field_validator("previous_keys")
    @classmethod
    def _check_previous(cls, v: list[str]) -> list[str]:
        for k in v:
            _check_fernet_key("secrets.previous_keys", k)
        return v


def _check_fernet_key(name: str, v: str) -> None:
    import base64
    import binascii

    try:
        ok = len(base64.urlsafe_b64decode(v.encode())) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be 32 url-safe base64-encoded bytes (make one with `rustbill secrets new-key`)")


class BootstrapSettings(_Section):
    admin_username: str = "admin"
    # Empty: a random password is generated on first start and printed once.
    admin_password: str = ""


class PluginSettings(_Section):
    dir: Path = Path("./plugins")
    rescan_seconds: float = Field(2.0, gt=0)
    call_timeout_seconds: float = Field(30.0, gt=0)
    # Per-function overrides of call_timeout_seconds, e.g. {create_instance = 300}.
    timeouts: dict[str, float] = Field(default_factory=dict)
    import_timeout_seconds: float = Field(10.0, gt=0)
    # Each plugin runs in a worker process of its own (docs/plugins.md, "Isolation"). Per worker:
    # threads for plugin functions written with plain ``def``;
    max_threads: int = Field(16, ge=1)
    # its address space in MiB (0: no limit; a call that runs out is RESOURCE_EXHAUSTED);
    memory_limit_mb: int = Field(1024, ge=0)
    # CPU seconds it may use during its oldest running call (0: no limit but the call's deadline);
    cpu_seconds_per_call: float = Field(0.0, ge=0)
    # CPU seconds it may use within 10 s with no call running before it is replaced;
    idle_cpu_seconds: float = Field(5.0, gt=0)
    # after a deadline, seconds a call has to end before its worker is killed and replaced;
    kill_grace_seconds: float = Field(0.5, ge=0)
    # with no call for this many seconds it is stopped, giving its memory back (0: never).
    worker_idle_seconds: float = Field(120.0, ge=0)
    # A plugin whose worker fails this many times within breaker_window_seconds is suspended
    # (its calls fail fast with UNAVAILABLE) for suspend_seconds.
    breaker_faults: int = Field(5, ge=1)
    breaker_window_seconds: float = Field(60.0, gt=0)
    suspend_seconds: float = Field(60.0, ge=0)
    health_interval_seconds: float = Field(300.0, ge=0)
    health_concurrency: int = Field(100, ge=1)
    # Orders whose create_instance outcome is unknown are settled (find_instance) every this many
    # seconds, in one process at a time (0: only by keyed retries).
    reconcile_interval_seconds: float = Field(10.0, ge=0)
    # An order whose provider has nothing for it is released (its debit refunded) only when its
    # last create_instance attempt is at least this many seconds old: a remote provider (another
    # RustBill: its own pricing and create_instance timeouts) may still open what it was asked for
    # before this side gave up. Until then the reconciler asks again every round.
    release_after_seconds: float = Field(600.0, ge=0)


class BillingSettings(_Section):
    # ISO 4217 code of customer balances. A customer's order priced in another currency is refused.
    currency: str = "CNY"
    # Seconds between sweeps that refund order debits whose order failed for good (0: only at start).
    refund_sweep_seconds: float = Field(300.0, ge=0)

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, v: str) -> str:
        if not (len(v) == 3 and v.isascii() and v.isalpha()):
            raise ValueError(f"billing.currency must be a 3-letter currency code like CNY or USD, got {v!r}")
        return v.upper()


class DriftSettings(_Section):
    # Seconds between rounds that compare every enabled upstream provider interface with this
    # server (products and prices, instances, balance); 0: off.
    interval_seconds: float = Field(3600.0, ge=0)
    # Notifier interfaces (ids) the findings are sent through. Empty: every enabled notifier.
    notifiers: list[str] = Field(default_factory=list)

    @field_validator("notifiers")
    @classmethod
    def _check_notifiers(cls, v: list[str]) -> list[str]:
        import uuid

        for n in v:
            try:
                uuid.UUID(n)
            except ValueError:
                raise ValueError(f"drift.notifiers: {n!r} is not an interface id (a UUID)") from None
        return v


class DataSettings(_Section):
    dir: Path = Path("./data")


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text" (one line per record) or "json" (one JSON object per line, for log shippers).
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """All settings of a RustBill IntegrationService process."""

    model_config = SettingsConfigDict(
        env_prefix="RUSTBILL_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def database_url(self) -> str:
        """The database URL as the user wrote it (or the default SQLite file)."""
        if self.db.url:
            return self.db.url
        return f"sqlite:///{(self.data.dir / 'rustbill.db').resolve()}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, ``config_file`` (TOML) and the environment."""
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"configuration file not found: {config_file}")
    bound: type[Settings] = type(
        "FileSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})},
    )
    return bound(**overrides)


def async_db_url(url: str) -> str:
    """Map a plain database URL to its async SQLAlchemy driver.

    ``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``; ``postgresql://`` or ``postgres://`` →
    ``postgresql+asyncpg://``. URLs that already name a driver are kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"db.url is not a URL: {url!r}")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}" if "+" not in scheme else url
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}" if "+" not in scheme else url
    raise ValueError(f"db.url: unsupported database {scheme!r} (use sqlite:/// or postgresql://)")
