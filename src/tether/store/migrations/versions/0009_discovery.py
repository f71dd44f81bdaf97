"""Discovery: findings, reconciled with the registry.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discovery_findings",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("scanner", sa.String(32), nullable=False),
        sa.Column("location", sa.String(2048), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("agent", sa.String(63), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_discovery_findings"),
    )
    op.create_index("ix_discovery_findings_status", "discovery_findings", ["status"])


def downgrade() -> None:
    op.drop_index("ix_discovery_findings_status", table_name="discovery_findings")
    op.drop_table("discovery_findings")
