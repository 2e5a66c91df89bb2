"""Engine, sessions and migrations.

``Database.read()`` and ``Database.write()`` open a session in a transaction. On SQLite a write
transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout
instead of failing when a read lock cannot be upgraded; on PostgreSQL both are plain transactions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, CursorResult, Result, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ..config import Settings, async_db_url

__all__ = ["Database", "redact_url", "rowcount"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Key of the PostgreSQL advisory lock that serialises migrations across processes.
_MIGRATION_LOCK = 0x52424D47  # "RBMG"


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched. Its result is a CursorResult, which has the
    count, but ``AsyncSession.execute`` is typed to return a plain Result."""
    return cast("CursorResult[Any]", result).rowcount


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database url>"


class Database:
    """The database of one process: an async engine and session factories."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.async_url = async_db_url(url)
        self.is_sqlite = self.async_url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = make_url(self.async_url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.async_url, **kwargs)
        if self.is_sqlite:
            _sqlite_events(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(rustbill_write=True)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.database_url, echo=settings.db.echo, pool_size=settings.db.pool_size)

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends normally and rolls back otherwise."""
        async with self._write_sessions() as session, session.begin():
            yield session

    async def add(self, row: object) -> None:
        """Insert ``row`` in a transaction of its own (IntegrityError when a constraint refuses it)."""
        async with self.write() as s:
            s.add(row)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to run from several processes)."""
        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
                await conn.commit()
            try:
                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                if not self.is_sqlite:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                    await conn.commit()

    async def one_at_a_time(self, key: int, work: Callable[[], Awaitable[object]]) -> bool:
        """Run ``work`` unless another process is running the work of ``key`` now; then skip it
        (False). The background rounds of a PostgreSQL scale-out (health checks, the reconciler,
        drift) take turns through a session-level advisory lock, held on one connection for the
        whole round and released even when the round fails. SQLite means one process: it just runs."""
        if self.is_sqlite:
            await work()
            return True
        async with self.engine.connect() as conn:
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
            await conn.commit()
            if not got:
                return False
            try:
                await work()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await conn.commit()
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _sqlite_events(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (see the "begin" hook below).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("rustbill_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
