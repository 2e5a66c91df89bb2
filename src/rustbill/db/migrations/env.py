"""Alembic environment. The server and ``rustbill migrate`` pass a live connection in
``config.attributes["connection"]``; the ``alembic`` command line (for developers writing a
migration) builds one from ``RUSTBILL_DB__URL`` or the default SQLite file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from rustbill.db.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from rustbill.config import load_settings

    url = load_settings().database_url
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
