"""Orders: when create_instance was last asked for an order (the reconciler releases an order the
provider has nothing for only once that attempt is old enough: [plugins] release_after_seconds)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True))
    # Unsettled orders of earlier versions: their last change is the best estimate of their last attempt.
    op.execute("UPDATE instances SET attempted_at = updated_at WHERE provider_instance_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("attempted_at")
