"""The egress proxy (issue 18): the HTTP API destinations agents reach through Tether.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "egress_destinations",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("base", sa.Text(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("credentials", sa.JSON(), nullable=False),
        sa.Column("oauth", sa.JSON(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(320), nullable=True),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_egress_destinations"),
    )
    op.create_index("ix_egress_destinations_host", "egress_destinations", ["host", "port"])


def downgrade() -> None:
    op.drop_index("ix_egress_destinations_host", table_name="egress_destinations")
    op.drop_table("egress_destinations")
