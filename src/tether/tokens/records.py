"""What the token service writes, in commits shared by the callers of the moment: an
issued token's record (its issued-token row and its ``token.issued`` or
``token.exchanged`` event, in one transaction, before the token is returned) and an ID
used once (a client assertion's or a subject token's ``jti``, before it is accepted).

The first caller writes everything queued when it starts, in one transaction, while the
others wait for its commit; each returns only once its own write has committed, and all
of them fail if that transaction fails. On one thread this is one transaction per write;
under concurrency the cost of a commit (an ``fsync`` on SQLite) is shared by the batch.
An ID already used is not an error of the batch: that caller alone learns it was used.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.dialects import postgresql, sqlite

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


class _Waiter:
    __slots__ = ("done", "error", "fresh", "item")

    def __init__(self, item: Record | UsedId) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None
        self.fresh = False  # for a UsedId: whether this write was its first use


class Records:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._log = services.events
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._busy = False

    def write(self, record: Record) -> None:
        """Return once ``record`` is committed; raise if its transaction failed."""
        self._submit(record)

    def use(self, used: UsedId) -> bool:
        """Record the use of an ID; True if committed now, False if it was used before."""
        return self._submit(used).fresh

    def _submit(self, item: Record | UsedId) -> _Waiter:
        waiter = _Waiter(item)
        with self._cond:
            self._queue.append(waiter)
            while self._busy and not waiter.done:
                self._cond.wait()
            batch: list[_Waiter] = []
            if not waiter.done:  # no writer busy: this caller writes the queue
                self._busy = True
                batch, self._queue = self._queue, []
        if batch:
            self._lead(batch)
        if waiter.error is not None:
            raise waiter.error
        return waiter

    def _lead(self, batch: list[_Waiter]) -> None:
        error: BaseException | None = None
        try:
            with self._store.write() as conn:
                uses = [(w, w.item) for w in batch if isinstance(w.item, UsedId)]
                fresh = self.insert_uses(conn, [used for _, used in uses])
                for (w, _), first in zip(uses, fresh, strict=True):
                    w.fresh = first
                records = [w.item for w in batch if isinstance(w.item, Record)]
                if records:
                    self.insert(conn, records)
        except BaseException as exc:
            error = exc
        finally:
            with self._cond:
                for w in batch:
                    w.error, w.done = error, True
                self._busy = False
                self._cond.notify_all()

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
