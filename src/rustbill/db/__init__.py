"""Storage: tables, the engine and sessions, migrations."""

from .models import (
    PLUGIN_TYPES,
    ApiKey,
    Base,
    Instance,
    PaymentNotification,
    Plugin,
    PluginInterface,
    PluginState,
    Product,
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
    "Plugin",
    "PluginInterface",
    "PluginState",
    "Product",
    "Setting",
    "User",
    "redact_url",
]
