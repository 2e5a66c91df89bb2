"""Storage: tables, the engine and sessions, migrations."""

from .models import PLUGIN_TYPES, ApiKey, Base, Instance, Plugin, PluginInterface, Product, Setting, User
from .session import Database, redact_url

__all__ = [
    "PLUGIN_TYPES",
    "ApiKey",
    "Base",
    "Database",
    "Instance",
    "Plugin",
    "PluginInterface",
    "Product",
    "Setting",
    "User",
    "redact_url",
]
