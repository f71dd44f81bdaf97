"""Regression tests for issue 13, items 12-14 (engineer ``audit``).

12. ``tether audit verify`` never crashes: a stored value of the wrong kind anywhere in
    the audit tables is tampering (exit 4, naming the first bad sequence number or the
    checkpoint row / tree head / subtree), never a traceback or exit 1.
13. Credential fingerprints are HMAC-SHA256 under a per-installation key kept in
    ``TETHER_HOME`` (0600): stable across scans of one home, different across homes, never
    an unkeyed hash.
14. Control and bidirectional characters are shown as visible escapes in CEF, syslog and
    terminal tables, and a value is never taken for Rich markup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Cli, initialised
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_audit_tamper import Log, log  # noqa: F401  (the tampering fixture)

from tether.audit.cef import parse_cef, to_cef
from tether.audit.export import FORMATS, render
from tether.audit.record import canonical, clean
from tether.audit.sinks import SyslogSink
from tether.cli import output
from tether.config import SinkConfig
from tether.discover.interface import fingerprint
from tether.discover.scan import run_scan

# ---- item 12: values of the wrong kind in the audit tables -------------------------------

AUDIT_COLUMNS = {
    "events": ("seq", "at", "type", "subject", "body", "leaf_hash"),
    "audit_head": ("id", "size", "frontier"),
    "audit_nodes": ("level", "idx", "hash"),
    "audit_checkpoints": ("size", "root", "note", "verifier_key", "signed_at"),
}
PLACE = re.compile(r"checkpoint|tree head|subtree|audit table")


@dataclass(frozen=True)
class Raw:
    """A value given as SQL (what no Python value binds to: text that is not UTF-8)."""

    sql: str


NOT_OBJECTS = ("[]", "[1,2]", '"text"', "null", "1", "true", "{}", '{"seq":1}', "")
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from((0, -1, 1, 2**53, 2**62)),
    st.floats(allow_nan=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.sampled_from(NOT_OBJECTS),
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
    st.sampled_from(
        (Raw("CAST(X'FF' AS TEXT)"), Raw("CAST(X'C328' AS TEXT)"), Raw("X''"), Raw("-0.5"))
    ),
)


def reported_as_tampering(built: Log, what: str) -> dict[str, Any]:
    """``tether audit verify --json``: exit 4 (no traceback, checked by the Cli helper),
    and the report names a place: a sequence number, or the checkpoint, tree head or
    subtree that is wrong."""
    report: dict[str, Any] = built.cli.json("audit", "verify", expect=4)
    assert report["ok"] is False and report["problems"], (what, report)
    named = report["first_bad_seq"] is not None or any(PLACE.search(p) for p in report["problems"])
    assert named, (what, report)
    return report


def _stored(conn: sa.Connection, table: str, column: str, rowid: int) -> Any:
    return conn.exec_driver_sql(  # None: the row moved (its rowid was its key)
        f"SELECT typeof({column}), hex({column}) FROM {table} WHERE rowid = ?", (rowid,)
    ).first()


def corrupt_sqlite(built: Log, table: str, column: str, pick: int, value: Any) -> bool:
    """Set one column of one row (the ``pick``-th, cyclically) to ``value`` as raw SQL
    would; False when SQLite refused (a constraint) or the stored value did not change."""
    with built.engine.begin() as conn:
        rowids = [r[0] for r in conn.exec_driver_sql(f"SELECT rowid FROM {table} ORDER BY 1")]
        rowid = rowids[pick % len(rowids)]
        before = _stored(conn, table, column, rowid)
    sql, params = (value.sql, ()) if isinstance(value, Raw) else ("?", (value,))
    try:
        with built.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE {table} SET {column} = {sql} WHERE rowid = ?", (*params, rowid)
            )
    except sa.exc.IntegrityError:
        return False
    with built.engine.connect() as conn:
        return bool(_stored(conn, table, column, rowid) != before)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_item_12_a_value_of_any_kind_in_any_audit_column_is_tampering(
    log: Log,  # noqa: F811
    data: st.DataObject,
) -> None:
    table = data.draw(st.sampled_from(sorted(AUDIT_COLUMNS)), label="table")
    column = data.draw(st.sampled_from(AUDIT_COLUMNS[table]), label="column")
    pick = data.draw(st.integers(0, 200), label="row")
    value = data.draw(VALUES, label="value")
    try:
        assume(corrupt_sqlite(log, table, column, pick, value))
        reported_as_tampering(log, f"{table}.{column} = {value!r}")
    finally:
        log.restore()


SQLITE_CASES = {
    "seq as text": "UPDATE events SET seq = 'abc' WHERE seq = 5",
    "seq as a fraction": "UPDATE events SET seq = 5.5 WHERE seq = 5",
    "seq as bytes": "UPDATE events SET seq = X'05' WHERE seq = 23",
    "type not UTF-8": "UPDATE events SET type = CAST(X'FF' AS TEXT) WHERE seq = 5",
    "subject not UTF-8": "UPDATE events SET subject = CAST(X'C328' AS TEXT) WHERE seq = 5",
    "body not an object": "UPDATE events SET body = '[1]' WHERE seq = 5",
    "body NULL-like": "UPDATE events SET body = X'' WHERE seq = 5",
    "head size as text": "UPDATE audit_head SET size = 'many'",
    "head size as a fraction": "UPDATE audit_head SET size = 23.5",
    "head frontier not JSON": "UPDATE audit_head SET frontier = X'FF'",
    "head frontier not UTF-8": "UPDATE audit_head SET frontier = CAST(X'FF' AS TEXT)",
    "node hash as text": "UPDATE audit_nodes SET hash = 'abc' WHERE level = 1 AND idx = 0",
    "node hash as a number": "UPDATE audit_nodes SET hash = 7 WHERE level = 1 AND idx = 0",
    "node level as text": "UPDATE audit_nodes SET level = 'x' WHERE level = 1 AND idx = 0",
    "checkpoint size as text": "UPDATE audit_checkpoints SET size = 'x' WHERE size = 14",
    "checkpoint root as text": "UPDATE audit_checkpoints SET root = 'x' WHERE size = 14",
    "checkpoint root short": "UPDATE audit_checkpoints SET root = X'00' WHERE size = 14",
    "checkpoint note as bytes": "UPDATE audit_checkpoints SET note = X'00' WHERE size = 14",
    "checkpoint note not UTF-8": (
        "UPDATE audit_checkpoints SET note = CAST(X'FF' AS TEXT) WHERE size = 14"
    ),
    "checkpoint key as a number": ("UPDATE audit_checkpoints SET verifier_key = 5 WHERE size = 14"),
    "checkpoint time as text": (
        "UPDATE audit_checkpoints SET signed_at = 'yesterday' WHERE size = 14"
    ),
    "checkpoint time as a number": "UPDATE audit_checkpoints SET signed_at = 1.5 WHERE size = 18",
    "checkpoint key empty": "UPDATE audit_checkpoints SET verifier_key = '' WHERE size = 14",
    "head moved": f"UPDATE audit_head SET id = {2**62}",
}

PG_CASES = {
    "seq negative": "UPDATE events SET seq = -5 WHERE seq = 5",
    "seq huge": f"UPDATE events SET seq = {2**62} WHERE seq = 23",
    "leaf hash short": "UPDATE events SET leaf_hash = '\\x00' WHERE seq = 5",
    "body not an object": "UPDATE events SET body = '\"text\"' WHERE seq = 5",
    "at infinite": "UPDATE events SET at = '-infinity' WHERE seq = 5",
    "head size negative": "UPDATE audit_head SET size = -1",
    "head size huge": f"UPDATE audit_head SET size = {2**62}",
    "head frontier not a list": "UPDATE audit_head SET frontier = '{\"a\": 1}'",
    "node hash short": "UPDATE audit_nodes SET hash = '\\x0102' WHERE level = 1 AND idx = 0",
    "node level negative": "UPDATE audit_nodes SET level = -1 WHERE level = 1 AND idx = 0",
    "checkpoint root short": "UPDATE audit_checkpoints SET root = '\\x00' WHERE size = 14",
    "checkpoint size negative": "UPDATE audit_checkpoints SET size = -14 WHERE size = 14",
    "checkpoint time infinite": (
        "UPDATE audit_checkpoints SET signed_at = 'infinity' WHERE size = 18"
    ),
    "checkpoint root NULL": (
        "ALTER TABLE audit_checkpoints ALTER COLUMN root DROP NOT NULL; "
        "UPDATE audit_checkpoints SET root = NULL WHERE size = 14"
    ),
    "checkpoint note NULL": (
        "ALTER TABLE audit_checkpoints ALTER COLUMN note DROP NOT NULL; "
        "UPDATE audit_checkpoints SET note = NULL WHERE size = 18"
    ),
    "leaf hash NULL": (
        "ALTER TABLE events ALTER COLUMN leaf_hash DROP NOT NULL; "
        "UPDATE events SET leaf_hash = NULL WHERE seq = 5"
    ),
    "head size NULL": (
        "ALTER TABLE audit_head ALTER COLUMN size DROP NOT NULL; UPDATE audit_head SET size = NULL"
    ),
    "seq as text": (
        "ALTER TABLE events ALTER COLUMN seq TYPE text; UPDATE events SET seq = 'five' WHERE seq = '5'"
    ),
    "checkpoint size as text": (
        "ALTER TABLE audit_checkpoints ALTER COLUMN size TYPE text; "
        "UPDATE audit_checkpoints SET size = 'x' WHERE size = '14'"
    ),
    "node hash as text": (
        "ALTER TABLE audit_nodes ALTER COLUMN hash TYPE text; "
        "UPDATE audit_nodes SET hash = 'abc' WHERE level = 1 AND idx = 0"
    ),
}


@pytest.mark.parametrize(
    ("db_url", "sql"),
    [pytest.param("sqlite", sql, id=f"sqlite-{case}") for case, sql in SQLITE_CASES.items()]
    + [pytest.param("postgresql", sql, id=f"pg-{case}") for case, sql in PG_CASES.items()],
    indirect=["db_url"],
)
def test_item_12_values_a_typed_schema_would_refuse_are_tampering(
    log: Log,  # noqa: F811
    sql: str,
) -> None:
    with log.engine.begin() as conn:
        for statement in sql.split("; "):
            conn.exec_driver_sql(statement)
    reported_as_tampering(log, sql)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_item_12_a_tampered_newest_checkpoint_row_blocks_signing_and_proofs_cleanly(
    log: Log,  # noqa: F811
) -> None:
    with log.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE audit_checkpoints SET root = 'x' WHERE size = {log.c2}")
    for argv in (("audit", "checkpoint"), ("audit", "prove", "3")):
        code, out, err = log.cli(*argv)
        assert code == 4 and "Traceback" not in out + err, (argv, code, out, err)
        assert f"checkpoint {log.c2} was changed" in err, err
    log.make_refuses()


# ---- item 13: keyed discovery fingerprints ----------------------------------------------

PLANTED = "sk-proj-" + "Q7f2LmX9" * 12 + "T3BlbkFJ" + "Zr4Wd8Kp" * 5


def unkeyed(secret: str) -> set[str]:
    """What an offline guesser could compute from a guess: every plain hash, as shown."""
    data = secret.encode()
    digests = [
        hashlib.new(name, data).hexdigest()
        for name in sorted(hashlib.algorithms_guaranteed)
        if not name.startswith("shake")
    ]
    return {d[:n] for d in digests for n in (12, 16, len(d))}


def _scan_prints(cli: Cli, tree: Path) -> tuple[set[str], str]:
    code, out, err = cli("discover", "scan", str(tree), "--json")
    assert code == 0, (out, err)
    done = json.loads(out)
    return {c["fingerprint"] for f in done["findings"] for c in f["credentials"]}, out + err


@pytest.mark.slow
def test_item_13_fingerprints_are_keyed_per_installation_and_stable_within_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "estate"
    tree.mkdir()
    (tree / ".env").write_text(f"OPENAI_API_KEY={PLANTED}\n", encoding="utf-8")
    monkeypatch.delenv("TETHER_URL", raising=False)
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    prints: dict[str, set[str]] = {}
    for name in ("one", "two"):
        home = tmp_path / name
        monkeypatch.setenv("TETHER_HOME", str(home))
        monkeypatch.setenv("TETHER_DB", f"sqlite:///{tmp_path / name}.db")
        cli = initialised(Cli(capsys))
        key_file = home / "discovery.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # made at init, private
        key = bytes.fromhex(key_file.read_text(encoding="ascii"))
        first, said = _scan_prints(cli, tree)
        again, said_again = _scan_prints(cli, tree)
        mine = hmac.new(key, PLANTED.encode(), hashlib.sha256).hexdigest()[:12]
        assert first == again == {mine}  # the same secret, the same print, scan after scan
        assert key.hex() not in said + said_again and PLANTED not in said + said_again
        prints[name] = first
    assert prints["one"] != prints["two"]  # another installation, another print
    assert not (prints["one"] | prints["two"]) & unkeyed(PLANTED)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_item_13_a_home_without_a_key_gets_one_on_first_scan(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A home initialised before keyed fingerprints: the first scan makes the key (0600)
    and later scans keep it."""
    cli = initialised(Cli(capsys))
    (cli_env / "discovery.key").unlink()
    tree = tmp_path / "estate"
    tree.mkdir()
    (tree / ".env").write_text(f"OPENAI_API_KEY={PLANTED}\n", encoding="utf-8")
    first, _ = _scan_prints(cli, tree)
    key_file = cli_env / "discovery.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text(encoding="ascii"))
    assert first == {hmac.new(key, PLANTED.encode(), hashlib.sha256).hexdigest()[:12]}
    assert _scan_prints(cli, tree)[0] == first


