"""The gateway: pins cover whole definitions, and items new after an upstream's first
listing are held.

``gateway_pins.hash_version``: 1 for a pin made before (the hash of some fields, each
string cut at 2,048 characters; re-pinned whole on its next sight when that pin covered
the definition entirely, else held until approved), 2 for the SHA-256 of the RFC 8785 form
of the whole definition. A pending change recorded before is dropped (it was partial): it
is recorded again, whole, on its next sight. ``gateway_servers.listed``: the kinds (tool,
resource, prompt) whose first listing has been pinned; what appears later is held.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_pins") as batch:
        batch.add_column(
            sa.Column("hash_version", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("gateway_servers") as batch:
        batch.add_column(sa.Column("listed", sa.String(64), nullable=False, server_default=""))
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE gateway_pins SET pending_hash = NULL, pending = NULL"))
    listed: dict[str, set[str]] = {}
    for server, kind in conn.execute(sa.text("SELECT DISTINCT server, kind FROM gateway_pins")):
        listed.setdefault(server, set()).add(kind)
    for server, kinds in listed.items():
        conn.execute(
            sa.text("UPDATE gateway_servers SET listed = :listed WHERE name = :name"),
            {"listed": ",".join(sorted(kinds)), "name": server},
        )


def downgrade() -> None:
    with op.batch_alter_table("gateway_servers") as batch:
        batch.drop_column("listed")
    with op.batch_alter_table("gateway_pins") as batch:
        batch.drop_column("hash_version")
