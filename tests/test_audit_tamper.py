"""Tampering with the stored audit log is caught by ``tether audit verify``, which names where.

Every test builds the same log on SQLite and on PostgreSQL (the ``log`` fixture):
registrations, grants, single and batched decisions (allows and denies, one inside a
request), a refusal, a token, a suspension, a revocation, events with no subject and with
awkward text, two signed checkpoints C1 and C2, and events after C2::

    1 ............ C1=14 ........ C2=18 ........ n=23

The untouched log verifies (exit 0) first. The test then edits the database directly, as
an attacker with write access to it would, and runs ``tether audit verify --json``
through the CLI: exit 4, and ``first_bad_seq`` names the first bad sequence number:

* an event whose stored body, index columns or leaf hash no longer agree: that event;
* a missing event: the first one missing (a cut tail too, via the tree head or, when the
  head was rewritten as well, via a checkpoint that covers the cut);
* two events swapped: the lower of the two;
* an event rewritten together with its hash and the whole stored tree: only a signed
  checkpoint can tell, and it cannot tell which event in its span changed: the first
  sequence number after the previous checkpoint (1 if there is none) is named;
* a checkpoint that does not open with the trusted key: no sequence number, still exit 4.

Nothing after the newest checkpoint is protected against an attacker who rewrites the
whole stored tree consistently; two ``test_limit_*`` tests pin that boundary.

After any tampering, ``tether.checkpoints.make()`` never hides it: it refuses
(VerificationFailed) when the signed history was attacked (a checkpoint, a consistent
rewrite under one, a cut covered by one) and when anything after the newest checkpoint is
wrong (it recomputes those events from their bodies). An edit under the newest checkpoint
that left the stored tree alone may still get the stored, original tree signed; the same
first bad sequence number is reported afterwards either way.

Two tests once pinned bugs, since fixed: ``test_a_rewrite_after_the_newest_...`` (the
first bad number is now named from the smallest differing subtree) and
``test_a_value_of_the_wrong_kind_...`` (verification reads the stored values raw).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from conftest import ADMIN, Cli, Clock, spec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import AccessRequest, Caller, Denied, Forbidden, GrantSpec, Tether
from tether.audit import verify
from tether.audit.note import Checkpoint, sign_checkpoint, verifier_key
from tether.audit.record import REQUEST_ID, Entry, format_time, parse_time
from tether.audit.tree import Frontier
from tether.errors import VerificationFailed
from tether.store import audit_checkpoints, audit_head, audit_keys, audit_nodes, events

BOB = "bob@example.com"
ALICE = "alice@example.com"
BODY_FIELDS = (
    "action",
    "actor",
    "chain",
    "decision",
    "detail",
    "reasons",
    "request_id",
    "resource",
    "seq",
    "subject",
    "time",
    "type",
)
COLUMNS = ("at", "type", "subject", "leaf_hash")
AUDIT_TABLES = (events, audit_nodes, audit_head, audit_checkpoints, audit_keys)
FEW = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def leaf(text: str) -> bytes:
    return hashlib.sha256(b"\x00" + text.encode("utf-8")).digest()


# ---- the log and the attacker's tools ------------------------------------------------------


@dataclass
class Log:
    tether: Tether
    cli: Cli
    size: int
    c1: int  # the older checkpoint's size
    c2: int  # the newest checkpoint's size
    roots: dict[int, bytes]  # the genuine root at every size
    saved: dict[str, list[dict[str, Any]]]  # every audit row, to restore between edits
    files: dict[Path, bytes]  # what TETHER_HOME/audit holds (the key, what make() keeps)

    @property
    def engine(self) -> sa.Engine:
        return self.tether.store.engine

    # -- verification ---------------------------------------------------------------

    def verify(self, expect: int) -> dict[str, Any]:
        report: dict[str, Any] = self.cli.json("audit", "verify", expect=expect)
        assert report["ok"] is (expect == 0), report
        return report

    def assert_ok(self) -> dict[str, Any]:
        report = self.verify(0)
        assert report["first_bad_seq"] is None and report["problems"] == [], report
        return report

    def assert_bad(self, seq: int | None, what: str = "") -> dict[str, Any]:
        report = self.verify(4)
        assert report["first_bad_seq"] == seq, (what, report)
        assert report["problems"], report
        return report

    def make_does_not_hide(self, seq: int | None, what: str = "") -> None:
        """After tampering that ``seq`` is the first bad event of, make() never hides it.
        Past the newest checkpoint (whose events it recomputes from their bodies) it
        refuses; under it, it may sign the stored tree, which the edit left as it was. Either
        way the same first bad sequence number is reported afterwards."""
        if seq is not None and seq > self.c2:
            self.make_refuses()
        else:
            with contextlib.suppress(VerificationFailed):
                self.tether.checkpoints.make()
        report = self.tether.verify_audit()
        assert not report.ok and report.first_bad_seq == seq, (what, report)

    def make_refuses(self) -> None:
        with pytest.raises(VerificationFailed):
            self.tether.checkpoints.make()

    # -- direct edits ---------------------------------------------------------------

    def row(self, seq: int) -> sa.Row[Any]:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(events).where(events.c.seq == seq)).one()

    def update(self, seq: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(events).where(events.c.seq == seq).values(**values))

    def delete(self, *where: sa.ColumnElement[bool]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(events).where(*where))

    def rewrite(self, seq: int, text: str) -> None:
        """Replace the body of ``seq`` and its leaf hash, and recompute the stored tree."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(events).where(events.c.seq == seq).values(body=text, leaf_hash=leaf(text))
            )
            rebuild_tree(conn)

    def restore(self) -> None:
        """Put back every audit row, and the files of TETHER_HOME/audit (make() may have
        written there)."""
        with self.engine.begin() as conn:
            for table in AUDIT_TABLES:
                conn.execute(sa.delete(table))
            for table in AUDIT_TABLES:
                if self.saved[table.name]:
                    conn.execute(sa.insert(table), self.saved[table.name])
        for path in audit_files(self.tether).keys() - self.files.keys():
            path.unlink()
        for path, data in self.files.items():
            path.write_bytes(data)


