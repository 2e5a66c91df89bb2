"""The domain layer: what the RPCs do, independent of gRPC."""

from .catalog import Catalog, ChannelEntry, ProviderEntry
from .health import HealthResult, HealthService
from .providers import Providers, SyncResult

__all__ = [
    "Catalog",
    "ChannelEntry",
    "HealthResult",
    "HealthService",
    "ProviderEntry",
    "Providers",
    "SyncResult",
]
