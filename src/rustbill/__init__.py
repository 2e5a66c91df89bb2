"""RustBill IntegrationService: the plugin system and integration core of RustBill."""

import os as _os

# gRPC's fork handlers are for processes that fork and go on using gRPC without exec. This package's
# processes fork the plugin zygote before they import gRPC, and otherwise fork only to exec (a zygote
# started again, subprocesses): gRPC's own advice for that case is to turn the handlers off, and
# with them on a server that forks while it serves can disturb its connections. Read when gRPC is
# first imported, so set here, before any of it (an operator's own GRPC_ENABLE_FORK_SUPPORT wins).
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