def audit_files(tether: Tether) -> dict[Path, bytes]:
    folder = tether.settings.home / "audit"
    return {p: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}


def rebuild_tree(conn: sa.Connection) -> Frontier:
    """What a careful attacker does after changing leaves: recompute every stored subtree
    and the tree head from the leaf hashes now in ``events``."""
    frontier = Frontier()
    nodes: list[dict[str, Any]] = []
    for stored in conn.execute(sa.select(events.c.leaf_hash).order_by(events.c.seq)).scalars():
        nodes.extend(
            {"level": level, "idx": idx, "hash": value}
            for level, idx, value in frontier.append(bytes(stored))[1:]
        )
    conn.execute(sa.delete(audit_nodes))
    if nodes:
        conn.execute(sa.insert(audit_nodes), nodes)
    conn.execute(
        sa.update(audit_head).values(
            size=frontier.size, frontier=json.dumps([h.hex() for h in frontier.hashes])
        )
    )
    return frontier


def changed(field: str, value: Any) -> Any:
    """A plausible different value for a top-level field of an event body."""
    if field == "seq":
        return value + 1
    if field == "time":
        return format_time(parse_time(value) + timedelta(microseconds=1))
    if field == "decision":
        return "deny" if value == "allow" else "allow"
    if isinstance(value, list):
        return [*value, "spiffe://tether.local/agent/mallory"]
    if isinstance(value, dict):
        return {**value, "tampered": True}
    if value is None:
        return "mallory"
    return value + "x"


def edited(text: str, field: str) -> str:
    """``text`` (a canonical body) with ``field`` changed, still canonical JSON."""
    body = json.loads(text)
    assert rfc8785.dumps(body).decode() == text  # the edit changes nothing else
    body[field] = changed(field, body[field])
    return rfc8785.dumps(body).decode()


def changed_column(column: str, row: sa.Row[Any]) -> Any:
    if column == "at":
        return row.at + timedelta(microseconds=1)
    if column == "type":
        return "access.refused" if row.type == "decision" else "decision"
    if column == "subject":
        return None if row.subject is not None else "spiffe://tether.local/agent/mallory"
    if column == "leaf_hash":
        return bytes([row.leaf_hash[0] ^ 1]) + bytes(row.leaf_hash[1:])
    raise AssertionError(column)


