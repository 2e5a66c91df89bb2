"""The loop every background round runs in (health checks, the reconciler, drift): a failed round
is logged and the next one comes anyway, so that one bad round never stops the loop for good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(interval: float, work: Callable[[], Awaitable[object]], what: str, *, first_now: bool = True) -> None:
    """``work()`` every ``interval`` seconds until cancelled; the first round now, or after one
    interval when ``first_now`` is false."""
    if not first_now:
        await asyncio.sleep(interval)
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(interval)
