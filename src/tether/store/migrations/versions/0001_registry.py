"""The registry: agents, the event record and admin tokens.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(254), nullable=True),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("parent", sa.String(63), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_changed_at", UtcDateTime(), nullable=False),
        sa.Column("unowned_since", UtcDateTime(), nullable=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("key_rotated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_agents"),
        sa.ForeignKeyConstraint(["parent"], ["agents.name"], name="fk_agents_parent_agents"),
        sa.UniqueConstraint("public_key", name="uq_agents_public_key"),
    )
    op.create_index("ix_agents_owner", "agents", ["owner"])
    op.create_index("ix_agents_state", "agents", ["state"])
    op.create_index("ix_agents_parent", "agents", ["parent"])
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("subject", sa.String(300), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
    )
    op.create_index("ix_events_subject", "events", ["subject"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_admin_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("admin_tokens")
    op.drop_index("ix_events_type", "events")
    op.drop_index("ix_events_subject", "events")
    op.drop_table("events")
    op.drop_index("ix_agents_parent", "agents")
    op.drop_index("ix_agents_state", "agents")
    op.drop_index("ix_agents_owner", "agents")
    op.drop_table("agents")
