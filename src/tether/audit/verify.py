"""Full verification of the audit log: every leaf, the tree, every checkpoint.

Each stored event is checked against its own leaf hash (recomputed from the body), its
index columns (which must be copies of the body) and its place (sequence numbers run
1, 2, 3 ... with no gap); the tree is rebuilt from the recomputed leaves and its root at
every checkpoint's size must be the signed root, which also proves each checkpoint
consistent with the next. A log shorter than its head or its newest checkpoint has lost
its tail. The answer names the first bad sequence number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import operator
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, inspect, or_, select, type_coerce
from sqlalchemy.types import NullType, TypeDecorator

from tether.audit.checkpoints import CheckpointRecord, MalformedCheckpoint, kind_of, raw_text
from tether.audit.log import AuditLog
from tether.audit.note import Checkpoint, Verifier
from tether.audit.record import has_columns
from tether.audit.tree import Frontier, blocks, fold
from tether.errors import StoreUnavailable, VerificationFailed
from tether.store import Store, audit_checkpoints, audit_head, audit_nodes, events

__all__ = ["Report", "verify"]

sha256 = hashlib.sha256
compare = hmac.compare_digest
_first = operator.itemgetter(0)


@dataclass(slots=True)
class Report:
    ok: bool = True
    size: int = 0
    root: bytes = b""
    checkpoints: int = 0
    verifier_keys: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> None:
        self.ok = False
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq
        self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "checkpoints": self.checkpoints,
            "verifier_keys": self.verifier_keys,
            "first_bad_seq": self.first_bad_seq,
            "problems": self.problems,
        }


def verify(
    store: Store,
    log: AuditLog,
    records: Sequence[CheckpointRecord | MalformedCheckpoint],
    trusted: list[Verifier],
    anchors: Sequence[Checkpoint] = (),
    *,
    origin: str,
) -> Report:
    """Verify the log against the checkpoints in ``records`` (each must be signed by a
    ``trusted`` key) and ``anchors``: checkpoints already verified that were kept outside
    the store (this home's last signed one, or notes given by the operator)."""
    report = Report(verifier_keys=[v.text for v in trusted])
    signed = _open_checkpoints(records, trusted, origin, report)
    signed += [(a.size, a.root) for a in anchors]
    signed.sort()
    by_size: dict[int, bytes] = {}
    for size, root in signed:
        if by_size.setdefault(size, root) != root:
            report.fail(None, f"two signed checkpoints of size {size} have different roots")
    report.checkpoints = len(signed)
    # one snapshot: the head and what it covers; every value read as stored
    with store.read(snapshot=True) as conn, raw_text(conn):
        if not _schema_intact(conn, report):
            return report
        head_size, head_frontier = _head(conn, report)
        walk = _Walk(conn, signed, report)
        if not _walk_whole_batches(conn, log, walk, head_size):
            # something differs: from the first batch that did, event by event
            with log.scan(conn, after=walk.expected - 1, upto=head_size) as rows:
                for row in rows:
                    walk.step(*row)
        walk.finish()
        if head_size is None:
            return report
        beyond = conn.execute(select(func.max(events.c.seq))).scalar()
        if beyond is not None and not _is_count(beyond):
            report.fail(None, f"an event's sequence number is {kind_of(beyond)}")
        elif not walk.broken and beyond is not None and beyond > head_size:
            report.fail(head_size + 1, f"events after {head_size} are not in the tree head")
    count = walk.expected - 1
    report.size = count
    if not walk.broken:
        report.root = walk.frontier.root()
        if head_size == count and _frontier(head_frontier) != walk.frontier.hashes:
            report.fail(None, "the stored tree head does not match the events")
        if head_size > count:
            report.fail(count + 1, f"events {count + 1}..{head_size} are missing: the tail was cut")
    newest = max(by_size, default=0)
    if newest > count:
        report.fail(
            count + 1,
            f"checkpoint {newest} was signed but the log ends at {count}: the tail was cut",
        )
    return report


def _walk_whole_batches(conn: Connection, log: AuditLog, walk: _Walk, upto: int | None) -> bool:
    """Walk the log in batches judged whole; False at the first batch that is not
    (``walk`` is then where it was before that batch). Text is read as UTF-8 by the
    driver itself: a value that is not fails the read here, and the event-by-event walk
    reads it as stored."""
    raw = conn.connection.dbapi_connection
    factory = raw.text_factory if isinstance(raw, sqlite3.Connection) else None
    try:
        if isinstance(raw, sqlite3.Connection):
            raw.text_factory = str
        with log.batches(conn, upto=upto, size=_BATCH, stored_time=True) as batches:
            return all(map(walk.whole, batches))
    except StoreUnavailable:  # not UTF-8; if the store is really gone, it fails again
        return False
    finally:
        if isinstance(raw, sqlite3.Connection):
            raw.text_factory = factory


def _head(conn: Connection, report: Report) -> tuple[int | None, Any]:
    """The stored tree head (its size, None if it has none or one of the wrong kind, and
    its frontier as stored)."""
    head = conn.execute(
        select(audit_head.c.size, audit_head.c.frontier).where(audit_head.c.id == 1)
    ).first()
    if head is None:
        report.fail(None, "the tree head is missing")
        return None, None
    if not _is_count(head.size):
        report.fail(None, f"the tree head was changed: its size is {kind_of(head.size)}")
        return None, None
    return head.size, head.frontier


def _is_count(value: object) -> bool:
    """Whether a stored size or sequence number is one (a whole number, not negative)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _schema_intact(conn: Connection, report: Report) -> bool:
    """Whether every column of the audit tables still holds the kind of value Tether keeps
    there (an altered column type is tampering: its values cannot be read as the log)."""
    inspector = inspect(conn)
    intact = True
    for table in (events, audit_head, audit_nodes, audit_checkpoints):
        found = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            kept = column.type
            kept = kept.impl_instance if isinstance(kept, TypeDecorator) else kept
            if _python_type(found.get(column.name)) is not kept.python_type:
                intact = False
                report.fail(
                    None,
                    f"the audit table {table.name} was altered: its column {column.name} "
                    f"is {found.get(column.name, 'gone')}, not {kept.compile(conn.dialect)}",
                )
    return intact


def _python_type(stored: Any) -> type | None:
    try:
        return stored.python_type if stored is not None else None
    except NotImplementedError:  # a type SQLAlchemy does not know
        return None


def _frontier(text: Any) -> list[bytes] | None:
    try:
        return [bytes.fromhex(h) for h in json.loads(text)]
    except (ValueError, TypeError):
        return None


_BATCH = 8192  # events per batch: a power of two, so a full batch is one stored subtree
_NODE_BATCH = 8192  # subtrees checked at once on the event-by-event path
_QUOTED = 65_536  # distinct subjects and types whose JSON is kept between batches


class _Walk:
    """One pass over the events in order: leaves, columns, places, roots at the
    checkpoints, and the stored subtrees; stops judging at the first bad event.

    A batch is judged whole (:meth:`whole`): its sequence numbers, leaves and columns
    compared as lists, its subtrees hashed level by level and compared with the stored ones
    one range per level. From the first batch that fails there, the rest of the log is
    walked event by event (:meth:`step`), which finds and names what is wrong exactly as
    it always has."""

    def __init__(self, conn: Connection, signed: list[tuple[int, bytes]], report: Report) -> None:
        self.conn, self.report = conn, report
        self.signed = signed
        self.roots = dict(signed)
        self.frontier = Frontier()
        self.expected = 1
        self.broken = False
        self.made: dict[tuple[int, int], bytes] = {}
        self._subjects: dict[str | None, str] = {None: "null"}  # column value -> its JSON
        self._types: dict[str, str] = {}

    def whole(self, rows: Sequence[Sequence[Any]]) -> bool:
        """Judge a batch at once (its times as stored: ``YYYY-MM-DD HH:MM:SS.ffffff``);
        True if every check passed (the walk has moved past it), False if anything
        differs (nothing has changed: walk it event by event)."""
        start = self.expected - 1  # leaf index of the first row
        n = len(rows)
        if self.broken or start & (_BATCH - 1) or self.frontier.size != start or n > _BATCH:
            return False
        seqs, times, types, subjects, bodies, stored = zip(*rows, strict=True)
        if seqs != tuple(range(start + 1, start + n + 1)):
            return False
        try:
            leaves = [sha256(b"\x00" + body).digest() for body in bodies]
        except TypeError:  # a body that is not bytes
            return False
        if tuple(leaves) != stored or not self._columns(seqs, times, types, subjects, bodies):
            return False
        levels = _levels(leaves)
        for size in (s for s, _ in self.signed if start < s <= start + n):
            found = fold(
                self.frontier.hashes + [levels[lv][i] for lv, i in blocks(0, size - start)]
            )
            if not compare(found, self.roots[size]):
                return False
        frontier = self.frontier.copy()
        made: list[tuple[int, int, bytes]] = []
        for level, idx in blocks(0, n):
            made += frontier.push(levels[level][idx], level)[1:]
        wanted = [(level, start >> level, len(values)) for level, values in enumerate(levels)]
        wanted += [(level, idx, 1) for level, idx, _ in made]
        expect = [h for values in levels[1:] for h in values] + [h for _, _, h in made]
        if _stored_runs(self.conn, [w for w in wanted if w[0] > 0 and w[2]]) != expect:
            return False
        self.frontier = frontier
        self.expected = start + n + 1
        return True

    def _columns(
        self,
        seqs: Sequence[int],
        times: Sequence[Any],
        types: Sequence[Any],
        subjects: Sequence[Any],
        bodies: Sequence[bytes],
    ) -> bool:
        """Whether every body ends as its columns say (:func:`tail`), all compared at once."""
        quoted_subjects, quoted_types = self._subjects, self._types
        if len(quoted_subjects) + len(quoted_types) > _QUOTED:  # memory stays bounded
            quoted_subjects.clear()
            quoted_types.clear()
            quoted_subjects[None] = "null"
        for value in {*subjects} - quoted_subjects.keys():
            if not isinstance(value, str):
                return False
            quoted_subjects[value] = json.dumps(value, ensure_ascii=False)
        for value in {*types} - quoted_types.keys():
            if not isinstance(value, str):
                return False
            quoted_types[value] = json.dumps(value, ensure_ascii=False)
        space, tee = " ", "T"  # a stored time in the body's format, as the scan's SQL has it
        try:
            tails = [
                f',"seq":{seq},"subject":{quoted_subjects[subject]},'
                f'"time":"{time.replace(space, tee)}Z","type":{quoted_types[kind]}}}'.encode()
                for seq, time, kind, subject in zip(seqs, times, types, subjects, strict=True)
            ]
        except (AttributeError, TypeError):  # a time that is not text
            return False
        return all(map(bytes.endswith, bodies, tails))

    def step(self, seq: Any, time: Any, type: Any, subject: Any, body: Any, stored: Any) -> None:
        if self.broken or not _is_count(seq) or seq != self.expected:
            if not self.broken:
                self._bad(self.expected, _gap(self.expected, seq))
            if _is_count(seq):
                self.expected = seq + 1  # the events are still counted
            return
        data = bytes(body) if isinstance(body, bytes | memoryview) else b""
        leaf = sha256(b"\x00" + data).digest()
        if not isinstance(stored, bytes | memoryview) or not compare(leaf, bytes(stored)):
            self._bad(seq, f"event {seq} was changed: its body no longer has its leaf hash")
        elif not has_columns(data, seq, subject, time, type):
            self._bad(seq, f"event {seq} was changed: its columns differ from its body")
        for level, idx, value in self.frontier.append(leaf)[1:]:
            self.made[(level, idx)] = value
        want = self.roots.get(seq)
        if want is not None and not self.broken and not compare(want, self.frontier.root()):
            start = max((s for s, _ in self.signed if s < seq), default=0) + 1
            self._bad(
                start,
                f"the log differs from checkpoint {seq}: an event in {start}..{seq} was "
                "rewritten together with its hash",
            )
        self.expected = seq + 1
        if len(self.made) >= _NODE_BATCH:
            self.finish()

    def finish(self) -> None:
        """The stored subtrees completed by the leaves walked since the last batch must be
        the recomputed ones (proofs are served from them)."""
        if self.broken or not self.made:
            return
        stored = _stored_nodes(self.conn, self.made)
        wrong = [node for node, value in self.made.items() if stored.get(node) != value]
        if wrong:
            # the smallest subtree that differs, leftmost: it names the events
            level, idx = min(wrong, key=lambda node: ((node[1] + 1) << node[0], node[0]))
            first, last = (idx << level) + 1, (idx + 1) << level
            self.report.fail(
                first,
                f"events {first}..{last} or their stored subtree were changed: the tree "
                "recomputed from the events differs from the stored one (proofs from it "
                "would not verify)",
            )
        self.made = {}

    def _bad(self, seq: int, problem: str) -> None:
        self.finish()  # subtrees the good leaves before it completed are still judged
        self.report.fail(seq, problem)
        self.broken = True


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """The leaves and every perfect subtree above them, level by level, of a batch that
    starts on a multiple of its own (power of two) length."""
    levels = [leaves]
    level = leaves
    while len(level) > 1:
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=False)
        ]
        levels.append(level)
    return levels


def _stored_runs(conn: Connection, runs: Sequence[tuple[int, int, int]]) -> list[Any]:
    """The stored hashes of ``runs`` (level, first index, count), in that order, as
    stored: a missing node makes the list shorter, a hash of the wrong kind is itself.
    Read with the driver's own cursor, one range of the primary key per level (a batch has
    thousands of nodes; an OR of the ranges would be sorted)."""
    mark = "%s" if conn.dialect.paramstyle == "pyformat" else "?"
    sql = (  # placeholders only: nothing of the log is put into the text
        f"SELECT hash FROM audit_nodes WHERE level = {mark} "  # noqa: S608
        f"AND idx BETWEEN {mark} AND {mark} ORDER BY idx"
    )
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    found: list[Any] = []
    try:
        for level, idx, n in runs:
            cursor.execute(sql, (level, idx, idx + n - 1))
            found += map(_first, cursor.fetchall())  # a memoryview equals its bytes
    except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
        raise StoreUnavailable(f"cannot read the audit tree: {exc}") from exc
    finally:
        cursor.close()
    return found


def _stored_nodes(conn: Connection, nodes: Iterable[tuple[int, int]]) -> dict[Any, bytes]:
    """The stored subtrees in the span of ``nodes`` (per level, from the lowest index to
    the highest), keyed as stored; a hash of the wrong kind is left out (it is wrong)."""
    span: dict[int, tuple[int, int]] = {}
    for level, idx in nodes:
        lo, hi = span.get(level, (idx, idx))
        span[level] = (min(lo, idx), max(hi, idx))
    value = type_coerce(audit_nodes.c.hash, NullType())  # as stored: no conversion
    rows = conn.execute(
        select(audit_nodes.c.level, audit_nodes.c.idx, value).where(
            or_(
                *(
                    and_(audit_nodes.c.level == level, audit_nodes.c.idx.between(lo, hi))
                    for level, (lo, hi) in span.items()
                )
            )
        )
    )
    return {
        (level, idx): bytes(value)
        for level, idx, value in rows
        if isinstance(value, bytes | memoryview)
    }


def _gap(expected: int, found: Any) -> str:
    if not _is_count(found):
        return f"event {expected}'s sequence number is {kind_of(found)}"
    if found < expected:
        return f"event {found} appears twice or out of order"
    if found == expected + 1:
        return f"event {expected} is missing"
    return f"events {expected}..{found - 1} are missing"


def _open_checkpoints(
    records: Sequence[CheckpointRecord | MalformedCheckpoint],
    trusted: list[Verifier],
    origin: str,
    report: Report,
) -> list[tuple[int, bytes]]:
    """The checkpoints whose signature verifies with a trusted key, as (size, root)."""
    keys = {v.text: v for v in trusted}
    signed: list[tuple[int, bytes]] = []
    for record in records:
        if isinstance(record, MalformedCheckpoint):
            report.fail(None, record.problem)
            continue
        verifier = keys.get(record.verifier_key)
        if verifier is None:
            report.fail(None, f"checkpoint {record.size} is signed by an untrusted key")
            continue
        try:
            checkpoint = verifier.open(record.note)
        except VerificationFailed as exc:
            report.fail(None, f"checkpoint {record.size}: {exc.description}")
            continue
        if checkpoint.size != record.size or checkpoint.root != record.root:
            report.fail(None, f"checkpoint {record.size} does not match its signed note")
            continue
        if checkpoint.origin != origin:
            report.fail(None, f"checkpoint {record.size} is for another log ({checkpoint.origin})")
            continue
        signed.append((checkpoint.size, checkpoint.root))
    return signed
