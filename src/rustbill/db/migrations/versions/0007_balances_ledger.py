"""customer balances and their append-only ledger; instances indexed by customer; drift findings

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_MONEY = sa.Numeric(precision=20, scale=8).with_variant(sa.String(length=40), "sqlite")

# The ledger is append-only: the database itself refuses to change or remove an entry.
_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER balance_transactions_no_{what.lower()} BEFORE {what} ON balance_transactions
    BEGIN SELECT RAISE(ABORT, 'balance_transactions is append-only'); END"""
    for what in ("UPDATE", "DELETE")
]
_PG_TRIGGER = [
    """CREATE FUNCTION balance_transactions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'balance_transactions is append-only'; END $$""",
    """CREATE TRIGGER balance_transactions_append_only BEFORE UPDATE OR DELETE ON balance_transactions
    FOR EACH ROW EXECUTE FUNCTION balance_transactions_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "balances",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("balance", _MONEY, nullable=False),
        sa.Column("credit_limit", _MONEY, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["users.id"], name=op.f("fk_balances_customer_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_balances")),
    )
    op.create_table(
        "balance_transactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("balance_after", _MONEY, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("instance_id", sa.Uuid(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["users.id"], name=op.f("fk_balance_transactions_customer_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_transactions")),
        sa.UniqueConstraint("instance_id", "kind", name=op.f("uq_balance_transactions_instance_id_kind")),
    )
    op.create_index("ix_balance_transactions_customer_id_id", "balance_transactions", ["customer_id", "id"])
    op.create_index(op.f("ix_instances_customer_id"), "instances", ["customer_id"])
    op.create_table(
        "drift_findings",
        sa.Column("interface_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["plugin_interfaces.id"],
            name=op.f("fk_drift_findings_interface_id_plugin_interfaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("interface_id", "key", name=op.f("pk_drift_findings")),
    )
    for sql in _SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else _PG_TRIGGER:
        op.execute(sql)


def downgrade() -> None:
    op.drop_table("drift_findings")
    op.drop_index(op.f("ix_instances_customer_id"), table_name="instances")
    op.drop_index("ix_balance_transactions_customer_id_id", table_name="balance_transactions")
    op.drop_table("balance_transactions")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION balance_transactions_append_only()")
    op.drop_table("balances")
