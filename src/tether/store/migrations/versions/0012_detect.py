"""The behaviour detector: alerts, baselines, its cursor, risk scores and its actions.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("agent", sa.String(300), nullable=False),
        sa.Column("owner", sa.String(254), nullable=True),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_by", sa.String(300), nullable=True),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("state_at", UtcDateTime(), nullable=True),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_agent", "alerts", ["agent"])
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_index("ix_alerts_owner", "alerts", ["owner"])
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_table(
        "detect_baselines",
        sa.Column("agent", sa.String(300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agent", name="pk_detect_baselines"),
    )
    op.create_table(
        "detect_cursor",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_detect_cursor"),
    )
    op.create_table(
        "detect_risk",
        sa.Column("agent", sa.String(300), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agent", name="pk_detect_risk"),
    )
    op.create_index("ix_detect_risk_rev", "detect_risk", ["rev"])
    op.create_table(
        "detect_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(24), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_detect_actions"),
    )
    op.create_index("ix_detect_actions_at", "detect_actions", ["at"])


def downgrade() -> None:
    op.drop_index("ix_detect_actions_at", table_name="detect_actions")
    op.drop_table("detect_actions")
    op.drop_index("ix_detect_risk_rev", table_name="detect_risk")
    op.drop_table("detect_risk")
    op.drop_table("detect_cursor")
    op.drop_table("detect_baselines")
    for index in ("created_at", "owner", "state", "agent"):
        op.drop_index(f"ix_alerts_{index}", table_name="alerts")
    op.drop_table("alerts")