@pytest.mark.slow
def test_item_13_a_scan_without_an_installation_key_is_never_unkeyed(tmp_path: Path) -> None:
    """The library without a key (and the CLI without a home) keys with a key of its own."""
    tree = tmp_path / "estate"
    tree.mkdir()
    (tree / ".env").write_text(f"OPENAI_API_KEY={PLANTED}\n", encoding="utf-8")
    found = {c.fingerprint for f in run_scan([tree]).findings for c in f.credentials}
    assert found == {fingerprint(PLANTED)} and not found & unkeyed(PLANTED)
    keyed = {c.fingerprint for f in run_scan([tree], key=b"k" * 32).findings for c in f.credentials}
    assert keyed == {hmac.new(b"k" * 32, PLANTED.encode(), hashlib.sha256).hexdigest()[:12]}


# ---- item 14: control and bidirectional characters are shown, never obeyed ---------------

# What must never reach a reader raw (restated here, not imported): the Cc controls (C0,
# DEL, C1), lone surrogates, and the bidirectional marks, embeddings, overrides, isolates
# and the LINE and PARAGRAPH SEPARATORs.
BIDI = "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
UNSAFE = frozenset(
    c for c in map(chr, range(0x10000)) if unicodedata.category(c) in ("Cc", "Cs") or c in BIDI
)
TROJAN = "\u202e\u2066\u2069\u200f\u061c\x1b[31m\x85\x9b\x07\r\n\t\x00\u2028\x7f"
SHOWN = st.text(
    st.one_of(st.sampled_from(sorted(UNSAFE)), st.sampled_from("[]/=|\\ :"), st.characters()),
    max_size=24,
)


