"""The frames between the server and its plugin workers (rustbill.plugins.wire): values cross
exactly (money as Decimal, bytes as bytes, integers beyond 64 bits), what cannot cross is a
WireError naming it, and a stream cut anywhere — one byte at a time, several frames in one read, a
large frame in pieces — gives the same messages in order; a frame that is not a message, or one
too large, drops the connection and says why."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal
from typing import Any

import pytest

from rustbill.plugins.wire import MAX_FRAME, Framed, WireError, decode, encode


def roundtrip(value: Any) -> Any:
    return decode(encode({"v": value})[4:])["v"]


def test_values_cross_exactly() -> None:
    assert roundtrip(Decimal("12.30")) == Decimal("12.30") and isinstance(roundtrip(Decimal("1")), Decimal)
    assert roundtrip(b"\x00\xff") == b"\x00\xff" and roundtrip("\x00d") == "\x00d"
    assert roundtrip(2**70) == 2**70  # (beyond orjson: written by json, exactly)
    assert roundtrip({"a": [Decimal("0.1"), {"b": b"x"}], 1: (1, 2)}) == {
        "a": [Decimal("0.1"), {"b": b"x"}],
        "1": [1, 2],
    }
    assert roundtrip(float("nan")) is None  # JSON has no NaN
    assert sorted(roundtrip({3, 1, 2})) == [1, 2, 3] and roundtrip(frozenset()) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (object(), "a value of type object is not JSON-serialisable"),
        (datetime.datetime(2026, 1, 1), "a value of type datetime is not JSON-serialisable"),
        ({(1, 2): 3}, "keys must be str"),
    ],
)
def test_what_cannot_cross_is_named(value: Any, says: str) -> None:
    with pytest.raises(WireError, match=says):
        encode({"v": value})


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return 0


def _channel() -> tuple[Framed, list[dict[str, Any]], list[BaseException | None], _Transport]:
    got: list[dict[str, Any]] = []
    closed: list[BaseException | None] = []
    f = Framed(got.append, closed.append)
    t = _Transport()
    f.connection_made(t)
    return f, got, closed, t


def test_frames_come_out_whole_and_in_order_however_the_stream_is_cut() -> None:
    messages = [{"t": "result", "id": i, "value": Decimal(i) / 4} for i in range(5)]
    messages.append({"t": "log", "msg": "x" * 300_000})  # (a large one: many reads)
    stream = b"".join(encode(m) for m in messages)
    for cut in (1, 3, 7, 4096, len(stream)):
        f, got, closed, t = _channel()
        for i in range(0, len(stream), cut):
            f.data_received(stream[i : i + cut])
        assert got == messages and closed == [] and not t.aborted, cut


def test_a_frame_that_is_not_a_message_or_too_large_drops_the_connection() -> None:
    for data, says in (
        (len(b"[1]").to_bytes(4, "big") + b"[1]", "not a JSON object"),
        (len(b"{nope").to_bytes(4, "big") + b"{nope", "not a message"),
        ((MAX_FRAME + 1).to_bytes(4, "big"), "larger than"),
    ):
        f, got, closed, t = _channel()
        f.data_received(encode({"t": "ok"}) + data + encode({"t": "after"}))
        f.connection_lost(None)
        assert got == [{"t": "ok"}] and t.aborted
        assert isinstance(closed[0], WireError) and says in str(closed[0])


async def test_messages_of_one_turn_leave_in_one_write_after_the_first() -> None:
    f, _, _, t = _channel()
    writes: list[int] = []
    t.write = lambda data: writes.append(len(data))  # type: ignore[method-assign]
    for i in range(4):
        f.send({"t": "call", "id": i})
    assert len(writes) == 1  # the first at once
    await asyncio.sleep(0)  # the end of this turn of the loop
    assert len(writes) == 2  # the other three together
    assert sum(writes) == sum(len(encode({"t": "call", "id": i})) for i in range(4))
