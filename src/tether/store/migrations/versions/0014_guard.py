"""Guarding the data at the gateway (issue 17): grants' budgets and approval, labels on
upstream items, the labels the work has touched, budget usage, and approvals.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("limits", sa.Text(), nullable=True))
        batch.add_column(sa.Column("approval", sa.String(16), nullable=True))
    op.create_table(
        "gateway_labels",
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("item", sa.String(512), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("added_by", sa.String(300), nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("server", "kind", "item", "label", name="pk_gateway_labels"),
    )
    op.create_table(
        "flow_labels",
        sa.Column("scope", sa.String(700), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("resource", sa.String(600), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "label", name="pk_flow_labels"),
    )
    op.create_index("ix_flow_labels_at", "flow_labels", ["at"])
    op.create_table(
        "budget_usage",
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("window_start", UtcDateTime(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", "metric", "window_start", name="pk_budget_usage"),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("agent", sa.String(300), nullable=False),
        sa.Column("owner", sa.String(320), nullable=True),
        sa.Column("approver", sa.String(16), nullable=False),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(600), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("redacted", sa.Text(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("request_seq", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", sa.String(320), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
    )
    op.create_index("ix_approvals_digest", "approvals", ["digest"])
    op.create_index("ix_approvals_state", "approvals", ["state"])


def downgrade() -> None:
    op.drop_index("ix_approvals_state", table_name="approvals")
    op.drop_index("ix_approvals_digest", table_name="approvals")
    op.drop_table("approvals")
    op.drop_table("budget_usage")
    op.drop_index("ix_flow_labels_at", table_name="flow_labels")
    op.drop_table("flow_labels")
    op.drop_table("gateway_labels")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("approval")
        batch.drop_column("limits")
