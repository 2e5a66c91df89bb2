"""Storage: tables, the engine and sessions, migrations."""

from .models import (
    ApiKey,
    Balance,
    BalanceTransaction,
    Base,
    DriftFinding,
    Instance,
    PaymentNotification,
    PaymentRequest,
    Plugin,
    PluginInterface,
    PluginState,
    Process,
    Product,
    RefreshToken,
    Setting,
    User,
)
from .session import Database, redact_url, rowcount

__all__ = [
    "ApiKey",
    "Balance",
    "BalanceTransaction",
    "Base",
    "Database",
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
    "redact_url",
    "rowcount",
]
