"""The one table from the domain's ``Code`` to the statuses of each edge: gRPC status codes
(native gRPC and gRPC-Web share them) and Connect codes."""

from __future__ import annotations

import grpc
from connectrpc.code import Code as ConnectCode

from ..errors import Code

__all__ = ["connect_code", "grpc_code", "grpc_message"]

_TABLE: dict[Code, tuple[grpc.StatusCode, ConnectCode]] = {
    Code.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, ConnectCode.INVALID_ARGUMENT),
    Code.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, ConnectCode.NOT_FOUND),
    Code.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, ConnectCode.ALREADY_EXISTS),
    Code.FAILED_PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, ConnectCode.FAILED_PRECONDITION),
    Code.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, ConnectCode.PERMISSION_DENIED),
    Code.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, ConnectCode.UNAUTHENTICATED),
    Code.UNIMPLEMENTED: (grpc.StatusCode.UNIMPLEMENTED, ConnectCode.UNIMPLEMENTED),
    Code.DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, ConnectCode.DEADLINE_EXCEEDED),
    Code.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, ConnectCode.UNAVAILABLE),
    Code.RESOURCE_EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, ConnectCode.RESOURCE_EXHAUSTED),
    Code.ABORTED: (grpc.StatusCode.ABORTED, ConnectCode.ABORTED),
    Code.CANCELLED: (grpc.StatusCode.CANCELLED, ConnectCode.CANCELED),
    Code.INTERNAL: (grpc.StatusCode.INTERNAL, ConnectCode.INTERNAL),
}
assert set(_TABLE) == set(Code), "every domain code needs a status on every edge"


def grpc_code(code: Code) -> grpc.StatusCode:
    return _TABLE[code][0]


def connect_code(code: Code) -> ConnectCode:
    return _TABLE[code][1]


def grpc_message(message: str) -> str:
    """``grpc-message`` as the gRPC HTTP/2 spec encodes it: percent-encode '%' and every byte
    outside printable ASCII (UTF-8 first); spaces and other printable characters stay as they are."""
    out = []
    for b in message.encode("utf-8"):
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out)
