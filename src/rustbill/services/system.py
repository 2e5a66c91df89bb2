"""SystemService: the server process as the admin console's server page shows it."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .. import __version__
from ..ids import rfc3339
from ..pb import common_pb2
from ..pb import system_pb2 as pb
from .dispatch import Call

__all__ = ["SystemServicer"]


class SystemServicer:
    def __init__(self, info: Callable[[], dict[str, object]]) -> None:
        self._info = info
        self._started = datetime.now(UTC)
        self._t0 = time.monotonic()

    async def GetServerInfo(self, request: common_pb2.EmptyRequest, call: Call) -> pb.ServerInfo:
        i = self._info()
        errors = i.pop("plugin_errors")
        assert isinstance(errors, dict)
        return pb.ServerInfo(
            version=__version__,
            started_at=rfc3339(self._started),
            uptime_seconds=int(time.monotonic() - self._t0),
            python_version=platform.python_version(),
            plugin_errors=[pb.PluginFileError(file=f"{pid}.py", error=e) for pid, e in sorted(errors.items())],
            **i,  # type: ignore[arg-type]
        )
