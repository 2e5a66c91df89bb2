"""The background round's two pieces, in process: ``domain.background.every`` (a failed round is
logged and the loop goes on) and ``Database.one_at_a_time`` (on PostgreSQL one holder of the
advisory lock at a time; SQLite just runs). PostgreSQL when RUSTBILL_TEST_DATABASE_URL names one."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from rustbill.db import Database
from rustbill.domain.background import every

PG_URL = os.environ.get("RUSTBILL_TEST_DATABASE_URL", "")


async def test_a_failed_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("boom")
        if len(rounds) == 3:
            third.set()

    task = asyncio.create_task(every(0.01, work, "test round"))
    await asyncio.wait_for(third.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failed] == ["test round failed"] and failed[0].exc_info


async def test_the_first_round_can_wait_one_interval() -> None:
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    task = asyncio.create_task(every(0.3, work, "late round", first_now=False))
    await asyncio.sleep(0.1)
    assert not ran.is_set()
    await asyncio.wait_for(ran.wait(), 2)
    task.cancel()


async def test_one_at_a_time(tmp_path: Path) -> None:
    url = PG_URL or f"sqlite:///{tmp_path / 'db.sqlite3'}"
    first, second = Database(url), Database(url)  # two processes' engines
    try:
        inside, release = asyncio.Event(), asyncio.Event()

        async def long_round() -> None:
            inside.set()
            await release.wait()

        holder = asyncio.create_task(first.one_at_a_time(0x52425445, long_round))
        await inside.wait()
        ran: list[str] = []

        async def other() -> None:
            ran.append("other")

        took_turn = await second.one_at_a_time(0x52425445, other)
        if first.is_sqlite:
            assert took_turn and ran == ["other"]  # one process: no lock to wait for
        else:
            assert not took_turn and ran == []  # the holder's round is still running
        release.set()
        assert await holder
        assert await second.one_at_a_time(0x52425445, other)  # released, also after a failing round:
        with pytest.raises(RuntimeError):
            await first.one_at_a_time(0x52425445, _fail)
        assert await second.one_at_a_time(0x52425445, other)
    finally:
        await first.dispose()
        await second.dispose()


async def _fail() -> None:
    raise RuntimeError("round failed")
