"""The messages between the server and its plugin worker processes.

A message is a JSON object in a frame: a 4-byte big-endian length, then that many bytes of UTF-8.
JSON keeps the two sides independent of each other's Python objects (a plugin cannot make the
server run code by what it returns, as pickle would allow); two tagged forms keep what JSON would
lose: ``{"\\u0000d": "12.30"}`` is a ``Decimal`` (money stays exact) and ``{"\\u0000b": "<base64>"}``
is ``bytes`` (bytes and str stay apart). Tuples become lists, as the contract allows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from decimal import Decimal
from typing import Any

__all__ = ["MAX_FRAME", "WireError", "decode", "encode", "read_frame", "write_frame"]

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
_DEC = "\x00d"
_BYTES = "\x00b"


class WireError(Exception):
    """A value that cannot cross the process boundary, or a frame that is not a message."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {_DEC: str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    what = type(value).__name__
    raise TypeError(f"a value of type {what} is not JSON-serialisable (it cannot leave the plugin process)")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _DEC in obj:
            return Decimal(obj[_DEC])
        if _BYTES in obj:
            return base64.b64decode(obj[_BYTES])
    return obj


def encode(message: dict[str, Any]) -> bytes:
    """One frame for ``message``; WireError names a value that JSON (and the tags) cannot carry."""
    try:
        body = json.dumps(message, default=_default, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise WireError(str(exc)) from None
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is larger than {MAX_FRAME} bytes")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body, object_hook=_hook)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"not a message: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("not a message: not a JSON object")
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes is larger than {MAX_FRAME} bytes")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
    return decode(body)


def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(encode(message))