def tamper(log: Log, seq: int, where: str, name: str) -> None:
    """Change one field of the body (``where`` "body": columns and leaf hash kept) or one
    column (``where`` "column")."""
    row = log.row(seq)
    if where == "body":
        log.update(seq, body=edited(row.body, name))
    else:
        log.update(seq, **{name: changed_column(name, row)})


EDITS = (*(("body", f) for f in BODY_FIELDS), *(("column", c) for c in COLUMNS))


def build(tether: Tether, clock: Clock) -> tuple[int, int]:
    """The log described in the module docstring; returns the checkpoint sizes."""
    clock.now = datetime.now(UTC)  # so nothing has expired when the CLI sweeps

    def step() -> None:
        clock.advance(milliseconds=7)

    helper = tether.registry.register(ADMIN, spec("helper", kind="copilot", labels={"t": "a"}))
    step()
    planner = tether.registry.register(ADMIN, spec("planner", owner=BOB))
    step()
    grant = tether.grants.add(
        ADMIN, GrantSpec(helper.id, "tools/call", "github/create_issue", reason="triage")
    )
    step()
    tether.grants.add(ADMIN, GrantSpec(planner.id, "tools/call", "jira/create_ticket"))
    step()
    tether.grants.add(ADMIN, GrantSpec(f"user:{BOB}", "tools/call", "jira/*"))
    step()
    request = REQUEST_ID.set("req-0001")
    try:
        tether.authorize(AccessRequest.of("helper", "tools/call", "github/create_issue"))
    finally:
        REQUEST_ID.reset(request)
    step()
    with pytest.raises(Denied):
        tether.authorize(AccessRequest.of("helper", "tools/call", "github/delete_repo"))
    step()
    tether.decide_all(
        [
            AccessRequest.of(
                "planner", "tools/call", "jira/create_ticket", on_behalf_of=f"user:{BOB}"
            ),
            AccessRequest.of("helper", "tools/call", "jira/create_ticket"),
            AccessRequest.of("ghost", "tools/call", "jira/create_ticket"),
        ]
    )
    step()
    with pytest.raises(Forbidden):
        tether.registry.register(Caller.user(BOB), spec("sneaky", owner=ALICE))  # type: ignore[arg-type]
    step()
    tether.tokens.client_credentials(helper, tether.tokens.issuer, None)
    step()
    tether.events.record(
        Entry.of(
            "test.note",
            actor="tester",
            subject=None,
            detail={"float": 1.5, "big": 2**60, "nested": {"list": [1, None, True]}},
        )
    )
    step()
    c1 = tether.checkpoints.make().size
    tether.registry.suspend(ADMIN, "planner", "on leave")
    step()
    tether.events.record(
        Entry.of(
            "test.note",
            actor="tester",
            subject='ünïcödé "quoted" \\ / \u2028 \x01 😀',
            detail={"text": "line\nbreak\ttab"},
        )
    )
    step()
    with pytest.raises(Denied):
        tether.authorize(AccessRequest.of("planner", "tools/call", "jira/create_ticket"))
    step()
    tether.grants.revoke(ADMIN, grant.id, "done")
    step()
    c2 = tether.checkpoints.make().size
    with pytest.raises(Denied):
        tether.authorize(AccessRequest.of("helper", "tools/call", "github/create_issue"))
    step()
    tether.events.record(
        *[Entry.of("test.note", actor="tester", subject="batch", detail={"i": i}) for i in range(3)]
    )
    step()
    tether.registry.register(ADMIN, spec("late"))
    return c1, c2


