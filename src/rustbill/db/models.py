"""Tables. Uniqueness rules live here as database constraints, not only as Python checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..ids import new_id, utcnow

__all__ = [
    "ApiKey",
    "Balance",
    "BalanceTransaction",
    "Base",
    "DriftFinding",
    "Instance",
    "PaymentNotification",
    "PaymentRequest",
    "Plugin",
    "PluginInterface",
    "PluginState",
    "Process",
    "Product",
    "RefreshToken",
    "Setting",
    "User",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An exact decimal amount: NUMERIC(20, 8) on PostgreSQL, text on SQLite (whose NUMERIC would
    round through a float)."""

    impl = Numeric(20, 8)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(20, 8))

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Plugin(Base):
    """A plugin definition: one script in the plugins folder (``plugins/<plugin_id>.py``)."""

    __tablename__ = "plugins"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    plugin_type: Mapped[str] = mapped_column(String(32))
    plugin_id: Mapped[str] = mapped_column(String(128), unique=True)
    has_admin_page: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[str] = mapped_column(String(64), default="0.0.0")
    # sha256 of the file content last scanned; a changed file changes it.
    content_hash: Mapped[str] = mapped_column(String(64))
    # False while the file is missing from the folder (the row is kept for its interfaces).
    file_present: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PluginInterface(Base):
    """A configured, named instance of a plugin definition."""

    __tablename__ = "plugin_interfaces"
    __table_args__ = (
        UniqueConstraint("plugin_def_id", "display_name"),
        Index("ix_plugin_interfaces_type_enabled", "plugin_type", "enabled"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    plugin_def_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("plugins.id", ondelete="RESTRICT"))
    plugin_type: Mapped[str] = mapped_column(String(32))
    plugin_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    config_json: Mapped[str] = mapped_column(Text)
    config_schema: Mapped[str] = mapped_column(Text)
    is_healthy: Mapped[bool] = mapped_column(Boolean, default=False)
    health_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_check_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    has_admin_page: Mapped[bool] = mapped_column(Boolean, default=False)
    plugin_version: Mapped[str] = mapped_column(String(64), default="0.0.0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Product(Base):
    """A product synced from a provider interface (unique per interface and upstream id)."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("interface_id", "upstream_product_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    interface_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("plugin_interfaces.id", ondelete="CASCADE"))
    upstream_product_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(8), default="")
    group_id: Mapped[str] = mapped_column(String(200), default="")
    specs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    billing_cycles: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Instance(Base):
    """A local instance linked to a provider interface (one per provider instance id)."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("interface_id", "provider_instance_id"),
        # An idempotency-key is the caller's own: another caller's same key is another order.
        UniqueConstraint("interface_id", "customer_id", "idempotency_key"),
        # Orders without a provider instance yet (what the reconciler looks at): few rows of many.
        Index(
            "ix_instances_unsettled",
            "status",
            sqlite_where=text("provider_instance_id IS NULL"),
            postgresql_where=text("provider_instance_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    interface_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("plugin_interfaces.id", ondelete="RESTRICT"))
    # NULL while the provider is being asked to open it (status "provisioning").
    provider_instance_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(64), default="")
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    server_spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # "created" (opened through CreateUpstreamInstance) or "imported".
    origin: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    # The caller's ``idempotency-key`` of CreateUpstreamInstance: a retry returns this instance.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # While an order is unsettled (no provider_instance_id): the server process (``processes.id``)
    # whose create_instance call for it may still be running, or that is settling it. NULL when no
    # attempt is running. An owner that no longer heartbeats died: its orders are reconciled.
    owner: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # When create_instance was last asked for this order (reserved, or opened again by a keyed
    # retry); NULL for imported instances. The reconciler releases an order the provider has
    # nothing for only when this is at least [plugins] release_after_seconds ago.
    attempted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Balance(Base):
    """A customer's balance: always the sum of their ``balance_transactions``, updated in the same
    transaction as each ledger row. The row is also what serialises one customer's money
    operations (locked FOR UPDATE on PostgreSQL; SQLite write transactions are serialised)."""

    __tablename__ = "balances"

    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Money)
    # How far below zero orders may take the balance.
    credit_limit: Mapped[Decimal] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BalanceTransaction(Base):
    """One entry of the append-only ledger (the database refuses UPDATE and DELETE on it)."""

    __tablename__ = "balance_transactions"
    __table_args__ = (
        # One "order" debit and at most one "refund" per ordered instance, whatever retries happen.
        UniqueConstraint("instance_id", "kind"),
        Index("ix_balance_transactions_customer_id_id", "customer_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="RESTRICT"))
    # Signed: positive adds to the balance, negative takes from it.
    amount: Mapped[Decimal] = mapped_column(Money)
    balance_after: Mapped[Decimal] = mapped_column(Money)
    # "credit", "debit" (by an admin), "order", "refund".
    kind: Mapped[str] = mapped_column(String(16))
    # The instance row an "order"/"refund" is for. No foreign key: a failed order's row is deleted,
    # its ledger entries stay.
    instance_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="system")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DriftFinding(Base):
    """A lasting difference between an upstream interface and this server (an orphan instance, a
    low balance …), kept while it lasts so that it is reported once, not on every round."""

    __tablename__ = "drift_findings"

    interface_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("plugin_interfaces.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PaymentNotification(Base):
    """A gateway notification that was accepted as paid: one per interface and gateway trade, so a
    replayed notification can never credit an order twice."""

    __tablename__ = "payment_notifications"
    __table_args__ = (UniqueConstraint("interface_id", "trade_no"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    interface_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("plugin_interfaces.id", ondelete="CASCADE"))
    trade_no: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PaymentRequest(Base):
    """A payment asked of a gateway (``Channels.create_payment``): what a notification arriving on
    ``/pay/notify/<interface_id>`` is checked against (order id and amount)."""

    __tablename__ = "payment_requests"
    __table_args__ = (UniqueConstraint("interface_id", "order_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    interface_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("plugin_interfaces.id", ondelete="CASCADE"))
    order_id: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PluginState(Base):
    """Small persistent values a plugin keeps per interface (``sdk.state()``)."""

    __tablename__ = "plugin_state"

    interface_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("plugin_interfaces.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Process(Base):
    """A running server process: it heartbeats every few seconds and deletes its row when it
    stops. Orders it owns while its heartbeat is fresh are in flight; otherwise they are orphaned."""

    __tablename__ = "processes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    # Kernel boot id and PID namespace: processes with the same ``node`` can check each other's pid.
    node: Mapped[str] = mapped_column(String(200), default="")
    # The pid's start time (clock ticks since boot, /proc/<pid>/stat): tells a reused pid apart.
    pid_start: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Tokens issued before this moment are refused ("rustbill token revoke").
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    key_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    # sha256 hex of the whole key; keys are random (256 bits), so no slow hash is needed.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Written at most once a minute per key (not on every call): "about when", not an audit log.
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # None: the key does not expire.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RefreshToken(Base):
    """A login's refresh token (stored as a sha256 hash). Each use replaces it with a new one of
    the same family; presenting a used token again revokes the whole family (token theft)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Setting(Base):
    """Server-wide values generated once and shared by every process (e.g. the JWT secret)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
