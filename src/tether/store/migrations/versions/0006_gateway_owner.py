"""The gateway: an upstream server may name an accountable owner, who (besides admins)
approves changed definitions of its tools.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_servers") as batch:
        batch.add_column(sa.Column("owner", sa.String(320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_servers") as batch:
        batch.drop_column("owner")
