"""Which server processes are alive: each one has a row in ``processes`` that it refreshes every
few seconds (``heartbeat_at``) and deletes when it stops.

An order (an ``instances`` row without a provider instance id) names in ``owner`` the process whose
``create_instance`` call for it may still be running. The order is *in flight* while that process
is alive, and *orphaned* once it is dead: its row is gone, its heartbeat is older than
``stale_seconds``, or — for a process on the same machine and PID namespace, which can be checked
at once — its pid no longer runs (or runs another program: the pid's start time differs). So
after ``kill -9`` and a restart on the same machine, the dead process's orders are orphaned at once;
from another machine, within ``stale_seconds``.

Clocks: heartbeats are written and compared with each process's own clock; keep the machines of a
scale-out deployment in sync (NTP), well within ``stale_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, select, update

from ..db import Database, Process, rowcount
from ..ids import new_id, utcnow

__all__ = ["ProcessRegistry", "local_node", "pid_start"]

log = logging.getLogger(__name__)


def local_node() -> str:
    """The kernel boot id and PID namespace of this process ("" when /proc cannot tell): two
    processes with the same node see each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{ns}"[:200] if boot and ns else ""


def pid_start(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot, field 22 of /proc/<pid>/stat), or "" when no
    such process runs (or /proc cannot tell)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


class ProcessRegistry:
    """This process's row in ``processes`` (its id is ``id``), and the liveness of the others."""

    def __init__(self, db: Database, *, heartbeat_seconds: float = 5.0, stale_seconds: float = 15.0) -> None:
        self._db = db
        self.id: uuid.UUID = new_id()
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self._node = local_node()
        self._pid = os.getpid()
        self._registered = False

    def _row(self) -> Process:
        now = utcnow()
        return Process(
            id=self.id,
            hostname=socket.gethostname()[:255],
            pid=self._pid,
            node=self._node,
            pid_start=pid_start(self._pid),
            started_at=now,
            heartbeat_at=now,
        )

    async def register(self) -> None:
        """Insert this process's row; forget rows of processes that are dead."""
        await self._db.add(self._row())
        self._registered = True
        reaped = await self.reap()
        if reaped:
            log.info("%d server process(es) found dead; their unsettled orders will be reconciled", len(reaped))

    async def unregister(self) -> None:
        """Delete this process's row (a clean stop): the orders it still owns are orphaned now."""
        if not self._registered:
            return
        self._registered = False
        try:
            async with self._db.write() as s:
                await s.execute(delete(Process).where(Process.id == self.id))
        except Exception as exc:
            log.warning("could not remove this process from the processes table: %s", exc)

    async def beat(self) -> None:
        """Refresh this process's heartbeat (and put its row back if it was taken for dead)."""
        async with self._db.write() as s:
            res = await s.execute(update(Process).where(Process.id == self.id).values(heartbeat_at=utcnow()))
            if rowcount(res) == 0:
                log.warning(
                    "this process (%s) was taken for dead (no heartbeat for %ss); registered again",
                    self.id,
                    self.stale_seconds,
                )
                s.add(self._row())

    async def run(self) -> None:
        """Heartbeat every ``heartbeat_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _dead(self, row: Process) -> bool:
        if row.id == self.id:
            return False
        if utcnow() - row.heartbeat_at > timedelta(seconds=self.stale_seconds):
            return True
        # Same machine and PID namespace: the pid tells at once (a reused pid has another start time).
        return bool(self._node and row.node == self._node and row.pid_start and pid_start(row.pid) != row.pid_start)

    async def alive(self) -> set[uuid.UUID]:
        """The ids of the processes that are alive now (this one included)."""
        async with self._db.read() as s:
            rows = list((await s.execute(select(Process))).scalars())
        return {r.id for r in rows if not self._dead(r)} | {self.id}

    async def is_alive(self, process_id: uuid.UUID) -> bool:
        if process_id == self.id:
            return True
        async with self._db.read() as s:
            row = await s.get(Process, process_id)
        return row is not None and not self._dead(row)

    async def reap(self) -> list[uuid.UUID]:
        """Delete the rows of dead processes; returns their ids."""
        async with self._db.read() as s:
            rows = list((await s.execute(select(Process))).scalars())
        dead = [r for r in rows if self._dead(r)]
        if not dead:
            return []
        gone = []
        async with self._db.write() as s:
            for r in dead:  # unless it heartbeat meanwhile
                res = await s.execute(delete(Process).where(Process.id == r.id, Process.heartbeat_at == r.heartbeat_at))
                if rowcount(res):
                    gone.append(r.id)
        return gone
