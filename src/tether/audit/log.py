"""The append-only audit log on the store: appends, group commit, reads and proofs.

An event recorded with an effect (a registration, a grant, a token) is written in the
same transaction as the effect, as its last step: if the log cannot be written, the
transaction rolls back and the effect never happened. Events with no effect of their own
(decisions, refusals) go through a group commit: whatever arrives together is written in
one transaction, and nobody is told their event is recorded before that commit succeeded.

Every append locks the one ``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite writers are serialised by ``BEGIN IMMEDIATE``), so sequence numbers are handed out
in commit order by one writer at a time, whichever process it is: no gap, no duplicate,
no fork.
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import (
    Connection,
    and_,
    or_,
    select,
)
from sqlalchemy.engine import Dialect

from tether.audit.merkle import EMPTY_ROOT
from tether.audit.record import Effect, Entry, Prepared, prepare, stage
from tether.audit.tree import Frontier, Node, blocks, consistency_ranges, fold, inclusion_ranges
from tether.errors import InvalidRequest, NotFound, StoreUnavailable, VerificationFailed
from tether.model import Event
from tether.store import Store, audit_head, audit_nodes, events

__all__ = ["AuditLog", "GroupCommit"]

_PENDING = "tether_audit_pending"

log = logging.getLogger("tether.audit")

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Leader/follower batching: the first caller writes everything queued in one
    transaction; the others wait for that commit and get their own results (or error).

    A leader first gathers: while fewer callers are queued than the last batch had, it
    waits for them, at most half as long as the last write took (callers that just got
    their answer are on their way back; without the wait, the first one back would write
    alone and the rest would make a second, smaller batch). A lone caller never waits.

    Items handed to :meth:`defer` (records that nobody waits for, such as the result of
    a forwarded tool call) ride along with the next commit, written before its batch, or
    are written on their own after at most ``delay`` seconds; a failed write keeps them
    queued and tries again after ``delay``.
    """

    def __init__(
        self,
        write: Callable[[list[T]], list[int]],
        delay: float = 0.05,
        *,
        gather: float = 0.002,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._delay = delay
        self._gather = gather  # the longest a leader waits for its batch to fill
        self._timer = timer
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)  # followers wait here
        self._arrived = threading.Condition(self._lock)  # a gathering leader waits here
        self._queue: list[_Waiter[T]] = []
        self._later: list[T] = []
        self._deferred_timer: threading.Timer | None = None
        self._busy = False
        self._last_callers = 0  # callers in the last batch written
        self._last_took = 0.0  # seconds the last write took

    def submit(self, items: Sequence[T]) -> list[int]:
        waiter = _Waiter(list(items))
        with self._lock:
            self._queue.append(waiter)
            self._arrived.notify()
            while self._busy and not waiter.finished:
                self._done.wait()
            if waiter.finished:
                return waiter.result()
            self._busy = True
            self._fill()
            batch, self._queue = self._queue, []
            later, self._later = self._later, []
        started = self._timer()
        try:
            written = [item for w in batch for item in w.items]
            seqs = self._write(later + written) if later or written else []
            at = len(later)
            for w in batch:
                w.seqs = seqs[at : at + len(w.items)]
                at += len(w.items)
        except BaseException as exc:
            for w in batch:
                w.error = exc
            with self._lock:
                self._later[:0] = later  # not written: keep them for the next try
            if later:
                self._arm()
            raise
        finally:
            took = self._timer() - started
            with self._lock:
                for w in batch:
                    w.finished = True
                self._busy = False
                self._last_callers, self._last_took = len(batch), took
                self._done.notify_all()
        return waiter.result()

    def _fill(self) -> None:
        """Wait (holding the leadership) for as many callers as the last batch had, at most
        half as long as its write took and never longer than ``gather``."""
        if len(self._queue) >= self._last_callers:
            return
        deadline = self._timer() + min(self._gather, self._last_took / 2)
        while len(self._queue) < self._last_callers:
            left = deadline - self._timer()
            if left <= 0:
                return
            self._arrived.wait(left)

    def defer(self, items: Sequence[T]) -> None:
        """Queue ``items`` for the next commit (or one of their own within ``delay``)."""
        with self._lock:
            self._later.extend(items)
        self._arm()

    def flush(self) -> None:
        """Write whatever is deferred now (raises if that fails)."""
        self.submit([])

    def pending(self) -> int:
        """Deferred items not written yet."""
        with self._lock:
            return len(self._later)

    def queued(self) -> int:
        """Callers waiting for the next commit (not the one in flight)."""
        with self._lock:
            return len(self._queue)

    def _arm(self) -> None:
        with self._lock:
            if self._deferred_timer is not None:
                return
            timer = self._deferred_timer = threading.Timer(self._delay, self._due)
            timer.daemon = True
            timer.name = "tether-audit-deferred"
        timer.start()

    def _due(self) -> None:
        with self._lock:
            self._deferred_timer = None
            if not self._later:
                return
        try:
            self.flush()
        except Exception as exc:  # kept queued and re-armed by submit
            log.error("deferred audit events could not be written yet: %s", exc)