@pytest.fixture
def log(tether: Tether, clock: Clock, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Log:
    c1, c2 = build(tether, clock)
    with tether.store.engine.connect() as conn:
        saved = {
            table.name: [dict(row._mapping) for row in conn.execute(sa.select(table))]
            for table in AUDIT_TABLES
        }
    roots: dict[int, bytes] = {}
    frontier = Frontier()
    for _, _, text in tether.events.bodies():
        frontier.append(leaf(text))
        roots[frontier.size] = frontier.root()
    built = Log(tether, Cli(capsys), frontier.size, c1, c2, roots, saved, audit_files(tether))
    assert (built.size, c1, c2) == (23, 14, 18), "the log the docstring describes"
    assert built.tether.events.root() == (built.size, roots[built.size])
    report = built.assert_ok()
    assert report["size"] == built.size and report["checkpoints"] >= 2
    return built


# ---- one event changed -------------------------------------------------------------------

# which event each field is tried on: every kind, at and around the checkpoints
TARGETS = (1, 2, 4, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19, 21, 23)


def test_changing_any_field_or_column_of_an_event_names_that_event(log: Log) -> None:
    for i, (where, name) in enumerate((("text", ""), *EDITS)):
        seq = TARGETS[i % len(TARGETS)]
        what = f"{where} {name} of event {seq}"
        if where == "text":  # the stored text itself: one character more
            log.update(seq, body=log.row(seq).body + " ")
        else:
            tamper(log, seq, where, name)
        log.assert_bad(seq, what)
        log.make_does_not_hide(seq, what)
        log.restore()
    log.assert_ok()


def test_changing_index_columns_names_the_event(log: Log) -> None:
    """The columns beside the body: each alone, on every event that has a subject and on
    one that has none."""
    for seq in (1, 14, 16, 23):  # 14 has no subject, 16 an awkward one
        for column in ("at", "type", "subject"):
            tamper(log, seq, "column", column)
            log.assert_bad(seq, f"column {column} of event {seq}")
            log.restore()


@FEW
@given(data=st.data())
def test_any_edit_of_any_event_names_it(log: Log, data: st.DataObject) -> None:
    seq = data.draw(st.integers(1, log.size), label="seq")
    where, name = data.draw(st.sampled_from((("raw", ""), *EDITS)), label="edit")
    try:
        if where == "raw":  # any one character of the stored text replaced
            text = log.row(seq).body
            at = data.draw(st.integers(0, len(text) - 1), label="at")
            char = data.draw(
                st.characters(min_codepoint=1, exclude_categories=("Cs",)).filter(
                    lambda c: c != text[at]
                ),
                label="char",
            )
            log.update(seq, body=text[:at] + char + text[at + 1 :])
        else:
            tamper(log, seq, where, name)
        log.assert_bad(seq, f"{where} {name} of event {seq}")
    finally:
        log.restore()


# ---- events removed ----------------------------------------------------------------------


def test_deleting_an_event_in_the_middle_names_it(log: Log) -> None:
    for seq in (2, log.c1, log.c2 + 1, log.size - 1):
        log.delete(events.c.seq == seq)
        log.assert_bad(seq, f"deleted {seq}")
        log.make_does_not_hide(seq, f"deleted {seq}")
        log.restore()


def test_deleting_an_event_and_renumbering_the_rest_names_it(log: Log) -> None:
    """The gap closed: every later event moved down by one, bodies and hashes kept."""
    seq = 8
    with log.engine.begin() as conn:
        conn.execute(sa.delete(events).where(events.c.seq == seq))
        conn.execute(sa.update(events).where(events.c.seq > seq).values(seq=-events.c.seq))
        conn.execute(sa.update(events).where(events.c.seq < 0).values(seq=-events.c.seq - 1))
    log.assert_bad(seq)
    log.make_does_not_hide(seq)


@pytest.mark.parametrize("after_newest_checkpoint", [True, False])
def test_cutting_the_tail_names_the_first_missing_event(
    log: Log, after_newest_checkpoint: bool
) -> None:
    """The tree head is left alone: it still counts the events that were cut."""
    first = log.c2 + 1 if after_newest_checkpoint else log.c2 - 1
    log.delete(events.c.seq >= first)
    log.assert_bad(first)
    log.make_does_not_hide(first)


def test_cutting_the_tail_and_rewriting_the_tree_head_is_caught_by_a_covering_checkpoint(
    log: Log,
) -> None:
    first = log.c2 - 1
    with log.engine.begin() as conn:
        conn.execute(sa.delete(events).where(events.c.seq >= first))
        frontier = rebuild_tree(conn)
    assert frontier.size == first - 1
    log.assert_bad(first)
    log.make_refuses()


def test_limit_a_tail_cut_after_the_newest_checkpoint_with_the_head_rewritten_is_invisible(
    log: Log,
) -> None:
    """Nothing signed covers those events: only a checkpoint published elsewhere could
    show they existed. (Signing checkpoints often is what keeps this window short.)"""
    with log.engine.begin() as conn:
        conn.execute(sa.delete(events).where(events.c.seq > log.c2))
        rebuild_tree(conn)
    assert log.verify(0)["size"] == log.c2


# ---- events reordered --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["seq numbers", "bodies and leaf hashes"])
@pytest.mark.parametrize(("a", "b"), [(2, 3), (5, 23), (14, 15)])
def test_swapping_two_events_names_the_lower(log: Log, how: str, a: int, b: int) -> None:
    one, other = log.row(a), log.row(b)
    with log.engine.begin() as conn:
        if how == "seq numbers":
            conn.execute(sa.update(events).where(events.c.seq == a).values(seq=-1))
            conn.execute(sa.update(events).where(events.c.seq == b).values(seq=a))
            conn.execute(sa.update(events).where(events.c.seq == -1).values(seq=b))
        else:
            for seq, row in ((a, other), (b, one)):
                conn.execute(
                    sa.update(events)
                    .where(events.c.seq == seq)
                    .values(body=row.body, leaf_hash=row.leaf_hash)
                )
    log.assert_bad(a, how)
    log.make_does_not_hide(a, how)


# ---- rewritten with its hash: only a checkpoint can tell -----------------------------------


@pytest.mark.parametrize(("seq", "blamed"), [(3, 1), (16, 15), (18, 15)])
def test_a_consistent_rewrite_is_blamed_on_the_first_event_after_the_previous_checkpoint(
    log: Log, seq: int, blamed: int
) -> None:
    """Body, leaf hash, every stored subtree and the tree head rewritten to agree: the
    checkpoint covering ``seq`` no longer matches, and the first event after the checkpoint
    before it (1 when there is none) is named, the earliest the change can be."""
    assert blamed == (1 if seq <= log.c1 else log.c1 + 1)
    log.rewrite(seq, edited(log.row(seq).body, "detail"))
    report = log.assert_bad(blamed)
    assert any(f"checkpoint {log.c1 if seq <= log.c1 else log.c2}" in p for p in report["problems"])
    log.make_refuses()


def test_limit_a_consistent_rewrite_after_the_newest_checkpoint_is_invisible(log: Log) -> None:
    """The same rewrite of an event no checkpoint covers yet cannot be told from the truth."""
    log.rewrite(log.c2 + 2, edited(log.row(log.c2 + 2).body, "decision"))
    log.verify(0)


# ---- checkpoints -------------------------------------------------------------------------


def _forge(log: Log, key: Ed25519PrivateKey, size: int, root: bytes) -> str:
    origin = log.tether.checkpoints.origin
    vkey = verifier_key(origin, key)
    with log.engine.begin() as conn:
        conn.execute(
            sa.insert(audit_checkpoints).values(
                size=size,
                root=root,
                note=sign_checkpoint(Checkpoint(origin, size, root), origin, key),
                verifier_key=vkey,
                signed_at=datetime.now(UTC),
            )
        )
    return vkey


def _edit_checkpoint(log: Log, of_size: int, **values: Any) -> None:
    with log.engine.begin() as conn:
        conn.execute(
            sa.update(audit_checkpoints).where(audit_checkpoints.c.size == of_size).values(**values)
        )


def _note(log: Log, size: int) -> str:
    with log.engine.connect() as conn:
        return str(
            conn.execute(
                sa.select(audit_checkpoints.c.note).where(audit_checkpoints.c.size == size)
            ).scalar_one()
        )


CHECKPOINT_EDITS: dict[str, Callable[[Log], None]] = {
    "note text": lambda log: _edit_checkpoint(
        log, log.c2, note=_note(log, log.c2).replace(f"\n{log.c2}\n", f"\n{log.c2 + 1}\n")
    ),
    "root column": lambda log: _edit_checkpoint(log, log.c2, root=log.roots[log.c2 + 1]),
    "size column": lambda log: _edit_checkpoint(log, log.c2, size=log.c2 + 1),
    "another key": lambda log: _forge(
        log, Ed25519PrivateKey.generate(), log.size, log.roots[log.size]
    ),
}


@pytest.mark.parametrize("edit", list(CHECKPOINT_EDITS))
def test_a_tampered_or_foreign_checkpoint_fails_verification_and_blocks_signing(
    log: Log, edit: str
) -> None:
    CHECKPOINT_EDITS[edit](log)
    report = log.assert_bad(None, edit)
    assert all("checkpoint" in p for p in report["problems"]), report
    log.make_refuses()


# ---- the stored tree and the keys around it ------------------------------------------------


def test_a_checkpoint_signed_by_a_key_published_in_the_store_is_not_trusted(log: Log) -> None:
    """The attacker rewrites an event under C1 with the whole stored tree, lists their own
    key in ``audit_keys`` and signs a checkpoint of the rewritten tree with it: neither
    verification nor make() trusts a key read from the store it protects."""
    log.rewrite(3, edited(log.row(3).body, "detail"))  # under C1
    evil = Ed25519PrivateKey.generate()
    vkey = _forge(log, evil, *log.tether.events.root())
    with log.engine.begin() as conn:
        conn.execute(sa.insert(audit_keys).values(verifier_key=vkey, created_at=datetime.now(UTC)))
    log.assert_bad(1)
    log.make_refuses()
    log.tether.events.record(Entry.of("test.note", actor="tester", subject="after"))
    log.make_refuses()  # nor does it sign the next size on top of the forged one
    log.assert_bad(1)


def _corrupt_node(log: Log, level: int, idx: int) -> None:
    with log.engine.begin() as conn:
        conn.execute(
            sa.update(audit_nodes)
            .where(audit_nodes.c.level == level, audit_nodes.c.idx == idx)
            .values(hash=bytes(32))
        )


def test_a_corrupted_stored_subtree_breaks_the_inclusion_proofs_served_from_it(log: Log) -> None:
    _corrupt_node(log, 1, 0)  # the subtree over events 1 and 2
    code, out, err = log.cli("audit", "prove", "3", "--json")  # its proof uses that subtree
    assert code == 4, (code, out, err)


def test_verify_catches_a_corrupted_stored_subtree(log: Log) -> None:
    """The events are intact, the stored subtree proofs are served from is not: exit 4
    (no event is to blame, so no sequence number need be named)."""
    _corrupt_node(log, 1, 0)
    report = log.verify(4)
    assert any("subtree" in p or "tree" in p for p in report["problems"]), report
    log.make_does_not_hide(report["first_bad_seq"])


def test_a_rewrite_after_the_newest_checkpoint_beside_the_stored_tree_is_named(log: Log) -> None:
    seq = log.c2 + 2
    text = edited(log.row(seq).body, "decision")
    log.update(seq, body=text, leaf_hash=leaf(text))
    report = log.verify(4)
    assert report["first_bad_seq"] is not None, report
    assert log.c2 < report["first_bad_seq"] <= seq, report


@pytest.mark.parametrize(
    ("db_url", "column", "value"),
    [
        pytest.param(
            "sqlite",
            "at",
            "'not a time'",
        ),
        pytest.param(
            "sqlite",
            "leaf_hash",
            "hex(leaf_hash)",
        ),
        pytest.param("sqlite", "body", "CAST(X'FFFE' || body AS BLOB)"),
        pytest.param(
            "postgresql",
            "at",
            "'infinity'",
        ),
    ],
    indirect=["db_url"],
)
def test_a_value_of_the_wrong_kind_is_reported_as_tampering(
    log: Log, column: str, value: str
) -> None:
    """What a typed schema would refuse but the database took anyway (SQLite stores any
    value in any column; PostgreSQL has timestamps no Python datetime can hold)."""
    with log.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE events SET {column} = {value} WHERE seq = 5")
    log.assert_bad(5, column)


# ---- a log of several verification batches ------------------------------------------------

BIG = 20_000  # events: two full verification batches of 8192 and a partial one


def grow(tether: Tether, size: int) -> None:
    at = tether.events.size()
    while at < size:
        n = min(5000, size - at)
        tether.events.record(
            *(
                Entry.of(
                    "test.big", actor=f"agent-{k % 7}", subject=f"agent-{k % 7}", detail={"k": k}
                )
                for k in range(at, at + n)
            )
        )
        at += n


@contextlib.contextmanager
def edited_rows(
    engine: sa.Engine, table: sa.Table, where: sa.ColumnElement[bool], values: dict[str, Any] | None
) -> Iterator[None]:
    """The rows of ``table`` matching ``where`` given ``values`` (or deleted, for None),
    put back as they were afterwards."""
    with engine.begin() as conn:
        saved = [dict(row._mapping) for row in conn.execute(sa.select(table).where(where))]
        assert saved, "nothing to edit"
        if values is None:
            conn.execute(sa.delete(table).where(where))
        else:
            conn.execute(sa.update(table).where(where).values(**values))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(sa.delete(table).where(where))
            conn.execute(sa.insert(table), saved)


def test_tampering_anywhere_in_a_log_of_many_batches_is_named(
    tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification reads the log in batches (streamed with a server-side cursor on
    PostgreSQL) and judges each batch at once, walking event by event from the first batch
    where something differs. An edit in the middle of a batch, on a batch's edge or in
    the last, partial batch is found and named, every event is still counted, and the
    report is the one the event-by-event walk of the whole log gives (which may repeat a
    bad subtree once more, where its checks of the stored subtrees happen to fall)."""
    grow(tether, 10_000)
    tether.checkpoints.make()
    grow(tether, BIG)
    tether.checkpoints.make()
    engine = tether.store.engine
    good = tether.verify_audit()
    assert good.ok and good.size == BIG, good.problems

    def by_event() -> dict[str, Any]:
        with monkeypatch.context() as patch:
            patch.setattr(verify._Walk, "whole", lambda self, rows: False)
            return tether.verify_audit().to_dict()

    assert by_event() == good.to_dict()
    node = audit_nodes.c
    for seq in (12_345, 8192, 8193, BIG - 1):
        with engine.connect() as conn:
            forged = edited(
                conn.execute(sa.select(events.c.body).where(events.c.seq == seq)).scalar_one(),
                "actor",
            )
        edits: list[tuple[str, sa.Table, sa.ColumnElement[bool], dict[str, Any] | None]] = [
            ("body", events, events.c.seq == seq, {"body": forged}),
            ("subject", events, events.c.seq == seq, {"subject": "mallory"}),
            (
                "body and leaf",
                events,
                events.c.seq == seq,
                {"body": forged, "leaf_hash": leaf(forged)},
            ),
            (
                "subtree",
                audit_nodes,
                sa.and_(node.level == 3, node.idx == (seq - 1) >> 3),
                {"hash": bytes(32)},
            ),
            ("gap", events, events.c.seq == seq, None),
        ]
        if engine.dialect.name == "sqlite":  # it keeps text that is not UTF-8
            bad_text = sa.literal_column("CAST(X'FF61' AS TEXT)")
            edits.append(("not UTF-8", events, events.c.seq == seq, {"type": bad_text}))
        for what, table, where, values in edits:
            with edited_rows(engine, table, where, values):
                report = tether.verify_audit()
                found, walked = report.to_dict(), by_event()
            problems, said = found.pop("problems"), walked.pop("problems")
            assert found == walked and problems[0] == said[0], (seq, what, problems, said)
            assert set(problems) <= set(said), (seq, what, problems, said)
            assert not report.ok and report.first_bad_seq is not None, (seq, what)
            assert report.first_bad_seq <= seq, (seq, what, report.problems)
            assert report.size == BIG, (seq, what)  # the events after it are still counted
            if what in ("body", "subject", "gap", "not UTF-8"):
                assert report.first_bad_seq == seq, (seq, what, report.problems)
    assert tether.verify_audit().ok


def test_verification_keeps_few_quoted_columns_and_still_checks_them(
    tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON of subjects and types is kept between batches only up to a bound (memory
    stays bounded whatever the log holds); past it, it is made again and still checked."""
    monkeypatch.setattr(verify, "_QUOTED", 3)
    grow(tether, 9000)  # two batches, seven subjects
    assert tether.verify_audit().ok
    engine = tether.store.engine
    with edited_rows(engine, events, events.c.seq == 8500, {"subject": "agent-1x"}):
        report = tether.verify_audit()
    assert report.first_bad_seq == 8500, report.problems
