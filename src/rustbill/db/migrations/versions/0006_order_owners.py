"""orders know the process that is opening them; processes heartbeat (the reconciler's inputs)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=200), nullable=False),
        sa.Column("pid_start", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("owner", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_instances_unsettled",
        "instances",
        ["status"],
        sqlite_where=sa.text("provider_instance_id IS NULL"),
        postgresql_where=sa.text("provider_instance_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_instances_unsettled", table_name="instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("owner")
    op.drop_table("processes")
