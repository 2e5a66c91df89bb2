"""The messages between the server and its plugin worker processes.

A message is a JSON object in a frame: a 4-byte big-endian length, then that many bytes of UTF-8.
JSON keeps the two sides independent of each other's Python objects (a plugin cannot make the
server run code by what it returns, as pickle would allow); two tagged forms keep what JSON would
lose: ``{"\\u0000d": "12.30"}`` is a ``Decimal`` (money stays exact) and ``{"\\u0000b": "<base64>"}``
is ``bytes`` (bytes and str stay apart). Tuples and sets become lists and non-string keys strings,
as with the standard library's ``json``; NaN and the infinities become ``null``.

Frames are written and read with orjson (a round trip costs a few microseconds instead of tens).
What orjson has no form for — an integer beyond 64 bits, a nesting deeper than 254 — is written by
the standard library's ``json`` instead, exactly, in a frame that starts with ``J``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import orjson

__all__ = ["MAX_FRAME", "Framed", "WireError", "decode", "encode"]

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
_DEC = "\x00d"
_BYTES = "\x00b"
_TAGGED = b"\\u0000"  # how a tag key looks in a frame (orjson and json escape NUL so)
_STDLIB = b"J"  # the first byte of a frame written by the standard library's json
# Dataclasses, datetimes and subclasses of str, int, dict, list are given to ``_default`` as
# ``json`` would see them: refused, or written by ``json`` itself.
_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class WireError(Exception):
    """A value that cannot cross the process boundary, or a frame that is not a message."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {_DEC: str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        return list(value)  # (as docs/plugins.md promises: sets become lists)
    what = type(value).__name__
    raise TypeError(f"a value of type {what} is not JSON-serialisable (it cannot leave the plugin process)")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _DEC in obj:
            return Decimal(obj[_DEC])
        if _BYTES in obj:
            return base64.b64decode(obj[_BYTES])
    return obj


def _untag(value: Any) -> Any:
    """``_hook`` applied bottom-up to what orjson read (it has no object hook)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                value[k] = _untag(v)
        return _hook(value)
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)):
                value[i] = _untag(v)
    return value


def encode(message: dict[str, Any]) -> bytes:
    """One frame for ``message``; WireError names a value that JSON (and the tags) cannot carry."""
    try:
        body = orjson.dumps(message, default=_default, option=_OPTIONS)
    except TypeError:  # (orjson.JSONEncodeError too) something orjson has no form for: json's turn
        try:
            body = _STDLIB + json.dumps(message, default=_default, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise WireError(str(exc)) from None
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is larger than {MAX_FRAME} bytes")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        if body[:1] == _STDLIB:
            message = json.loads(body[1:], object_hook=_hook)
        else:
            message = orjson.loads(body)
            if _TAGGED in body:
                message = _untag(message)
    except (ValueError, RecursionError) as exc:  # (orjson.JSONDecodeError is a ValueError)
        raise WireError(f"not a message: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("not a message: not a JSON object")
    return message


class Framed(asyncio.Protocol):
    """Messages over a stream socket, for an event loop: each complete frame is decoded and handed
    to ``on_message`` right in the loop's read callback (no task and no await per message), and
    ``on_close`` gets why the stream ended: None (closed by the other side or by us), the
    connection's error, or the ``WireError`` / exception of ``on_message`` that made this side
    drop it."""

    def __init__(
        self, on_message: Callable[[dict[str, Any]], None], on_close: Callable[[BaseException | None], None]
    ) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._buf = bytearray()
        self._need = _HEADER.size  # bytes the buffer must hold before a frame can be complete
        self._error: BaseException | None = None
        self._out: list[bytes] = []  # frames to write at the end of this turn of the loop
        self._batching = False  # a frame was written in this turn: the next ones wait for its end
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return  # (a large frame arriving in pieces: copied once, when complete)
            data = bytes(self._buf)
            self._buf.clear()
        pos, n = 0, len(data)
        need = _HEADER.size
        try:
            while n - pos >= _HEADER.size:
                (size,) = _HEADER.unpack_from(data, pos)
                if size > MAX_FRAME:
                    raise WireError(f"frame of {size} bytes is larger than {MAX_FRAME} bytes")
                end = pos + _HEADER.size + size
                if end > n:
                    need = end - pos
                    break
                message = decode(data[pos + _HEADER.size : end])
                pos = end
                self._on_message(message)
        except Exception as exc:  # (a frame that is not a message, or one its handler cannot take)
            self._error = exc
            if self.transport is not None:
                self.transport.abort()
            return
        if pos < n:
            self._buf += data[pos:]
        self._need = need

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_close(self._error or exc)

    def send(self, message: dict[str, Any]) -> None:
        """Write one message (WireError: it cannot be encoded; nothing is written then). The first
        message of a turn of the event loop leaves at once; the ones after it in that turn leave
        together, in one write, at its end."""
        frame = encode(message)
        if self._batching:
            self._out.append(frame)
            return
        self._batching = True
        asyncio.get_running_loop().call_soon(self._flush)
        self._write(frame)

    def _flush(self) -> None:
        frames, self._out = self._out, []
        self._batching = False
        if frames:
            self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pending_bytes(self) -> int:
        queued = sum(len(f) for f in self._out)
        return queued + (0 if self.transport is None else self.transport.get_write_buffer_size())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
