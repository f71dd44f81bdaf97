"""What the token service writes, in commits shared by the callers of the moment: an
issued token's record (its issued-token row and its ``token.issued`` or
``token.exchanged`` event, in one transaction, before the token is returned) and an ID
used once (a client assertion's or a subject token's ``jti``, before it is accepted).

Writes go through the audit log's :class:`~tether.audit.log.GroupCommit`: the first caller
writes everything queued in one transaction while the others wait for its commit; each
returns only once its own write has committed, and all of them fail if that transaction
fails. On one thread this is one transaction per write; under concurrency the cost of a
commit (an ``fsync`` on SQLite) is shared by the batch. An ID already used is not an
error of the batch: that caller alone learns it was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.dialects import postgresql, sqlite

from tether.audit.log import GroupCommit
from tether.audit.record import Entry
from tether.services import Services
from tether.store import assertion_jtis, issued_tokens

__all__ = ["Record", "Records", "UsedId"]

_INSERT = insert(issued_tokens)  # built once: compiled once, executed with many rows
_USE = {  # an ID already there inserts (and returns) nothing: it was used before
    name: make(assertion_jtis).on_conflict_do_nothing().returning(assertion_jtis.c.jti)
    for name, make in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


@dataclass(frozen=True, slots=True)
class Record:
    """One issued token as the store keeps it: its ``issued_tokens`` row and its events
    (the decision that allowed it, for an exchange, then the token's own)."""

    row: dict[str, Any]
    entries: tuple[Entry, ...]

    def after(self, *entries: Entry) -> Record:
        """This record with ``entries`` written before its own events."""
        return Record(self.row, (*entries, *self.entries))


@dataclass(frozen=True, slots=True)
class UsedId:
    """An ID used once (already hashed with its client), kept until ``expires``."""

    key: str
    client: str
    expires: datetime


class Records:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._log = services.events
        self._commits: GroupCommit[Record | UsedId] = GroupCommit(self._write)

    def write(self, record: Record) -> None:
        """Return once ``record`` is committed; raise if its transaction failed."""
        self._commits.submit([record])

    def use(self, used: UsedId) -> bool:
        """Record the use of an ID; True if committed now, False if it was used before."""
        [fresh] = self._commits.submit([used])
        return bool(fresh)

    def _write(self, batch: list[Record | UsedId]) -> list[int]:
        """One transaction for what the callers of the moment hand in: for each item, 1
        when it was written (a used ID: for the first time), 0 for an ID used before."""
        written = [1] * len(batch)
        with self._store.write() as conn:
            uses = [(i, item) for i, item in enumerate(batch) if isinstance(item, UsedId)]
            fresh = self.insert_uses(conn, [used for _, used in uses])
            for (i, _), first in zip(uses, fresh, strict=True):
                written[i] = int(first)
            records = [item for item in batch if isinstance(item, Record)]
            if records:
                self.insert(conn, records)
        return written

    def insert(self, conn: Connection, records: Sequence[Record]) -> None:
        """Write ``records`` in the write transaction of ``conn``: the rows now, their
        events as the transaction's last step (see :meth:`tether.audit.log.AuditLog.append`)."""
        self.insert_rows(conn, records)
        self._log.append(conn, *(e for r in records for e in r.entries))

    @staticmethod
    def insert_rows(conn: Connection, records: Sequence[Record]) -> None:
        """The ``issued_tokens`` rows of ``records``."""
        conn.execute(_INSERT, [r.row for r in records])

    @staticmethod
    def insert_uses(conn: Connection, uses: Sequence[UsedId]) -> list[bool]:
        """Insert each used ID unless it is there already; whether each one was new."""
        statement = _USE[conn.dialect.name]
        values = ({"jti": u.key, "client_id": u.client, "expires_at": u.expires} for u in uses)
        return [conn.execute(statement, row).first() is not None for row in values]
