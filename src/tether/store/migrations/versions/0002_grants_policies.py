"""Least privilege: grants, guardrail policies and the state epoch.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(300), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(512), nullable=False),
        sa.Column("condition", sa.Text(), nullable=True),
        sa.Column("broad", sa.Boolean(), nullable=False),
        sa.Column("granted_by", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_grants"),
    )
    op.create_index("ix_grants_principal", "grants", ["principal"])
    op.create_table(
        "policies",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("added_by", sa.String(300), nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
    )
    op.create_table(
        "state_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_state_epoch"),
    )
    op.execute("INSERT INTO state_epoch (id, value) VALUES (1, 1)")


def downgrade() -> None:
    op.drop_table("state_epoch")
    op.drop_table("policies")
    op.drop_index("ix_grants_principal", "grants")
    op.drop_table("grants")
