"""plugin state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 15:52:11.819762
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "plugin_state",
        sa.Column("interface_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["plugin_interfaces.id"],
            name=op.f("fk_plugin_state_interface_id_plugin_interfaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("interface_id", "key", name=op.f("pk_plugin_state")),
    )


def downgrade() -> None:

    op.drop_table("plugin_state")
