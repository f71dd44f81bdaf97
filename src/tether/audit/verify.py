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
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from tether.audit.checkpoints import CheckpointRecord, Checkpoints
from tether.audit.log import AuditLog
from tether.audit.note import Verifier
from tether.audit.record import format_time, tail
from tether.audit.tree import Frontier
from tether.errors import VerificationFailed
from tether.store import Store, audit_head

__all__ = ["Report", "verify"]


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
    store: Store, log: AuditLog, checkpoints: Checkpoints, trusted: list[Verifier]
) -> Report:
    report = Report(verifier_keys=[v.text for v in trusted])
    signed = _open_checkpoints(checkpoints.list(), trusted, report)
    by_size = dict(signed)
    frontier = Frontier()
    expected = 1
    broken = False
    with store.read() as conn:
        head = conn.execute(select(audit_head.c.size, audit_head.c.frontier)).one()
        sha256 = hashlib.sha256
        for seq, at, type, subject, body, stored in log.scan(conn):
            if broken:
                expected = seq + 1
                continue
            if seq != expected:
                report.fail(expected, _gap(expected, seq))
                broken = True
                expected = seq + 1
                continue
            leaf = sha256(b"\x00" + body.encode("utf-8")).digest()
            if not hmac.compare_digest(leaf, bytes(stored)):
                report.fail(seq, f"event {seq} was changed: its body no longer has its leaf hash")
                broken = True
            elif not body.endswith(tail(seq, subject, format_time(at), type)):
                report.fail(seq, f"event {seq} was changed: its columns differ from its body")
                broken = True
            frontier.append(leaf)
            root = by_size.get(seq)
            if root is not None and not broken and not hmac.compare_digest(root, frontier.root()):
                start = max((s for s, _ in signed if s < seq), default=0) + 1
                report.fail(
                    start,
                    f"the log differs from checkpoint {seq}: an event in {start}..{seq} was "
                    "rewritten together with its hash",
                )
                broken = True
            expected = seq + 1
    count = expected - 1
    report.size = count
    if not broken:
        report.root = frontier.root()
        stored_frontier = [bytes.fromhex(h) for h in json.loads(head.frontier)]
        if head.size == count and stored_frontier != frontier.hashes:
            report.fail(None, "the stored tree head does not match the events")
    if head.size > count and not broken:
        report.fail(count + 1, f"events {count + 1}..{head.size} are missing: the tail was cut")
    elif head.size < count:
        report.fail(head.size + 1, f"events after {head.size} are not in the tree head")
    newest = max((s for s, _ in signed), default=0)
    if newest > count:
        report.fail(
            count + 1,
            f"checkpoint {newest} was signed but the log ends at {count}: the tail was cut",
        )
    report.checkpoints = len(signed)
    return report


def _gap(expected: int, found: int) -> str:
    if found < expected:
        return f"event {found} appears twice or out of order"
    if found == expected + 1:
        return f"event {expected} is missing"
    return f"events {expected}..{found - 1} are missing"


def _open_checkpoints(
    records: list[CheckpointRecord], trusted: list[Verifier], report: Report
) -> list[tuple[int, bytes]]:
    """The checkpoints whose signature verifies with a trusted key, as (size, root)."""
    keys = {v.text: v for v in trusted}
    signed: list[tuple[int, bytes]] = []
    for record in records:
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
        signed.append((checkpoint.size, checkpoint.root))
    return signed