def clean_lines(text: str) -> bool:
    """No line of ``text`` holds a control or bidirectional character (TAB aside: Rich
    expands it, and the tables hold none)."""
    return not any(c in UNSAFE for line in text.split("\n") for c in line)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    chain = [draw(SHOWN.map("user:".__add__)), draw(SHOWN.map("spiffe://t/agent/".__add__))]
    event = {
        "action": draw(SHOWN),
        "actor": chain[-1],
        "chain": chain,
        "decision": draw(st.sampled_from([None, "allow", "deny"])),
        "detail": draw(st.dictionaries(SHOWN, SHOWN, max_size=2)),
        "reasons": draw(st.lists(SHOWN, max_size=2)),
        "request_id": draw(st.none() | SHOWN),
        "resource": draw(SHOWN),
        "seq": 7,
        "subject": draw(st.none() | SHOWN),
        "time": "2026-01-02T03:04:05.000006Z",
        "type": draw(st.sampled_from(["decision", "agent.registered"]) | SHOWN),
    }
    cleaned: dict[str, Any] = clean(event)
    return cleaned


@settings(max_examples=300, deadline=None)
@given(event=events(), version=SHOWN, host=SHOWN)
def test_item_14_cef_and_syslog_lines_show_every_control_and_bidi_character_escaped(
    event: dict[str, Any], version: str, host: str
) -> None:
    line = to_cef(event, version=version)
    assert clean_lines(line) and "\n" not in line, line
    header, ext = parse_cef(line)  # still a valid CEF line: the escapes are its text
    assert header[0] == "CEF:0" and ext["externalId"] == "7"
    sink = SyslogSink(
        SinkConfig(name="s", kind="syslog", host="127.0.0.1", port=514), hostname=host
    )
    body = canonical(event).decode()
    for format in FORMATS:
        message = sink.message(event, render(body, format, version=version))
        assert clean_lines(message) and "\n" not in message, (format, message)
        if format != "cef":  # a JSON line escaped so stays the same JSON
            shown = message.removeprefix(sink.message(event, ""))
            assert json.loads(shown) == json.loads(render(body, format, version=version))


