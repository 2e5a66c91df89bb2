"""The error hierarchy of RustBill's domain. Each error carries a transport-free ``Code``.

    RustBillError                      Code.INTERNAL (base; never raised directly)
    ├── InvalidArgument                Code.INVALID_ARGUMENT
    ├── NotFound                       Code.NOT_FOUND
    ├── AlreadyExists                  Code.ALREADY_EXISTS
    ├── FailedPrecondition             Code.FAILED_PRECONDITION
    │   └── InterfaceDisabled          (an interface an admin turned off)
    ├── PermissionDenied               Code.PERMISSION_DENIED
    ├── Unauthenticated                Code.UNAUTHENTICATED
    ├── Unimplemented                  Code.UNIMPLEMENTED
    ├── DeadlineExceeded               Code.DEADLINE_EXCEEDED
    ├── Unavailable                    Code.UNAVAILABLE
    ├── ResourceExhausted              Code.RESOURCE_EXHAUSTED
    ├── Aborted                        Code.ABORTED
    └── Internal                       Code.INTERNAL

Messages are safe to show to a caller: they name what is wrong, never carry a traceback or a
secret. ``Code`` knows nothing of any transport: ``rustbill.services.status`` is the one table
that turns it into a gRPC status (native gRPC, gRPC-Web) or a Connect code.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Code",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InterfaceDisabled",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RustBillError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_for_code",
]


class Code(Enum):
    """What kind of failure an error is, in the domain's own words (the canonical status names,
    which plugins also use: ``sdk.PluginError(code="UNAVAILABLE")``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class RustBillError(Exception):
    """Base of every domain error. ``message`` is shown to the caller as the status details."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RustBillError):
    code = Code.INVALID_ARGUMENT


class NotFound(RustBillError):
    code = Code.NOT_FOUND


class AlreadyExists(RustBillError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(RustBillError):
    code = Code.FAILED_PRECONDITION


class InterfaceDisabled(FailedPrecondition):
    """The interface exists but an admin disabled it: callers get FAILED_PRECONDITION, and code
    that must tell this apart (a health round skips it) catches the type, not the message."""

    def __init__(self, display_name: str) -> None:
        super().__init__(f"interface {display_name!r} is disabled")


class PluginNotLoaded(FailedPrecondition):
    """An interface's (or a plugin definition's) plugin file is missing or failed to load: its
    callers get FAILED_PRECONDITION; a health check reports the interface unhealthy with this
    message instead of failing."""

    def __init__(self, plugin_id: str, message: str) -> None:
        super().__init__(message)
        self.plugin_id = plugin_id


class PermissionDenied(RustBillError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(RustBillError):
    code = Code.UNAUTHENTICATED


class Unimplemented(RustBillError):
    code = Code.UNIMPLEMENTED


class DeadlineExceeded(RustBillError):
    code = Code.DEADLINE_EXCEEDED


class Unavailable(RustBillError):
    code = Code.UNAVAILABLE

    def __init__(
        self, message: str, *, request_may_have_been_sent: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        # False when the remote system was never reached (refused, unresolvable): nothing happened there.
        self.request_may_have_been_sent = request_may_have_been_sent
        # Seconds after which a retry may succeed (sent as ``retry-after`` metadata).
        self.retry_after = retry_after


class ResourceExhausted(RustBillError):
    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds after which a retry may succeed (sent as ``retry-after`` metadata).
        self.retry_after = retry_after


class Aborted(RustBillError):
    code = Code.ABORTED


class Internal(RustBillError):
    code = Code.INTERNAL


_BY_CODE: dict[Code, type[RustBillError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        Unimplemented,
        DeadlineExceeded,
        Unavailable,
        ResourceExhausted,
        Aborted,
        Internal,
    )
}


def error_for_code(code: Code | str, message: str) -> RustBillError:
    """The domain error for a code (or its name); INTERNAL for codes without their own class."""
    if isinstance(code, str):
        code = Code.__members__.get(code, Code.INTERNAL)
    return _BY_CODE.get(code, Internal)(message)
