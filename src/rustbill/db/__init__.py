"""Storage: tables, the engine and sessions, migrations."""

from .models import (
    PLUGIN_TYPES,
    ApiKey,
    Base,
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
from .session import Database, redact_url

__all__ = [
    "PLUGIN_TYPES",
    "ApiKey",
    "Base",
    "Database",
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
]
