"""The event record: every lifecycle change and every refusal, with who, what, when and why."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from tether.model import Event
from tether.store import Store, events

__all__ = ["EventLog"]


class EventLog:
    """Appends events and reads them back in sequence order."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def append(
        self,
        conn: Connection,
        type: str,
        *,
        actor: str,
        subject: str | None,
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append inside the caller's transaction, so the event commits with its effect."""
        conn.execute(
            insert(events).values(
                at=self._clock(),
                type=type,
                actor=actor,
                subject=subject,
                reason=reason,
                detail=detail or {},
            )
        )

    def append_many(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Append several events (``type``, ``actor``, ``subject``, ``reason``, ``detail``)."""
        if rows:
            at = self._clock()
            conn.execute(insert(events), [{"at": at, **row} for row in rows])

    def record(
        self,
        type: str,
        *,
        actor: str,
        subject: str | None,
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append in a transaction of its own (for refusals, whose operation rolls back)."""
        with self._store.write() as conn:
            self.append(conn, type, actor=actor, subject=subject, reason=reason, detail=detail)

    def list(
        self,
        *,
        subject: str | None = None,
        type: str | None = None,
        after: int = 0,
        since: datetime | None = None,
    ) -> list[Event]:
        query = select(events).where(events.c.seq > after).order_by(events.c.seq)
        if since is not None:
            query = query.where(events.c.at >= since)
        if subject is not None:
            query = query.where(events.c.subject == subject)
        if type is not None:
            query = query.where(events.c.type == type)
        with self._store.read() as conn:
            return [_event(row) for row in conn.execute(query)]


def _event(row: Row[Any]) -> Event:
    return Event(
        seq=row.seq,
        at=row.at,
        type=row.type,
        actor=row.actor,
        subject=row.subject,
        reason=row.reason,
        detail=dict(row.detail),
    )
