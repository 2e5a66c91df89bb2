"""The domain layer: what the RPCs do, independent of gRPC."""

from .catalog import Catalog, ChannelEntry, ProviderEntry, validate_config
from .channels import Channels
from .health import HealthResult, HealthService
from .processes import ProcessRegistry
from .providers import Providers, SyncResult
from .reconciler import Reconciler

__all__ = [
    "Catalog",
    "ChannelEntry",
    "Channels",
    "HealthResult",
    "HealthService",
    "ProcessRegistry",
    "ProviderEntry",
    "Providers",
    "Reconciler",
    "SyncResult",
    "validate_config",
]
