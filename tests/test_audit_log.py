"""The audit log: leaves, the stored tree and its proofs, checkpoints (C2SP notes),
queries, the API and CLI faces, request IDs, and the migration of older event records."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import rfc8785
import sqlalchemy as sa
from alembic import command
from conftest import Cli, Clock, initialised, served, spec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from helpers.people import person_header
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tether.audit import merkle
from tether.audit.checkpoints import Checkpointer, CheckpointRecord
from tether.audit.note import Checkpoint, Verifier, sign_checkpoint, verifier_key
from tether.audit.record import (
    Entry,
    canonical,
    clean,
    encode,
    finish,
    format_time,
    prepare,
)
from tether.audit.terms import EventTerms
from tether.audit.tree import Frontier, blocks, consistency_ranges, fold, inclusion_ranges
from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.errors import VerificationFailed
from tether.policy.decision import AccessRequest
from tether.store.engine import _alembic_config

ISSUER = "https://idp.example.com"
ADMIN = Caller.admin()


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(n)]


def _range_hash(leaves: list[bytes]) -> Callable[[tuple[int, int]], bytes]:
    return lambda r: merkle.root(leaves[r[0] : r[1]])


# ---- the tree as stored: planners and the frontier ---------------------------------------


@pytest.mark.parametrize("size", range(1, 70))
def test_range_planners_give_the_reference_proofs(size: int) -> None:
    leaves = _leaves(size)
    hashed = _range_hash(leaves)
    for index in range(size):
        planned = [hashed(r) for r in inclusion_ranges(index, size)]
        assert planned == merkle.inclusion_proof(index, leaves)
    for size1 in range(1, size):
        planned = [hashed(r) for r in consistency_ranges(size1, size)]
        assert planned == merkle.consistency_proof(size1, leaves)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 255, 256, 257])
def test_the_frontier_emits_every_perfect_subtree_and_the_root(size: int) -> None:
    leaves = _leaves(size)
    frontier = Frontier()
    stored: dict[tuple[int, int], bytes] = {}
    for leaf in leaves:
        for level, idx, value in frontier.append(leaf):
            stored[(level, idx)] = value
        assert frontier.root() == merkle.root(leaves[: frontier.size])
    for (level, idx), value in stored.items():
        assert value == merkle.root(leaves[idx << level : (idx + 1) << level])
    # any range the proofs ask for folds from stored subtrees alone
    for lo, hi in [(0, size), *inclusion_ranges(size // 2, size)]:
        assert fold([stored[b] for b in blocks(lo, hi)]) == merkle.root(leaves[lo:hi])
    with pytest.raises(ValueError):
        Frontier(size, frontier.hashes[:-1] if frontier.hashes else [b"x"])


# ---- leaves: canonical bodies ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_cleaned_values_survive_json_and_canonicalisation_unchanged(value: Any) -> None:
    cleaned = clean(value)
    data = canonical(cleaned)  # never raises: NaN, huge ints, lone surrogates are cleaned
    assert canonical(json.loads(data)) == data
    assert json.loads(json.dumps(cleaned)) == json.loads(data) or data == canonical(cleaned)
    assert "\x00" not in data.decode("utf-8")


@settings(max_examples=1000, deadline=None)
@given(json_values)
def test_the_fast_canonical_path_is_byte_for_byte_rfc8785(value: Any) -> None:
    cleaned = clean(value)
    assert canonical(cleaned) == rfc8785.dumps(cleaned)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\uffff": 2, "a": 3},  # UTF-16 order differs from code points
        {"k": 1.5, "e": 1e21, "n": -0.0},
        {"s": '\u2028\u2029\x7f\x1f\b\f\n\r\t"\\/é'},
        {"i": 2**53 - 1, "j": -(2**53 - 1), "b": [True, False, None]},
    ],
)
def test_canonical_edge_cases_match_rfc8785(value: Any) -> None:
    assert canonical(clean(value)) == rfc8785.dumps(clean(value))


any_text = st.one_of(  # mostly ordinary (the fast path), sometimes not
    st.text(max_size=12),
    st.text(max_size=12),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=6),  # lone surrogates
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "\U0001f600", "\ue000", "x" * 2049]),
)
odd_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([5.0, -0.0, 1e-7, 1e21, 2**53, -(2**60)])
    | any_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(any_text, inner, max_size=4)
        | st.dictionaries(st.integers() | st.booleans(), inner, max_size=2)
    ),
    max_leaves=12,
)
entries = st.builds(
    Entry,
    type=any_text,
    actor=any_text,
    subject=st.none() | any_text,
    chain=st.lists(any_text, max_size=3).map(tuple),
    action=st.none() | any_text,
    resource=st.none() | any_text,
    decision=st.none() | st.sampled_from(["allow", "deny"]),
    reasons=st.lists(any_text, max_size=2).map(tuple),
    request_id=st.none() | any_text,
    detail=st.dictionaries(any_text, odd_values, max_size=4),
)


@settings(max_examples=1000, deadline=None)
@given(entries, st.integers(1, 2**53 - 1))
@example(Entry("t", "a", detail={"\U0001f600": 1, "\ue000": 2}), 1)  # UTF-16 key order
def test_a_prepared_entry_is_byte_for_byte_the_reference_encoding(entry: Entry, seq: int) -> None:
    """The append encodes an entry before it has a place (prepare) and adds the seq and
    time under the lock (finish): the text is exactly the reference encoding, whatever
    the entry holds (floats, lone surrogates, NULs, long strings, odd keys)."""
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    body, text, _ = encode(entry, seq, at)
    prepared = prepare(entry)
    assert finish(prepared, seq, format_time(at)) == text
    assert (prepared.subject, prepared.type) == (body["subject"], body["type"])


def test_the_leaf_is_the_canonical_json_of_the_exported_line(tether: Tether, capsys) -> None:
    tether.registry.register(ADMIN, spec("helper"))
    tether.events.record(
        Entry.of("probe", actor="admin", subject=None, detail={"z": 1, "a": "é\n\x00"})
    )
    size, _ = tether.events.root()
    lines = tether.events.bodies()
    assert [seq for seq, _, _ in lines] == list(range(1, size + 1))
    for seq, _, line in lines:
        data = line.encode()
        assert rfc8785.dumps(json.loads(line)) == data  # canonical as exported
        _, leaf, _ = tether.events.inclusion(seq)
        assert leaf == hashlib.sha256(b"\x00" + data).digest()  # anyone can recompute it


# ---- store-backed proofs: property --------------------------------------------------------


def _grow(tether: Tether, size: int) -> None:
    have = tether.events.size()
    if have < size:
        entries = [Entry.of("probe", actor="admin", detail={"n": i}) for i in range(have, size)]
        for at in range(0, len(entries), 1000):
            tether.events.record(*entries[at : at + 1000])


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_every_proof_the_log_produces_verifies_and_no_flipped_bit_does(
    tether: Tether, data: st.DataObject
) -> None:
    size = data.draw(st.integers(1, 3000), label="size")
    _grow(tether, size)
    seq = data.draw(st.integers(1, size), label="seq")
    bit = data.draw(st.integers(0, 255), label="bit")
    tree_size, leaf, proof = tether.events.inclusion(seq, size)
    _, root = tether.events.root(size)
    assert tree_size == size
    merkle.verify_inclusion(seq - 1, size, leaf, proof, root)
    with pytest.raises(VerificationFailed):
        merkle.verify_inclusion(seq - 1, size, _flip(leaf, bit), proof, root)
    with pytest.raises(VerificationFailed):
        merkle.verify_inclusion(seq - 1, size, leaf, proof, _flip(root, bit))
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="at")
        bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(VerificationFailed):
            merkle.verify_inclusion(seq - 1, size, leaf, bad, root)
    size1 = data.draw(st.integers(1, size), label="size1")
    _, root1 = tether.events.root(size1)
    consistency = tether.events.consistency(size1, size)
    merkle.verify_consistency(size1, size, root1, root, consistency)
    if consistency:
        at = data.draw(st.integers(0, len(consistency) - 1), label="cat")
        bad = [*consistency[:at], _flip(consistency[at], bit), *consistency[at + 1 :]]
        with pytest.raises(VerificationFailed):
            merkle.verify_consistency(size1, size, root1, root, bad)
    if size1 < size:
        with pytest.raises(VerificationFailed):
            merkle.verify_consistency(size1, size, _flip(root1, bit), root, consistency)


def test_proofs_refuse_sizes_and_events_beyond_the_tree(tether: Tether) -> None:
    _grow(tether, 10)
    size = tether.events.size()
    for bad in (
        lambda: tether.events.inclusion(0),
        lambda: tether.events.inclusion(size + 1),
        lambda: tether.events.inclusion(3, size + 1),
        lambda: tether.events.inclusion(5, 4),
        lambda: tether.events.consistency(5, 4),
        lambda: tether.events.consistency(1, size + 1),
        lambda: tether.events.root(size + 1),
    ):
        with pytest.raises(Exception) as caught:
            bad()
        assert caught.value.__class__.__name__ == "InvalidRequest"


# ---- C2SP notes -----------------------------------------------------------------------------


def _independent_open(note: str, vkey: str) -> tuple[str, int, bytes]:
    """Check a checkpoint note by the C2SP text alone (not through tether.audit.note)."""
    name, key_id_hex, encoded = vkey.split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4].hex() == key_id_hex
    text, signatures = note.split("\n\n", 1)
    line = signatures.rstrip("\n")
    assert line.startswith(f"\u2014 {name} ")
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    assert blob[:4].hex() == key_id_hex
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], (text + "\n").encode())
    origin, size, root = text.split("\n")
    return origin, int(size), base64.b64decode(root)


def test_a_signed_checkpoint_is_a_c2sp_note_any_verifier_can_check() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = Checkpoint("example.org/log", 42, hashlib.sha256(b"r").digest())
    note = sign_checkpoint(checkpoint, "example.org/log", key)
    vkey = verifier_key("example.org/log", key)
    assert re.fullmatch(r"example\.org/log\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}", vkey)
    assert _independent_open(note, vkey) == ("example.org/log", 42, checkpoint.root)
    assert Verifier.parse(vkey).open(note) == checkpoint
    # another key's signature is ignored, and then nothing trusted signed it
    other = Verifier.parse(verifier_key("example.org/log", Ed25519PrivateKey.generate()))
    with pytest.raises(VerificationFailed, match="no signature"):
        other.open(note)
    # any change to the text breaks the signature
    forged = note.replace("\n42\n", "\n43\n")
    with pytest.raises(VerificationFailed, match="bad signature"):
        Verifier.parse(vkey).open(forged)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_malformed_notes_and_keys_fail_as_verification_failures_only(text: str) -> None:
    key = Ed25519PrivateKey.generate()
    good = Verifier.parse(verifier_key("log.example/x", key))
    with pytest.raises(VerificationFailed):
        good.open(text)
    with contextlib.suppress(VerificationFailed):
        Verifier.parse(text)


def test_checkpoints_grow_with_the_log_and_chain_consistently(tether: Tether) -> None:
    first = tether.checkpoints.make()
    assert tether.checkpoints.make() == first  # nothing new: the same checkpoint
    tether.registry.register(ADMIN, spec("helper"))
    second = tether.checkpoints.make()
    assert second.size > first.size
    vkey = tether.checkpoints.verifier_key()
    for made in (first, second):
        origin, size, root = _independent_open(made.note, vkey)
        assert (origin, size, root) == (tether.checkpoints.origin, made.size, made.root)
        assert tether.events.root(made.size)[1] == made.root
    proof = tether.events.consistency(first.size, second.size)
    merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    assert [c.size for c in tether.checkpoints.list()] == [first.size, second.size]


def test_the_audit_key_is_its_own_file_not_the_token_key(tether: Tether) -> None:
    tether.checkpoints.make()
    key_file = tether.checkpoints.key_file
    assert key_file.stat().st_mode & 0o777 == 0o600
    token_keys = {p.read_bytes() for p in (tether.settings.home / "signing").glob("*.pem")}
    assert key_file.read_bytes() not in token_keys
    assert tether.checkpoints.verifier_key() in tether.checkpoints.published_keys()


def test_a_checkpoint_is_made_every_n_events(
    make_settings: Callable[..., Settings], clock: Clock
) -> None:
    settings_ = make_settings(audit={"checkpoint_every": 5, "checkpoint_interval_ms": 60_000})
    Tether.init(settings_)[0].close()
    with Tether.open(settings_) as tether:
        worker = Checkpointer(tether.checkpoints, tether.events, 5, 60.0)
        worker.start()
        try:
            # In steps of 5, each waited for: the checkpointer signs what the log holds when
            # it wakes, so a burst of 12 could be signed at 9 (and 12 - 9 < 5 waits for the
            # interval); step by step, the checkpoints are at 5 and at 10.
            def signed_at_least(size: int) -> CheckpointRecord:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    latest = tether.checkpoints.latest()
                    if latest is not None and latest.size >= size:
                        return latest
                    time.sleep(0.05)
                raise AssertionError(f"no checkpoint of {size} events within 20 s")

            for i in range(12):
                tether.events.record(
                    Entry.of("probe", actor="admin", subject=None, detail={"i": i})
                )
                if i + 1 in (5, 10):
                    signed_at_least(i + 1)
            latest = tether.checkpoints.latest()
            assert latest is not None and latest.size >= 10
        finally:
            worker.stop()


def test_a_checkpoint_is_made_every_t_milliseconds(tether: Tether) -> None:
    worker = Checkpointer(tether.checkpoints, tether.events, 1_000_000, 0.05)
    worker.start()
    try:
        tether.events.record(Entry.of("probe", actor="admin", subject=None))
        size = tether.events.size()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            latest = tether.checkpoints.latest()
            if latest is not None and latest.size == size:
                break
            time.sleep(0.05)
        latest = tether.checkpoints.latest()
        assert latest is not None and latest.size == size
    finally:
        worker.stop()


# ---- queries --------------------------------------------------------------------------------


def _decide(tether: Tether, agent: str, resource: str, user: str | None = None) -> None:
    decision = tether.decide_all(
        [AccessRequest.of(agent, "tools/call", resource, on_behalf_of=user)]
    )
    assert decision


def test_explain_names_the_chain_human_first_with_owners_then_and_now(tether: Tether) -> None:
    from tether.grants import GrantSpec

    tether.registry.register(ADMIN, spec("helper"))
    for principal in ("helper", "user:alice@example.com"):
        tether.grants.add(
            ADMIN, GrantSpec(principal=principal, action="tools/call", resource="github/*")
        )
    _decide(tether, "helper", "github/create_issue", "user:alice@example.com")
    [event] = tether.events.list(type="decision")
    tether.registry.set_owner(ADMIN, "helper", "bob@example.com")
    from tether.audit.queries import explain

    told = explain(tether.events, EventTerms(tether.store), tether.registry, event.seq)
    assert [link["principal"] for link in told["chain"]] == [
        "user:alice@example.com",
        tether.registry.agent_id("helper"),
    ]
    human, agent = told["chain"]
    assert human["kind"] == "human"
    assert (agent["owner_then"], agent["owner_now"]) == ("alice@example.com", "bob@example.com")
    assert told["decision"] == "allow" and told["reasons"]
    assert (told["action"], told["resource"]) == ("tools/call", "github/create_issue")


def test_search_filters_and_pages(tether: Tether) -> None:
    from tether.audit.queries import Filter, search

    tether.registry.register(ADMIN, spec("a1"))
    tether.registry.register(ADMIN, spec("b1", owner="bob@example.com"))
    for i in range(7):
        _decide(tether, "a1", f"fs/f{i}", "user:alice@example.com")
    _decide(tether, "b1", "fs/x", "user:bob@example.com")
    where = Filter.of(tether.registry, agent="a1", decision="deny")
    page, cursor = search(tether.events, EventTerms(tether.store), where, limit=5)
    assert len(page) == 5 and cursor is not None
    rest, end = search(tether.events, EventTerms(tether.store), where, after=cursor, limit=5)
    assert len(rest) == 2 and end is None
    assert {e.resource for e in page + rest} == {f"fs/f{i}" for i in range(7)}
    bob = Filter.of(tether.registry, user="bob@example.com", action="tools/call")
    assert [e.resource for e in search(tether.events, EventTerms(tether.store), bob)[0]] == ["fs/x"]
    registered = Filter.of(tether.registry, agent="b1", type="agent.registered")
    assert len(search(tether.events, EventTerms(tether.store), registered)[0]) == 1
    with pytest.raises(Exception, match="allow or deny"):
        Filter.of(tether.registry, decision="maybe")


# ---- the CLI ---------------------------------------------------------------------------------


def test_the_cli_proves_checkpoints_verifies_and_exports(
    cli_env: Path, capsys, tmp_path: Path
) -> None:
    cli = initialised(Cli(capsys))
    cli.json(
        "agent",
        "register",
        "helper",
        "--owner",
        "alice@example.com",
        "--key-out",
        str(tmp_path / "k"),
    )
    cli("authorize", "--principal", "helper", "--action", "tools/call", "--resource", "x/y")
    made = cli.json("audit", "checkpoint")
    assert set(made) >= {"note", "size", "root", "verifier_key"}
    _origin, size, root = _independent_open(made["note"], made["verifier_key"])
    assert size == made["size"] and base64.b64encode(root).decode() == made["root"]
    proof = cli.json("audit", "prove", "2")
    assert proof["leaf_index"] == 1 and proof["tree_size"] == size
    assert proof["root"] == made["root"]
    merkle.verify_inclusion(
        1,
        size,
        base64.b64decode(proof["leaf_hash"]),
        [base64.b64decode(h) for h in proof["proof"]],
        root,
    )
    older = cli.json("audit", "prove", "1", "--size", "2")
    assert older["tree_size"] == 2
    grown = cli.json("audit", "consistency", "2", str(size))
    assert set(grown) == {"size1", "size2", "root1", "root2", "proof"}
    assert grown["root2"] == made["root"]
    assert cli.json("audit", "verify")["ok"] is True
    out = tmp_path / "audit.jsonl"
    code, _, _ = cli("audit", "export", "--format", "jsonl", "--out", str(out))
    assert code == 0 and out.stat().st_mode & 0o777 == 0o600
    lines = out.read_text().splitlines()
    leaves = [merkle.leaf_hash(line.encode()) for line in lines]
    assert base64.b64encode(merkle.root(leaves[:size])).decode() == made["root"]
    found = cli.json("audit", "search", "--decision", "deny")
    assert [e["resource"] for e in found["events"]] == ["x/y"]
    told = cli.json("audit", "explain", str(found["events"][0]["seq"]))
    assert told["chain"][-1]["principal"].endswith("/agent/helper")
    # bad input: clear errors, exit codes, nothing printed but the error
    for argv, code in (
        (("audit", "prove", "999"), 2),
        (("audit", "consistency", "5", "2"), 2),
        (("audit", "export", "--format", "xml"), 2),
        (("audit", "explain", "999"), 1),
    ):
        got, out, err = cli(*argv)
        assert (got, out) == (code, ""), (argv, got, out, err)
        assert err.startswith("error: ") and "Traceback" not in err


# ---- the HTTP faces --------------------------------------------------------------------------


def _person(idp_key: Ed25519PrivateKey, email: str) -> dict[str, str]:
    return person_header(idp_key, email, issuer=ISSUER)


def test_the_http_api_proves_and_refuses_what_it_must(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with served(make_settings, tmp_path, ISSUER) as up:
        client, admin = up.client, up.admin
        assert client.post("/v1/audit/checkpoint", headers=admin).status_code == 200
        checkpoint = client.get("/v1/audit/checkpoint", headers=admin).json()
        size = checkpoint["size"]
        proof = client.get(f"/v1/audit/proofs/inclusion?seq={size}", headers=admin).json()
        assert proof["root"] == checkpoint["root"] and proof["leaf_index"] == size - 1
        for path in (
            "/v1/audit/proofs/inclusion?seq=0",
            f"/v1/audit/proofs/inclusion?seq={size + 5}",
            f"/v1/audit/proofs/inclusion?seq=1&size={size + 5}",
            "/v1/audit/proofs/consistency?size1=3&size2=1",
            "/v1/audit/proofs/consistency?size1=x&size2=1",
            "/v1/audit/events?decision=maybe",
            "/v1/audit/export?format=xml",
            "/v1/audit/events?limit=0",
        ):
            answer = client.get(path, headers=admin)
            assert answer.status_code == 400, (path, answer.text)
            assert set(answer.json()) == {"error", "error_description"}
        assert client.get("/v1/audit/events/99999", headers=admin).status_code == 404
        # a person who is not an admin reads proofs, not events; the refusal is on record
        alice = _person(up.idp_key, "alice@example.com")
        assert client.get("/v1/audit/checkpoint", headers=alice).status_code == 200
        for method, path in (
            ("GET", "/v1/audit/events"),
            ("GET", "/v1/audit/export?format=jsonl"),
            ("POST", "/v1/audit/verify"),
            ("POST", "/v1/audit/checkpoint"),
        ):
            kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
            assert client.request(method, path, headers=alice, **kwargs).status_code == 403
        refused = up.tether.events.list(type="access.refused")
        assert [e.actor for e in refused][-4:] == ["user:alice@example.com"] * 4
        # no token at all: 401, and on record too
        before = len(up.tether.events.list(type="access.refused"))
        assert client.get("/v1/audit/events").status_code == 401
        [anonymous] = up.tether.events.list(type="access.refused")[before:]
        assert anonymous.actor == "anonymous" and anonymous.decision == "deny"


def test_each_request_id_reaches_the_events_it_causes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with served(make_settings, tmp_path, ISSUER) as up:
        body = {"name": "helper", "owner": "alice@example.com", "public_key": spec("x").public_key}
        answer = up.client.post(
            "/v1/agents", json=body, headers={**up.admin, "X-Request-ID": "req-42.a"}
        )
        assert answer.status_code == 201 and answer.headers["x-request-id"] == "req-42.a"
        [event] = up.tether.events.list(type="agent.registered")
        assert event.request_id == "req-42.a"
        answer = up.client.get("/v1/agents", headers={**up.admin, "X-Request-ID": "bad id\x7f"})
        assert re.fullmatch(r"r-[0-9a-f]{16}", answer.headers["x-request-id"])


def test_a_refused_token_request_is_on_record(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with served(make_settings, tmp_path, ISSUER) as up:
        answer = up.client.post(
            "/oauth2/token",
            data={"grant_type": "password", "username": "x"},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"
        [event] = up.tether.events.list(type="token.refused")
        assert event.decision == "deny" and event.actor == "anonymous"
        assert event.detail == {
            "error": "unsupported_grant_type",
            "grant_type": "password",
            "op": "token",
        }


# ---- migrating an older store -------------------------------------------------------------


def test_events_recorded_before_the_audit_log_become_its_first_leaves(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        for i in range(5):
            conn.execute(
                sa.text(
                    "INSERT INTO events (at, type, actor, subject, reason, detail) "
                    "VALUES (:at, :type, 'admin', :subject, :reason, :detail)"
                ),
                {
                    "at": f"2026-01-0{i + 1} 10:00:00.000000",
                    "type": "agent.registered",
                    "subject": f"spiffe://tether.local/agent/a{i}",
                    "reason": "why" if i % 2 else "",
                    "detail": json.dumps({"owner": "alice@example.com", "i": i}),
                },
            )
    engine.dispose()
    settings_ = Settings.load(tmp_path / "home", db_url=url)
    with Tether.open(settings_, migrate=True) as tether:
        carried = tether.events.list()
        assert [(e.seq, e.subject, e.detail["i"]) for e in carried[:5]] == [
            (i + 1, f"spiffe://tether.local/agent/a{i}", i) for i in range(5)
        ]
        assert carried[1].reasons == ("why",) and carried[0].reasons == ()
        assert carried[0].at.isoformat().startswith("2026-01-01T10:00:00")
        tether.registry.register(ADMIN, spec("new"))
        assert tether.verify_audit().ok
        with pytest.raises(Exception, match="no audit key"):
            tether.checkpoints.make()  # only `tether init` makes the audit key
        tether.checkpoints.ensure_key()
        assert tether.checkpoints.make().size == tether.events.size()


def test_random_histories_always_verify(tether: Tether) -> None:
    rng = random.Random(7)
    for i in range(60):
        kind = rng.choice(["record", "many", "effect"])
        if kind == "record":
            tether.events.record(Entry.of("probe", actor="admin", subject=None, detail={"i": i}))
        elif kind == "many":
            tether.events.record(
                *[
                    Entry.of("probe", actor="admin", detail={"i": i, "j": j})
                    for j in range(rng.randint(1, 9))
                ]
            )
        else:
            tether.registry.register(ADMIN, spec(f"agent{i}"))
        if rng.random() < 0.2:
            tether.checkpoints.make()
    report = tether.verify_audit()
    assert report.ok, report.problems
    assert report.size == tether.events.size()
    assert report.root == tether.events.root()[1]


# ---- SIEM export of a whole demo run ------------------------------------------------------


def test_every_event_of_a_demo_run_exports_as_valid_ocsf_and_parseable_cef(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from ocsf_validate import validate

    from tether.audit.cef import parse_cef
    from tether.demo import seed_demo

    with served(make_settings, tmp_path, ISSUER) as up:
        assert seed_demo(up.tether)
        client, admin = up.client, up.admin
        for resource in ("github/create_issue", "github/delete_repo"):
            body = {
                "subject": {"type": "agent", "id": "github-connector"},
                "action": {"name": "tools/call"},
                "resource": {"type": "tool", "id": resource},
                "context": {"on_behalf_of": "user:alice@example.com"},
            }
            assert client.post("/access/v1/evaluation", json=body, headers=admin).status_code == 200
        client.post("/oauth2/token", data={"grant_type": "client_credentials"})
        client.get("/v1/agents")  # unauthenticated: refused, on record
        killed = client.post(
            "/v1/agents/github-connector/kill", json={"reason": "demo"}, headers=admin
        )
        assert killed.status_code == 200, killed.text
        client.post("/v1/audit/checkpoint", headers=admin)
        size = up.tether.events.size()
        types = {e.type for e in up.tether.events.list()}
        assert {"agent.registered", "decision", "grant.added", "token.refused"} <= types
        assert {"access.refused", "policy.added", "agent.killed", "kill.completed"} <= types
        exported = {
            fmt: client.get(f"/v1/audit/export?format={fmt}", headers=admin).text.splitlines()
            for fmt in ("ocsf", "cef", "jsonl")
        }
    assert all(len(lines) >= size for lines in exported.values())
    for line in exported["ocsf"]:
        event = json.loads(line)
        assert validate(event) == [], (event["unmapped"]["tether"]["seq"], validate(event))
    for line, body in zip(exported["cef"], exported["jsonl"], strict=True):
        header, extensions = parse_cef(line)
        assert header[:4] == ["CEF:0", "Tether", "Tether", "0.1.0"]
        assert header[4] == json.loads(body)["type"]
        assert extensions["externalId"] == str(json.loads(body)["seq"])


def test_a_rolled_back_append_leaves_nothing_on_the_pooled_connection(tether: Tether) -> None:
    """Events queued in a transaction that rolls back are dropped with it; the next
    transaction on the same pooled connection records its own events as ever."""
    for i in range(12):  # more than the pool, so every pooled connection is hit
        with pytest.raises(RuntimeError), tether.store.write() as conn:  # noqa: PT012
            tether.events.append(conn, Entry.of("probe", actor="admin", subject=None))
            raise RuntimeError("the effect failed after its event was queued")
        tether.registry.register(ADMIN, spec(f"after{i}"))
        found = tether.events.list(
            type="agent.registered", subject=tether.registry.agent_id(f"after{i}")
        )
        assert len(found) == 1
    assert tether.events.list(type="probe") == []
    assert tether.verify_audit().ok


def test_anonymous_refusals_are_rate_limited_and_counted() -> None:
    from tether.audit.throttle import Throttle

    now = [0.0]
    throttle = Throttle(rate=2.0, burst=3, clock=lambda: now[0])
    assert [throttle.take() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 1.0  # two more tokens
    assert throttle.take() == 2  # the first one recorded says two were only counted
    assert throttle.take() == 0
    assert throttle.take() is None


def test_a_flood_of_unauthenticated_requests_cannot_grow_the_log_without_bound(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from tether.audit.throttle import Refusals

    now = [0.0]
    with served(make_settings, tmp_path, ISSUER) as up:
        up.tether.refusals.buckets = Refusals(rate=1.0, burst=50, clock=lambda: now[0])
        before = up.tether.events.size()
        for _ in range(260):
            assert up.client.get("/v1/agents").status_code == 401  # refused all the same
        refused = up.tether.events.list(type="access.refused", after=before)
        assert len(refused) == 50 and {e.actor for e in refused} == {"anonymous"}
        now[0] += 1.0
        assert up.client.get("/v1/agents").status_code == 401
        [counted] = up.tether.events.list(type="access.refused", after=refused[-1].seq)
        assert counted.detail["suppressed_before"] == 210


def test_refusals_on_every_face_are_on_record(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with served(make_settings, tmp_path, ISSUER) as up:
        alice = _person(up.idp_key, "alice@example.com")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        cases = [
            ("POST", "/oauth2/introspect", {**form, **alice}, {"data": {"token": "x"}}),
            ("POST", "/oauth2/revoke", form, {"data": {"token": "x"}}),
            ("POST", "/v1/keys/rotate", alice, {}),
            ("POST", "/access/v1/evaluation", alice, {"json": {}}),
        ]
        for method, path, headers, kwargs in cases:
            before = up.tether.events.size()
            answer = up.client.request(method, path, headers=headers, **kwargs)
            assert answer.status_code in (400, 401, 403), (path, answer.text)
            refused = up.tether.events.list(type="access.refused", after=before)
            assert len(refused) == 1, path
            assert refused[0].decision == "deny"


# ---- what an insider with the database (but not the audit key) cannot do -----------------


def _rewrite_event(tether: Tether, seq: int, body_change: tuple[str, str]) -> None:
    """Rewrite event ``seq``'s body and every stored hash above it, as a careful insider
    with write access to the database would (the head too)."""
    from tether.audit.record import stage
    from tether.store import audit_head, audit_nodes, events

    with tether.store.engine.begin() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.seq)).all()
        frontier = Frontier()
        for row in rows:
            body = row.body.replace(*body_change) if row.seq == seq else row.body
            leaf = merkle.leaf_hash(body.encode())
            conn.execute(
                sa.update(events).where(events.c.seq == row.seq).values(body=body, leaf_hash=leaf)
            )
            for level, idx, value in frontier.append(leaf)[1:]:
                conn.execute(
                    sa.update(audit_nodes)
                    .where(audit_nodes.c.level == level, audit_nodes.c.idx == idx)
                    .values(hash=value)
                )
        conn.execute(
            sa.update(audit_head).values(frontier=json.dumps([h.hex() for h in frontier.hashes]))
        )
    assert stage  # (the same staging the log uses; imported to keep the helper honest)


def test_a_rewrite_with_its_hashes_and_without_the_checkpoints_is_still_caught(
    tether: Tether,
) -> None:
    from tether.store import audit_checkpoints

    tether.registry.register(ADMIN, spec("helper"))
    tether.checkpoints.make()
    tether.registry.register(ADMIN, spec("later"))
    signed = tether.checkpoints.make()
    _rewrite_event(tether, 2, ("alice@example.com", "mallory@example.com"))
    with tether.store.engine.begin() as conn:
        conn.execute(sa.delete(audit_checkpoints))  # and the evidence in the store
    # this home kept its last signed checkpoint outside the store
    report = tether.verify_audit()
    assert not report.ok and report.first_bad_seq == 1, report.problems
    with pytest.raises(VerificationFailed, match="removed"):
        tether.checkpoints.make()  # never signs the forged tree
    # an auditor holding the note elsewhere catches it too, from any home
    outsider = tether.verify_audit([tether.checkpoints.verifier_key()], [signed.note])
    assert not outsider.ok and outsider.first_bad_seq == 1


def test_keys_in_the_store_are_never_trusted(tether: Tether) -> None:
    from tether.store import audit_checkpoints, audit_keys

    tether.registry.register(ADMIN, spec("helper"))
    tether.checkpoints.make()
    forger = Ed25519PrivateKey.generate()
    origin = tether.checkpoints.origin
    size, root = tether.events.root()
    note = sign_checkpoint(Checkpoint(origin, size + 5, root), origin, forger)
    with tether.store.engine.begin() as conn:
        conn.execute(
            sa.insert(audit_keys).values(
                verifier_key=verifier_key(origin, forger), created_at=tether.clock()
            )
        )
        conn.execute(
            sa.insert(audit_checkpoints).values(
                size=size + 5,
                root=root,
                note=note,
                verifier_key=verifier_key(origin, forger),
                signed_at=tether.clock(),
            )
        )
    report = tether.verify_audit()
    assert not report.ok and any("untrusted key" in p for p in report.problems)
    with pytest.raises(VerificationFailed):
        tether.checkpoints.make()


def test_a_corrupted_stored_subtree_is_found_and_never_signed(tether: Tether) -> None:
    from tether.store import audit_nodes

    _grow(tether, 40)
    tether.checkpoints.make()
    _grow(tether, 80)
    with tether.store.engine.begin() as conn:  # the subtree over events 49..56
        conn.execute(
            sa.update(audit_nodes)
            .where(audit_nodes.c.level == 3, audit_nodes.c.idx == 6)
            .values(hash=hashlib.sha256(b"forged").digest())
        )
    report = tether.verify_audit()
    assert not report.ok and any("49..56" in p for p in report.problems), report.problems
    _, leaf, proof = tether.events.inclusion(60, 80)
    with pytest.raises(VerificationFailed):  # a proof with it as a sibling fails
        merkle.verify_inclusion(59, 80, leaf, proof, tether.events.root(80)[1])
    # a checkpoint is signed only over the root the events themselves give
    signed = tether.checkpoints.make()
    leaves = [merkle.leaf_hash(body.encode()) for _, _, body in tether.events.bodies()]
    assert signed.root == merkle.root(leaves[: signed.size])


# ---- second review: regressions ------------------------------------------------------------


def test_the_first_checkpoint_recomputes_every_event(tether: Tether) -> None:
    """With no checkpoint yet there is no base to trust: everything is recomputed."""
    _grow(tether, 9)
    _rewrite_event(tether, 3, ('"n":', '"m":'))  # body, leaf and subtrees rewritten alike
    with tether.store.engine.begin() as conn:  # and a stored leaf that no longer matches
        conn.execute(
            sa.text("UPDATE events SET leaf_hash = :h WHERE seq = 5"),
            {"h": hashlib.sha256(b"x").digest()},
        )
    with pytest.raises(VerificationFailed, match="event 5"):
        tether.checkpoints.make()
    assert tether.checkpoints.latest() is None


def test_a_damaged_subtree_before_a_changed_event_is_named_first(tether: Tether) -> None:
    from tether.store import audit_nodes

    _grow(tether, 20)
    with tether.store.engine.begin() as conn:
        conn.execute(
            sa.update(audit_nodes)
            .where(audit_nodes.c.level == 1, audit_nodes.c.idx == 0)
            .values(hash=hashlib.sha256(b"forged").digest())
        )
        conn.execute(sa.text("UPDATE events SET body = body || ' ' WHERE seq = 15"))
    report = tether.verify_audit()
    assert report.first_bad_seq == 1, report.problems


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # only SQLite allows it
def test_a_row_of_the_wrong_kind_makes_checkpointing_refuse_not_crash(tether: Tether) -> None:
    _grow(tether, 6)
    with tether.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET subject = X'00ff' WHERE seq = 4"))
    with pytest.raises(VerificationFailed, match="event 4"):
        tether.checkpoints.make()
    assert tether.verify_audit().first_bad_seq == 4


def test_a_note_with_non_ascii_in_its_signature_is_a_verification_failure() -> None:
    key = Ed25519PrivateKey.generate()
    note = (
        "log.example/x\n1\n" + base64.b64encode(b"r" * 32).decode() + "\n\n\u2014 log.example/x é\n"
    )
    with pytest.raises(VerificationFailed):
        Verifier.parse(verifier_key("log.example/x", key)).open(note)


def test_a_suspended_agents_refused_token_names_the_agent_and_is_never_dropped(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from tether.audit.throttle import Refusals

    with served(make_settings, tmp_path, ISSUER) as up:
        from tether.agent_keys import generate_key_pair

        pair = generate_key_pair()
        body = {"name": "bot", "owner": "alice@example.com", "public_key": pair.public_key}
        assert up.client.post("/v1/agents", json=body, headers=up.admin).status_code == 201
        up.tether.registry.suspend(ADMIN, "bot")
        # per caller since issue 13 item 11: anonymous callers have no room left, but the
        # agent's refusal is in its own bucket
        up.tether.refusals.buckets = Refusals(rate=0.0, burst=1)
        up.tether.refusals.buckets.take("anonymous@testclient")
        agent_id = up.tether.registry.agent_id("bot")
        now = int(time.time())
        assertion = jwt.encode(
            {
                "iss": agent_id,
                "sub": agent_id,
                "aud": f"{up.tether.settings.issuer}/oauth2/token",
                "iat": now,
                "exp": now + 60,
                "jti": "j-1",
            },
            serialization_key(pair.private_pem),
            algorithm="EdDSA",
        )
        answer = up.client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
                "resource": "https://x.example/mcp/a",
            },
        )
        assert answer.status_code == 400 and answer.json()["error"] == "unauthorized_client"
        [refused] = up.tether.events.list(type="token.refused")
        assert (refused.actor, refused.subject) == (agent_id, agent_id)


def serialization_key(pem: str | bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(
        pem.encode() if isinstance(pem, str) else pem, password=None
    )
