"""Issued tokens on record: a token's issued-token row and its ``token.issued`` or
``token.exchanged`` event are written in one transaction, and the token is returned only
once that transaction has committed.

Tokens issued at the same time share the transaction (a group commit): the first caller
writes every record queued when it starts, in one transaction, while the others wait for
its commit; each returns only when its own record has committed, and every one of them
fails if the transaction fails. On one thread this is one transaction per token; under
concurrency the cost of a commit (an ``fsync`` on SQLite) is shared by the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert

from tether.audit.record import Entry
from tether.services import Services
from tether.store import issued_tokens

__all__ = ["Record", "Records"]

_INSERT = insert(issued_tokens)  # built once: compiled once, executed with many rows


@dataclass(frozen=True, slots=True)
class Record:
    """One issued token as the store keeps it: its ``issued_tokens`` row and its events
    (the decision that allowed it, for an exchange, then the token's own)."""

    row: dict[str, Any]
    entries: tuple[Entry, ...]

    def after(self, *entries: Entry) -> Record:
        """This record with ``entries`` written before its own events."""
        return Record(self.row, (*entries, *self.entries))


class _Waiter:
    __slots__ = ("done", "error", "record")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.done = False
        self.error: BaseException | None = None


class Records:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._log = services.events
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._busy = False

    def write(self, record: Record) -> None:
        """Return once ``record`` is committed; raise if its transaction failed."""
        waiter = _Waiter(record)
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

    def _lead(self, batch: list[_Waiter]) -> None:
        error: BaseException | None = None
        try:
            with self._store.write() as conn:
                self.insert(conn, [w.record for w in batch])
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
