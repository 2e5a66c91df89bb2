"""idempotency keys are scoped to the caller: unique per (interface, customer, key)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 23:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_constraint("uq_instances_interface_id_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_instances_interface_id_customer_id_idempotency_key", ["interface_id", "customer_id", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_constraint("uq_instances_interface_id_customer_id_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_instances_interface_id_idempotency_key", ["interface_id", "idempotency_key"])
