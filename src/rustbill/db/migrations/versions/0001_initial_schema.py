"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 15:36:35.623891
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "plugins",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plugin_type", sa.String(length=32), nullable=False),
        sa.Column("plugin_id", sa.String(length=128), nullable=False),
        sa.Column("has_admin_page", sa.Boolean(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("file_present", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugins")),
        sa.UniqueConstraint("plugin_id", name=op.f("uq_plugins_plugin_id")),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("tokens_valid_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("key_prefix", name=op.f("uq_api_keys_key_prefix")),
    )
    op.create_table(
        "plugin_interfaces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plugin_def_id", sa.Uuid(), nullable=False),
        sa.Column("plugin_type", sa.String(length=32), nullable=False),
        sa.Column("plugin_id", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("config_schema", sa.Text(), nullable=False),
        sa.Column("is_healthy", sa.Boolean(), nullable=False),
        sa.Column("health_error", sa.Text(), nullable=True),
        sa.Column("last_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("has_admin_page", sa.Boolean(), nullable=False),
        sa.Column("plugin_version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plugin_def_id"],
            ["plugins.id"],
            name=op.f("fk_plugin_interfaces_plugin_def_id_plugins"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_interfaces")),
        sa.UniqueConstraint(
            "plugin_def_id", "display_name", name=op.f("uq_plugin_interfaces_plugin_def_id_display_name")
        ),
    )
    with op.batch_alter_table("plugin_interfaces", schema=None) as batch_op:
        batch_op.create_index("ix_plugin_interfaces_type_enabled", ["plugin_type", "enabled"], unique=False)

    op.create_table(
        "instances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interface_id", sa.Uuid(), nullable=False),
        sa.Column("provider_instance_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("server_spec", sa.JSON(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["plugin_interfaces.id"],
            name=op.f("fk_instances_interface_id_plugin_interfaces"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("interface_id", "idempotency_key", name=op.f("uq_instances_interface_id_idempotency_key")),
        sa.UniqueConstraint(
            "interface_id",
            "provider_instance_id",
            name=op.f("uq_instances_interface_id_provider_instance_id"),
        ),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interface_id", sa.Uuid(), nullable=False),
        sa.Column("upstream_product_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "price", sa.Numeric(precision=20, scale=8).with_variant(sa.String(length=40), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("group_id", sa.String(length=200), nullable=False),
        sa.Column("specs", sa.JSON(), nullable=False),
        sa.Column("billing_cycles", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["plugin_interfaces.id"],
            name=op.f("fk_products_interface_id_plugin_interfaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint(
            "interface_id", "upstream_product_id", name=op.f("uq_products_interface_id_upstream_product_id")
        ),
    )


def downgrade() -> None:

    op.drop_table("products")
    op.drop_table("instances")
    with op.batch_alter_table("plugin_interfaces", schema=None) as batch_op:
        batch_op.drop_index("ix_plugin_interfaces_type_enabled")

    op.drop_table("plugin_interfaces")
    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_table("settings")
    op.drop_table("plugins")