class _Waiter(Generic[T]):
    __slots__ = ("error", "finished", "items", "seqs")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.finished = False

    def result(self) -> list[int]:
        if self.error is not None:
            raise self.error
        return self.seqs


class _Sql:
    """The append's statements in the driver's own SQL (an append is on the path of every
    decision: no statement is built or compiled per call), per dialect."""

    _HEAD = "SELECT size, frontier FROM audit_head WHERE id = 1"
    _EVENT = (
        "INSERT INTO events (seq, at, type, subject, body, leaf_hash) "
        "VALUES (:seq, :at, :type, :subject, :body, :leaf_hash)"
    )
    _NODE = "INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"
    _ADVANCE = "UPDATE audit_head SET size = :size, frontier = :frontier WHERE id = 1"
    _made: ClassVar[dict[str, _Sql]] = {}

    def __init__(self, dialect: Dialect) -> None:
        pg = dialect.name == "postgresql"

        def native(sql: str) -> str:  # psycopg takes %(name)s, sqlite3 :name
            return re.sub(r":(\w+)", r"%(\1)s", sql) if pg else sql

        # PostgreSQL: lock the head row; SQLite: BEGIN IMMEDIATE already serialises writers.
        self.head = self._HEAD + " FOR UPDATE" if pg else self._HEAD
        self.event, self.node, self.advance = map(native, (self._EVENT, self._NODE, self._ADVANCE))
        convert = events.c.at.type.dialect_impl(dialect).bind_processor(
            dialect
        )  # as SQLAlchemy stores it
        self.at: Callable[[datetime], Any] = convert if convert is not None else (lambda v: v)

    @classmethod
    def of(cls, dialect: Dialect) -> _Sql:
        made = cls._made.get(dialect.name)
        if made is None:
            made = cls._made[dialect.name] = cls(dialect)
        return made


