"""Identifiers and timestamps as they appear on the wire."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import uuid6

from .errors import InvalidArgument
from .inputs import shown

__all__ = ["new_id", "parse_rfc3339", "parse_uuid", "rfc3339", "utcnow"]


def new_id() -> uuid.UUID:
    """A new time-ordered UUID (version 7)."""
    return uuid.UUID(int=uuid6.uuid7().int)


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """Parse a UUID from a request field; a malformed one is the caller's mistake."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} is not a valid UUID: {shown(value)}") from None


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(dt: datetime | None) -> str:
    """RFC3339 in UTC with a ``Z`` and microseconds dropped when zero."""
    if dt is None:
        return ""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(value: str, field: str) -> datetime:
    """Parse an RFC 3339 time from a request field (``2027-01-31T00:00:00Z``); it must name its
    offset, so that nobody's local time is guessed."""
    try:
        dt = datetime.fromisoformat(value)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{field} is not an RFC 3339 time like 2027-01-31T00:00:00Z: {shown(value)}") from None
    if dt.tzinfo is None:
        raise InvalidArgument(f"{field} must name its UTC offset (e.g. a trailing Z): {shown(value)}")
    return dt.astimezone(UTC)
