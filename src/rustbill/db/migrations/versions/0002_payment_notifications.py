"""payment notifications

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 15:50:35.201752
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "payment_notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interface_id", sa.Uuid(), nullable=False),
        sa.Column("trade_no", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column(
            "amount", sa.Numeric(precision=20, scale=8).with_variant(sa.String(length=40), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["plugin_interfaces.id"],
            name=op.f("fk_payment_notifications_interface_id_plugin_interfaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_notifications")),
        sa.UniqueConstraint("interface_id", "trade_no", name=op.f("uq_payment_notifications_interface_id_trade_no")),
    )


def downgrade() -> None:

    op.drop_table("payment_notifications")