class AuditLog:
    """Appends events to the Merkle log and reads them, their hashes and proofs back."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._group: GroupCommit[Prepared] = GroupCommit(self._write_alone)
        self._listeners: list[Callable[[int], None]] = []

    # ---- writing -----------------------------------------------------------------------

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(new size)`` after every commit that appended events."""
        self._listeners.append(listener)

    # Three ways to write, by what the event goes with:
    #   append(conn, ...)  with the caller's write transaction (an effect and its record
    #                      commit together, or neither does);
    #   record(...)        on its own, waiting until it is committed (decisions, refusals);
    #   defer(...)         on its own, without waiting (records that must not hold an
    #                      answer up); flush() writes what is deferred now.

    def append(self, conn: Connection, *entries: Entry) -> None:
        """Queue ``entries`` on the write transaction of ``conn``: they are written as its
        last step and commit with its effect (and are dropped with it if it rolls back)."""
        state = Store.state(conn)
        pending: list[Prepared] | None = state.get(_PENDING)
        if pending is None:
            pending = state[_PENDING] = []

            def flush() -> None:
                queued = state.pop(_PENDING, [])
                if queued:
                    self._insert(conn, queued)

            Store.before_commit(conn, flush)
        pending.extend(map(prepare, entries))

    def insert(self, conn: Connection, *entries: Entry) -> list[int]:
        """Write ``entries`` now, on the write transaction of ``conn``, and return their
        sequence numbers (they commit with it). The audit head stays locked until that
        transaction ends: call it as the transaction's last step."""
        return self._insert(conn, list(map(prepare, entries)))

    def record(self, *entries: Entry, effects: Sequence[Effect | None] = ()) -> list[int]:
        """Write ``entries`` on their own (through the group commit) and return their
        sequence numbers once they are committed. ``effects[i]``, when given, runs in the
        transaction that writes ``entries[i]``, with its sequence number (if it fails, the
        transaction rolls back and this raises)."""
        prepared = list(map(prepare, entries))
        for index, effect in enumerate(effects):
            if effect is not None:
                prepared[index] = replace(prepared[index], effect=effect)
        return self._group.submit(prepared) if prepared else []

    def defer(self, *entries: Entry) -> None:
        """Write ``entries`` without waiting: with the next commit of the log, or on their
        own within 50 ms."""
        self._group.defer(list(map(prepare, entries)))

    def flush(self) -> None:
        """Write the entries queued by :meth:`defer` now."""
        self._group.flush()

    def _write_alone(self, entries: list[Prepared]) -> list[int]:
        with self._store.write() as conn:
            return self._insert(conn, entries)

    def _insert(self, conn: Connection, entries: Sequence[Prepared]) -> list[int]:
        sql = _Sql.of(conn.dialect)
        head = conn.exec_driver_sql(sql.head).one()
        try:
            frontier = Frontier(head[0], (bytes.fromhex(h) for h in json.loads(head[1])))
        except (ValueError, TypeError):
            raise StoreUnavailable(
                "the audit tree head is damaged: nothing can be recorded (run tether audit verify)"
            ) from None
        at = self._clock()
        event_rows, node_rows = stage(entries, at, frontier)
        stored_at = sql.at(at)
        for row in event_rows:
            row["at"] = stored_at
        conn.exec_driver_sql(sql.event, event_rows)
        if node_rows:
            conn.exec_driver_sql(sql.node, node_rows)
        hashes = json.dumps([h.hex() for h in frontier.hashes])
        conn.exec_driver_sql(sql.advance, {"size": frontier.size, "frontier": hashes})
        size = frontier.size
        Store.after_commit(conn, lambda: self._committed(size))
        seqs = [row["seq"] for row in event_rows]
        for entry, seq in zip(entries, seqs, strict=True):
            if entry.effect is not None:  # the state the event goes with, in its transaction
                entry.effect(conn, seq)
        return seqs

    def _committed(self, size: int) -> None:
        for listener in self._listeners:
            listener(size)

    # ---- reading -----------------------------------------------------------------------

    def size(self) -> int:
        with self._store.read() as conn:
            return int(conn.execute(select(audit_head.c.size).where(audit_head.c.id == 1)).one()[0])

    def get(self, seq: int) -> Event:
        with self._store.read() as conn:
            row = conn.execute(
                select(events.c.at, events.c.body).where(events.c.seq == seq)
            ).first()
        if row is None:
            raise NotFound(f"no audit event {seq}")
        return Event.from_body(json.loads(row.body), row.at)

    def list(
        self,
        *,
        subject: str | None = None,
        type: str | None = None,
        after: int = 0,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        found = self.bodies(subject=subject, type=type, after=after, since=since, limit=limit)
        return [Event.from_body(json.loads(body), at) for _, at, body in found]

    def bodies(
        self,
        *,
        subject: str | None = None,
        type: str | None = None,
        after: int = 0,
        since: datetime | None = None,
        limit: int | None = None,
        contains: Sequence[str] = (),
        types: Sequence[str] = (),
        upto: int | None = None,
    ) -> builtins.list[tuple[int, datetime, str]]:
        """(seq, time, canonical body) of events in order; ``contains`` is a pre-filter on the
        body text (callers check the parsed event exactly)."""
        query = select(events.c.seq, events.c.at, events.c.body).where(events.c.seq > after)
        if since is not None:
            query = query.where(events.c.at >= since)
        if subject is not None:
            query = query.where(events.c.subject == subject)
        if type is not None:
            query = query.where(events.c.type == type)
        if types:
            query = query.where(events.c.type.in_(types))
        if upto is not None:
            query = query.where(events.c.seq <= upto)
        for text in contains:
            query = query.where(events.c.body.contains(text, autoescape=True))
        query = query.order_by(events.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self._store.read() as conn:
            return [(row.seq, row.at, row.body) for row in conn.execute(query)]

    # ---- hashes and proofs ------------------------------------------------------------

    def root(self, size: int | None = None) -> tuple[int, bytes]:
        """(size, root hash) of the tree now, or at an earlier ``size``."""
        with self._store.read() as conn:
            current = self._size(conn)
            size = current if size is None else size
            self._check_size(size, current)
            [value] = self._range_hashes(conn, [(0, size)]) if size else [EMPTY_ROOT]
        return size, value

    def inclusion(
        self, seq: int, size: int | None = None
    ) -> tuple[int, bytes, builtins.list[bytes]]:
        """(tree size, leaf hash, audit path) proving event ``seq`` is in the tree."""
        with self._store.read() as conn:
            current = self._size(conn)
            size = current if size is None else size
            self._check_size(size, current)
            if not 1 <= seq <= size:
                raise InvalidRequest(f"event {seq} is not in a tree of size {size}")
            index = seq - 1
            [leaf] = self._nodes(conn, [(0, index)]).values()
            proof = self._range_hashes(conn, inclusion_ranges(index, size))
        return size, leaf, proof

    def consistency(self, size1: int, size2: int) -> builtins.list[bytes]:
        """PROOF(size1, D[size2]) from the stored subtrees."""
        with self._store.read() as conn:
            current = self._size(conn)
            self._check_size(size2, current)
            if not 0 <= size1 <= size2:
                raise InvalidRequest(f"old size {size1} is not between 0 and {size2}")
            if size1 in (0, size2):
                return []
            return self._range_hashes(conn, consistency_ranges(size1, size2))

    @staticmethod
    def _size(conn: Connection) -> int:
        return int(conn.execute(select(audit_head.c.size).where(audit_head.c.id == 1)).one()[0])

    @staticmethod
    def _check_size(size: int, current: int) -> None:
        if not 0 <= size <= current:
            raise InvalidRequest(f"tree size {size} is not between 0 and {current}")

    def _range_hashes(
        self, conn: Connection, ranges: Sequence[tuple[int, int]]
    ) -> builtins.list[bytes]:
        plans = [blocks(lo, hi) for lo, hi in ranges]
        found = self._nodes(conn, [node for plan in plans for node in plan])
        return [fold([found[node] for node in plan]) for plan in plans]

    @staticmethod
    def _nodes(conn: Connection, wanted: Iterable[Node]) -> dict[Node, bytes]:
        wanted = set(wanted)
        leaves = [idx + 1 for level, idx in wanted if level == 0]
        inner = [(level, idx) for level, idx in wanted if level > 0]
        found: dict[Node, bytes] = {}
        if leaves:
            rows = conn.execute(
                select(events.c.seq, events.c.leaf_hash).where(events.c.seq.in_(leaves))
            )
            found.update(((0, row.seq - 1), bytes(row.leaf_hash)) for row in rows)
        if inner:
            by_level: dict[int, list[int]] = {}
            for level, idx in inner:
                by_level.setdefault(level, []).append(idx)
            # one IN per level: a row-value IN makes SQLite scan the whole table
            rows = conn.execute(
                select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash).where(
                    or_(
                        *(
                            and_(audit_nodes.c.level == level, audit_nodes.c.idx.in_(idxs))
                            for level, idxs in by_level.items()
                        )
                    )
                )
            )
            found.update(((row.level, row.idx), bytes(row.hash)) for row in rows)
        missing = wanted - found.keys()
        if missing:
            level, idx = min(missing)
            raise VerificationFailed(
                f"the audit tree is missing node level {level} index {idx}: run "
                "`tether audit verify`"
            )
        return found

    def frontier_at(self, conn: Connection, size: int) -> Frontier:
        """The frontier of the tree of ``size`` leaves, from the stored subtrees."""
        plan = blocks(0, size)
        found = self._nodes(conn, plan)
        return Frontier(size, (found[node] for node in plan))

    @contextmanager
    def scan(
        self, conn: Connection, *, after: int = 0, upto: int | None = None, batch: int = 10_000
    ) -> Iterator[Iterator[Sequence[Any]]]:
        """Event rows (seq, time text, type, subject, body bytes, leaf hash) with ``after``
        < seq <= ``upto``, in order, streamed, exactly as stored: the time as text in the
        body's format, the body as its bytes, nothing converted by the driver, so a value
        of the wrong kind is read (and found changed) rather than failing the read."""
        with self.batches(conn, after=after, upto=upto, size=batch) as found:
            yield itertools.chain.from_iterable(found)

    @contextmanager
    def batches(
        self,
        conn: Connection,
        *,
        after: int = 0,
        upto: int | None = None,
        size: int = 8192,
        stored_time: bool = False,
    ) -> Iterator[Iterator[Sequence[Sequence[Any]]]]:
        """The rows of :meth:`scan` in lists of ``size`` (the last one shorter), read with a
        server-side cursor on PostgreSQL: memory stays bounded whatever the log holds.
        With ``stored_time`` the time is as SQLite keeps it (``YYYY-MM-DD
        HH:MM:SS.ffffff``, PostgreSQL gives the same) and SQLite does no work per row."""
        bound = upto if upto is not None else 2**63 - 1
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if self._store.dialect == "postgresql":
            form = "YYYY-MM-DD HH24:MI:SS.US" if stored_time else 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
            sql = (
                f"SELECT seq, to_char(at AT TIME ZONE 'UTC', '{form}'), type, subject, "  # noqa: S608
                "convert_to(body, 'UTF8'), leaf_hash FROM events "
                "WHERE seq > %s AND seq <= %s ORDER BY seq"
            )
            cursor = raw.cursor(name=f"tether_scan_{id(self)}_{threading.get_ident()}")
            cursor.itersize = size  # type: ignore[attr-defined]
        else:  # SQLAlchemy keeps SQLite times as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
            time = "at" if stored_time else "replace(CAST(at AS TEXT), ' ', 'T') || 'Z'"
            sql = (
                f"SELECT seq, {time}, type, subject, CAST(body AS BLOB), leaf_hash "  # noqa: S608
                "FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"
            )
            cursor = raw.cursor()
        driver_error = self._store.engine.dialect.dbapi.Error  # type: ignore[union-attr]

        def lists() -> Iterator[Sequence[Sequence[Any]]]:
            try:
                while found := cursor.fetchmany(size):
                    yield found
            except driver_error as exc:
                raise StoreUnavailable(f"cannot read the audit log: {exc}") from exc

        try:
            cursor.execute(sql, (after, bound))
            yield lists()
        except driver_error as exc:
            raise StoreUnavailable(f"cannot read the audit log: {exc}") from exc
        finally:  # closed inside the transaction, whatever the caller did with the rows
            cursor.close()

    @staticmethod
    def completed_nodes(conn: Connection, lo: int, hi: int) -> dict[Node, bytes]:
        """Stored subtrees above the leaves whose last leaf index is in [lo, hi)."""
        ranges = []
        level = 1
        while (1 << level) <= hi:
            first = -(-(lo + 1) // (1 << level)) - 1  # ceil((lo + 1) / 2**level) - 1
            last = hi // (1 << level) - 1
            if first <= last:
                ranges.append(
                    and_(
                        audit_nodes.c.level == level,
                        audit_nodes.c.idx.between(first, last),
                    )
                )
            level += 1
        if not ranges:
            return {}
        query = select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash)
        rows = conn.execute(query.where(or_(*ranges))).all()
        return {(level, idx): bytes(value) for level, idx, value in rows}
