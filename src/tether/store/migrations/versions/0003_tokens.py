"""Tokens: signing keys, issued tokens and used client-assertion IDs.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("retired_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_table(
        "issued_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("parent_jti", sa.String(64), nullable=True),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("client_id", sa.String(300), nullable=False),
        sa.Column("audience", sa.String(512), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("jti", name="pk_issued_tokens"),
    )
    op.create_index("ix_issued_tokens_parent_jti", "issued_tokens", ["parent_jti"])
    op.create_table(
        "assertion_jtis",
        sa.Column("jti", sa.String(300), nullable=False),
        sa.Column("client_id", sa.String(300), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_assertion_jtis"),
    )


def downgrade() -> None:
    op.drop_table("assertion_jtis")
    op.drop_index("ix_issued_tokens_parent_jti", "issued_tokens")
    op.drop_table("issued_tokens")
    op.drop_table("signing_keys")
