"""The MCP gateway: upstream servers and pinned definitions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_servers",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("credentials", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_gateway_servers"),
    )
    op.create_table(
        "gateway_pins",
        sa.Column("server", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pinned_hash", sa.String(64), nullable=False),
        sa.Column("pinned", sa.JSON(), nullable=False),
        sa.Column("pending_hash", sa.String(64), nullable=True),
        sa.Column("pending", sa.JSON(), nullable=True),
        sa.Column("pinned_at", UtcDateTime(), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=True),
        sa.Column("approved_by", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("server", "kind", "name", name="pk_gateway_pins"),
    )


def downgrade() -> None:
    op.drop_table("gateway_pins")
    op.drop_table("gateway_servers")