def test_item_14_a_trojan_source_value_is_shown_escaped_in_cef() -> None:
    event = clean(
        {
            "action": "tools/call",
            "actor": "admin",
            "chain": ["admin"],
            "decision": "deny",
            "detail": {},
            "reasons": [f"no grant{TROJAN}"],
            "request_id": None,
            "resource": f"github/{TROJAN}",
            "seq": 1,
            "subject": None,
            "time": "2026-01-02T03:04:05.000006Z",
            "type": "decision",
        }
    )
    _, ext = parse_cef(to_cef(event, version="1"))
    assert ext["reason"].startswith("no grant\\u202e\\u2066\\u2069\\u200f\\u061c\\u001b[31m")
    # (NUL is "\\x00" already in the event: the log keeps no NUL)
    assert "\\u0085\\u009b\\u0007\r\n\\u0009\\x00\\u2028\\u007f" in ext["cs1"]


def _agent(text: str) -> dict[str, Any]:
    return {
        "id": f"spiffe://t/agent/{text}",
        "name": text,
        "kind": text,
        "owner": text or None,
        "state": text or "active",
        "purpose": text,
        "parent": None,
        "labels": {text: text},
        "created_at": "2026-01-02T03:04:05Z",
        "created_by": text,
        "expires_at": None,
        "public_key": text,
    }


