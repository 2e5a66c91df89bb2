"""The domain layer: what the RPCs do, independent of gRPC."""

from .catalog import Catalog, ChannelEntry, ProviderEntry, validate_config
from .channels import Channels
from .health import HealthResult, HealthService
from .providers import Providers, SyncResult

__all__ = [
    "Catalog",
    "ChannelEntry",
    "Channels",
    "HealthResult",
    "HealthService",
    "ProviderEntry",
    "Providers",
    "SyncResult",
    "validate_config",
]
