"""SystemService: the server process as the admin console's server page shows it."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypedDict

from .. import __version__
from ..ids import rfc3339
from ..pb import common_pb2
from ..pb import system_pb2 as pb
from .dispatch import Call

__all__ = ["ServerFacts", "SystemServicer"]


class ServerFacts(TypedDict):
    """What the server process tells about itself, typed so that each reaches its ServerInfo field
    with the type that field takes."""

    database: str
    plugins_dir: str
    plugins_loaded: int
    plugin_errors: dict[str, str]  # plugin id → why its file did not load
    public_url: str
    restart_mode: str


class SystemServicer:
    def __init__(self, info: Callable[[], ServerFacts]) -> None:
        self._info = info
        self._started = datetime.now(UTC)
        self._t0 = time.monotonic()

    async def GetServerInfo(self, request: common_pb2.EmptyRequest, call: Call) -> pb.ServerInfo:
        i = self._info()
        return pb.ServerInfo(
            version=__version__,
            started_at=rfc3339(self._started),
            uptime_seconds=int(time.monotonic() - self._t0),
            python_version=platform.python_version(),
            database=i["database"],
            plugins_dir=i["plugins_dir"],
            plugins_loaded=i["plugins_loaded"],
            plugin_errors=[
                pb.PluginFileError(file=f"{pid}.py", error=e) for pid, e in sorted(i["plugin_errors"].items())
            ],
            public_url=i["public_url"],
            restart_mode=i["restart_mode"],
        )
