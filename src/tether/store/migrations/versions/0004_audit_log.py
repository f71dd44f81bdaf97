"""The audit log: events become the leaves of an RFC 9162 Merkle tree, with stored
subtrees, a locked head, signed checkpoints, audit keys and SIEM sink cursors.

Events recorded before this revision are carried over in order, as leaves 1..n, encoded
as this revision wrote them (:mod:`tether.store.migrations.audit_0004`, a frozen copy).

Revision ID: 0004
Revises: 0003
"""

import json
from datetime import UTC

import sqlalchemy as sa
from alembic import op

from tether.store.migrations.audit_0004 import Frontier, stage
from tether.store.types import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    old = sa.table(
        "events",
        sa.column("seq", sa.BigInteger()),
        sa.column("at", UtcDateTime()),
        sa.column("type", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("reason", sa.Text()),
        sa.column("detail", sa.JSON()),
    )
    carried = list(conn.execute(sa.select(old).order_by(old.c.seq)))
    op.drop_index("ix_events_type", "events")
    op.drop_index("ix_events_subject", "events")
    op.drop_table("events")
    events = op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
    )
    op.create_index("ix_events_subject", "events", ["subject"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_at", "events", ["at"])
    nodes = op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_audit_nodes"),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("verifier_key", sa.String(300), nullable=False),
        sa.Column("signed_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_audit_checkpoints"),
    )
    op.create_table(
        "audit_keys",
        sa.Column("verifier_key", sa.String(300), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("verifier_key", name="pk_audit_keys"),
    )
    op.create_table(
        "sink_cursors",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_sink_cursors"),
    )
    frontier = Frontier()
    event_rows, node_rows = stage(
        (
            (row.type, row.actor, row.subject, row.reason, row.detail or {}, row.at.astimezone(UTC))
            for row in carried
        ),
        frontier,
    )
    if event_rows:
        op.bulk_insert(events, event_rows)
    if node_rows:
        op.bulk_insert(nodes, node_rows)
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "size": frontier.size,
                "frontier": json.dumps([h.hex() for h in frontier.hashes]),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("sink_cursors")
    op.drop_table("audit_keys")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_table("audit_nodes")
    op.drop_index("ix_events_at", "events")
    op.drop_index("ix_events_type", "events")
    op.drop_index("ix_events_subject", "events")
    op.drop_table("events")
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
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
