"""The error hierarchy of RustBill's domain; each error knows its gRPC status.

    RustBillError                      INTERNAL (base; never raised directly)
    ├── InvalidArgument                INVALID_ARGUMENT
    ├── NotFound                       NOT_FOUND
    ├── AlreadyExists                  ALREADY_EXISTS
    ├── FailedPrecondition             FAILED_PRECONDITION
    ├── PermissionDenied               PERMISSION_DENIED
    ├── Unauthenticated                UNAUTHENTICATED
    ├── Unimplemented                  UNIMPLEMENTED
    ├── DeadlineExceeded               DEADLINE_EXCEEDED
    ├── Unavailable                    UNAVAILABLE
    ├── ResourceExhausted              RESOURCE_EXHAUSTED
    ├── Aborted                        ABORTED
    └── Internal                       INTERNAL

Messages are safe to show to a caller: they name what is wrong, never carry a traceback or a
secret. The edge (``rustbill.services.edge``) is the one place that turns them into statuses.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
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


class RustBillError(Exception):
    """Base of every domain error. ``message`` is shown to the caller as the status details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def grpc_status_code(self) -> grpc.StatusCode:
        return self.code


class InvalidArgument(RustBillError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RustBillError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RustBillError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RustBillError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(RustBillError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(RustBillError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unimplemented(RustBillError):
    code = grpc.StatusCode.UNIMPLEMENTED


class DeadlineExceeded(RustBillError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(RustBillError):
    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, request_may_have_been_sent: bool = True) -> None:
        super().__init__(message)
        # False when the remote system was never reached (refused, unresolvable): nothing happened there.
        self.request_may_have_been_sent = request_may_have_been_sent


class ResourceExhausted(RustBillError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(RustBillError):
    code = grpc.StatusCode.ABORTED


class Internal(RustBillError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[RustBillError]] = {
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


def error_for_code(code: grpc.StatusCode, message: str) -> RustBillError:
    """The domain error for a gRPC status code (INTERNAL for codes without their own class)."""
    return _BY_CODE.get(code, Internal)(message)
