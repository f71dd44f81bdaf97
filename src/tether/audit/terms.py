"""The ``event_terms`` index: the events that name a principal, or served a request.

On PostgreSQL a trigger on ``events`` writes it in the appending transaction (migration
0013), so a search through it finds exactly the events a read of the whole log would:
every event under each principal of its chain, its actor and its subject (kind ``p``)
and under its request id (kind ``r``). A term longer than :data:`MAX_TERM` is not
indexed, and SQLite keeps no index (its appends stay lean): the caller reads the log for
those instead (:meth:`EventTerms.indexed`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select

from tether.store import Store, event_terms, events

__all__ = ["MAX_TERM", "EventTerms", "Kind"]

MAX_TERM = 512
Kind = Literal["p", "r"]  # a principal the event names, or the request it served


class EventTerms:
    """Reads of the index on one store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._kept = store.dialect == "postgresql"

    def indexed(self, term: str) -> bool:
        """Whether the index holds ``term``'s events (else read the log for them)."""
        return self._kept and len(term) <= MAX_TERM

    def bodies(
        self,
        kind: Kind,
        term: str,
        *,
        after: int = 0,
        limit: int,
        type: str | None = None,
        since: datetime | None = None,
    ) -> list[tuple[int, datetime, str]]:
        """(seq, time, canonical body) of the events under ``term`` after ``after``, in
        order, at most ``limit`` of them (as :meth:`AuditLog.bodies` gives them)."""
        query = (
            select(events.c.seq, events.c.at, events.c.body)
            .join(event_terms, event_terms.c.seq == events.c.seq)
            .where(
                event_terms.c.kind == kind,
                event_terms.c.term == term,
                event_terms.c.seq > after,
            )
        )
        if type is not None:
            query = query.where(events.c.type == type)
        if since is not None:
            query = query.where(events.c.at >= since)
        query = query.order_by(event_terms.c.seq).limit(limit)
        with self._store.read() as conn:
            return [(row.seq, row.at, row.body) for row in conn.execute(query)]

    def seqs(self, kind: Kind, term: str, *, limit: int) -> list[int]:
        """The first ``limit`` events under ``term``, in order."""
        query = (
            select(event_terms.c.seq)
            .where(event_terms.c.kind == kind, event_terms.c.term == term)
            .order_by(event_terms.c.seq)
            .limit(limit)
        )
        with self._store.read() as conn:
            return [int(seq) for seq in conn.execute(query).scalars()]
