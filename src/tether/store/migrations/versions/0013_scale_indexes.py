"""Indexes for the questions that scanned the audit log: who appears in an event (its
chain, actor and subject) and which request it served (``event_terms``), and when each
grant last allowed a decision (``grant_uses``).

On PostgreSQL both are kept by a trigger on ``events``, in the transaction that appends
the event, so they are exact whatever writes the log (the append path, a migration, a
bulk load): an event is in ``event_terms`` under every principal it names and its
request id, and ``grant_uses`` holds, for every grant an allowed decision named, the
time of the latest one. Events already stored are indexed here, once. On SQLite (one
process, a smaller log) the tables stay empty and those questions read the log: the
trigger would cost its appends about 40 % of their rate.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from tether.store.types import UtcDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

MAX_TERM = 512  # a longer principal or request id is not indexed (its searches read the log)

_PG_FUNCTION = """
CREATE FUNCTION tether_index_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    b jsonb := NEW.body::jsonb;
BEGIN
    INSERT INTO event_terms (kind, term, seq)
    SELECT DISTINCT t.kind, t.term, NEW.seq FROM (
        SELECT 'p' AS kind, c AS term FROM jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(b -> 'chain') = 'array' THEN b -> 'chain'
            ELSE '[]'::jsonb END) AS c
        UNION ALL SELECT 'p', b ->> 'actor'
        UNION ALL SELECT 'p', NEW.subject
        UNION ALL SELECT 'r', b ->> 'request_id'
    ) AS t
    WHERE t.term IS NOT NULL AND length(t.term) <= 512
    ON CONFLICT DO NOTHING;
    IF NEW.type = 'decision' AND b ->> 'decision' = 'allow'
            AND jsonb_typeof(b -> 'detail' -> 'grants') = 'array' THEN
        INSERT INTO grant_uses (grant_id, last_used)
        SELECT DISTINCT g, NEW.at
        FROM jsonb_array_elements_text(b -> 'detail' -> 'grants') AS g
        WHERE length(g) <= 32
        ON CONFLICT (grant_id) DO UPDATE
            SET last_used = GREATEST(grant_uses.last_used, EXCLUDED.last_used);
    END IF;
    RETURN NULL;
END
$$
"""

_PG_TRIGGER = (
    "CREATE TRIGGER tether_index_event AFTER INSERT ON events "
    "FOR EACH ROW EXECUTE FUNCTION tether_index_event()"
)

_PG_BACKFILL = (  # each body parsed once; an event's terms made distinct on their own
    """
INSERT INTO event_terms (kind, term, seq)
SELECT t.kind, t.term, e.seq
FROM events e
CROSS JOIN LATERAL (SELECT e.body::jsonb AS b) AS j
CROSS JOIN LATERAL (
    SELECT DISTINCT u.kind, u.term FROM (
        SELECT 'p' AS kind, c AS term FROM jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(j.b -> 'chain') = 'array' THEN j.b -> 'chain'
            ELSE '[]'::jsonb END) AS c
        UNION ALL SELECT 'p', j.b ->> 'actor'
        UNION ALL SELECT 'p', e.subject
        UNION ALL SELECT 'r', j.b ->> 'request_id'
    ) AS u
    WHERE u.term IS NOT NULL AND length(u.term) <= 512
) AS t
""",
    """
INSERT INTO grant_uses (grant_id, last_used)
SELECT g, max(e.at)
FROM events e
CROSS JOIN LATERAL (SELECT e.body::jsonb AS b) AS j
CROSS JOIN LATERAL jsonb_array_elements_text(
    CASE WHEN jsonb_typeof(j.b -> 'detail' -> 'grants') = 'array'
    THEN j.b -> 'detail' -> 'grants' ELSE '[]'::jsonb END) AS g
WHERE e.type = 'decision' AND j.b ->> 'decision' = 'allow' AND length(g) <= 32
GROUP BY g
""",
)


def upgrade() -> None:
    op.create_table(
        "event_terms",
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column("term", sa.String(MAX_TERM), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("kind", "term", "seq", name="pk_event_terms"),
    )
    op.create_table(
        "grant_uses",
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("last_used", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name="pk_grant_uses"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_BACKFILL:
            op.execute(statement)
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tether_index_event ON events")
        op.execute("DROP FUNCTION tether_index_event()")
    op.drop_table("grant_uses")
    op.drop_table("event_terms")
