"""Epoch acknowledgements: which processes have seen which state epoch, so that a kill
returns only once every live process refuses the killed agent.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "epoch_acks",
        sa.Column("process", sa.String(200), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("process", name="pk_epoch_acks"),
    )


def downgrade() -> None:
    op.drop_table("epoch_acks")
