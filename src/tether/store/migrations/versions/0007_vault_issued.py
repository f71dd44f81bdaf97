"""The vault broker: which agent received which secret or dynamic token.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_issued",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(300), nullable=False),
        sa.Column("ref", sa.String(600), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("field", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("accessor", sa.String(255), nullable=True),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("rotated_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_vault_issued"),
    )
    op.create_index("ix_vault_issued_agent", "vault_issued", ["agent_id"])


def downgrade() -> None:
    op.drop_index("ix_vault_issued_agent", table_name="vault_issued")
    op.drop_table("vault_issued")