def _grant(text: str) -> dict[str, Any]:
    return {
        "id": text,
        "principal": text,
        "action": text,
        "resource": text,
        "expires_at": None,
        "last_used": None,
        "broad": True,
        "suggestion": text,
        "condition": text,
    }


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=SHOWN)
def test_item_14_terminal_tables_show_every_control_and_bidi_character_escaped(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    output.agent_table([_agent(text)])
    output.agent_detail(_agent(text), {text: text})
    output.grant_table([_grant(text)])
    output.console.print(text)  # a value printed on its own (line breaks kept)
    output.error({"error_description": text}, as_json=False)
    out, err = capsys.readouterr()
    assert clean_lines(out) and clean_lines(err), (out, err)


@pytest.mark.parametrize(
    "value",
    ["[red]x[/red]", "[link=https://evil.example/]click[/link]", "[bold", "\\[x]", "[/]"],
)
def test_item_14_a_value_is_never_taken_for_rich_markup(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output.agent_table([_agent(value)])
    output.grant_table([_grant(value)])
    output.error({"error_description": value}, as_json=False)
    out, err = capsys.readouterr()
    assert out.count(value) >= 7 and value in err, (out, err)
    assert "\x1b]8;" not in out + err  # no hyperlink escape


def test_item_14_a_trojan_source_value_is_shown_escaped_in_a_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output.agent_detail(_agent(f"helper{TROJAN}"))
    out, _ = capsys.readouterr()
    shown = "helper" + "".join(c if c in "[31m" else f"\\u{ord(c):04x}" for c in TROJAN)
    assert shown in out.replace("\n", "").replace(" ", ""), out
    assert clean_lines(out), out
