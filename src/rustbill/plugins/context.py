"""The plugin call in progress, as plugin code sees it (``sdk.context()``, ``sdk.state()``).

It lives in the plugin's worker process: the worker sets it for each call it runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["CallContext", "current_call"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """The interface and caller a plugin function is running for, and its deadline."""

    interface_id: str
    interface_name: str
    plugin_id: str
    function: str
    # The id of this call (also in the server's log line for it); create_instance's own
    # idempotency id stays ``spec["request_id"]``.
    request_id: str
    # Who made the RPC this call serves: a user name, "-" for none, "system" for background work.
    caller: str
    # time.monotonic() at which the server gives up on this call.
    deadline: float
    loop: asyncio.AbstractEventLoop
    # (operation, arguments) → the server's answer: the interface's state, kept by the server.
    state_request: Callable[..., Awaitable[Any]]
    # What ``sdk.now()`` returns during this call when a test fakes the time (sdk.testing), else None.
    now: datetime | None = None

    def remaining(self) -> float:
        """Seconds left before the server gives up on this call (never below 0)."""
        return max(0.0, self.deadline - time.monotonic())


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("plugin_call", default=None)
