"""Who is calling, for the log lines written below the edge (plugin calls, state changes)."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["caller"]

# "admin", "alice", "-" (no credential), "system" (background jobs): set by the dispatcher per RPC.
caller: ContextVar[str] = ContextVar("caller", default="system")
