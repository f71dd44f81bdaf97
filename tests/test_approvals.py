"""The approvals service: a held call's approval is asked once per call (retries reuse
it), decided by the agent's owner or an admin (another owner: 404, an owner for an admin
approval: 403, both recorded), decided only while pending and unexpired, used exactly
once (also by racing processes on PostgreSQL), and never puts a secret argument in the
audit log. The webhook is told of each new pending approval, never of the exact
arguments."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.approvals import Approval, call_digest, redact_arguments
from tether.approvals.webhook import Webhook
from tether.audit.record import Entry
from tether.callers import Caller
from tether.core import Tether
from tether.errors import Forbidden, IllegalTransition, InvalidRequest, NotFound
from tether.metrics import Metrics
from tether.model import Email

ADMIN = Caller.admin()
ALICE = Caller.user(Email("alice@example.com"))
BOB = Caller.user(Email("bob@example.com"))
SECRET = "sk-ant-api03-" + "Zq8xW2nR5tY7uI9oP1aS3dF6gH4jK0lM" * 2 + "-AAAAAA"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def held(tether: Tether) -> tuple[Tether, str]:
    tether.registry.register(ADMIN, spec("helper"))  # owned by alice
    tether.registry.register(ADMIN, spec("other", owner="bob@example.com"))
    return tether, tether.registry.agent_id("helper")


def _ask(tether: Tether, agent: str, approver: str = "owner", **args: Any) -> Approval:
    return tether.approvals.request(
        chain=("user:carol@example.com", agent),
        agent=agent,
        action="tools/call",
        resource="fs/write_file",
        args=args or {"path": "/srv/reports/q1.txt", "token": SECRET},
        reasons=("grant:g_1 needs approval by the owner",),
        approver=approver,
    )


def _events(tether: Tether, kind: str) -> list[Any]:
    tether.refusals.flush()
    return tether.events.list(type=kind)


def test_a_held_call_gets_one_pending_approval_and_retries_reuse_it(held) -> None:
    tether, agent = held
    first = _ask(tether, agent)
    again = _ask(tether, agent)
    assert first.id == again.id and first.state == "pending"
    assert first.id.startswith("ap_") and len(first.digest) == 64
    other = _ask(tether, agent, path="/srv/reports/q2.txt")  # changed arguments: a new one
    assert other.id != first.id and other.digest != first.digest
    requested = _events(tether, "approval.requested")
    assert [e.detail["id"] for e in requested] == [first.id, other.id]
    event = requested[0]
    assert event.actor == agent and event.chain == ("user:carol@example.com", agent)
    assert event.detail["digest"] == first.digest
    assert event.detail["redacted_arguments"]["path"] == "/srv/reports/q1.txt"
    assert event.detail["redacted_arguments"]["token"].startswith("[redacted:")
    # the approver sees the exact arguments; the log never holds the secret
    assert tether.approvals.get(ALICE, first.id).to_dict(exact=True)["arguments"]["token"] == SECRET
    assert SECRET not in "".join(body for _, _, body in tether.events.bodies())


def test_concurrent_retries_of_one_call_share_one_approval(held) -> None:
    tether, agent = held
    barrier = threading.Barrier(6)
    ids: list[str] = []

    def ask() -> None:
        barrier.wait()
        ids.append(_ask(tether, agent).id)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 6 and len(set(ids)) == 1
    assert len(_events(tether, "approval.requested")) == 1


def test_the_owner_approves_and_the_approval_is_used_exactly_once(held) -> None:
    tether, agent = held
    asked = _ask(tether, agent)
    assert tether.approvals.granted(asked.digest) is None  # pending: nothing to use yet
    approved = tether.approvals.approve(ALICE, asked.id, "looks right")
    assert approved.state == "approved" and approved.decided_by == "user:alice@example.com"
    assert tether.approvals.granted(asked.digest) is not None
    with tether.store.write() as conn:
        assert tether.approvals.consume(conn, asked.id, "0" * 64) is False  # another call
        assert tether.approvals.consume(conn, asked.id, asked.digest) is True
    with tether.store.write() as conn:
        assert tether.approvals.consume(conn, asked.id, asked.digest) is False
    assert tether.approvals.granted(asked.digest) is None
    assert tether.approvals.get(ADMIN, asked.id).state == "used"
    [decided] = _events(tether, "approval.approved")
    assert decided.actor == "user:alice@example.com" and decided.reasons == ("looks right",)
    [used] = _events(tether, "approval.used")
    assert used.detail == {"id": asked.id, "digest": asked.digest}
    # a used approval cannot be decided again
    with pytest.raises(IllegalTransition, match="is used"):
        tether.approvals.approve(ALICE, asked.id)
    # the same call again is a new approval
    assert _ask(tether, agent).id != asked.id


def test_a_consume_that_rolls_back_leaves_the_approval_usable(held) -> None:
    tether, agent = held
    asked = _ask(tether, agent)
    tether.approvals.approve(ALICE, asked.id)

    def fail_after_consuming() -> None:
        with tether.store.write() as conn:
            assert tether.approvals.consume(conn, asked.id, asked.digest)
            raise RuntimeError("the decision's record failed")

    with pytest.raises(RuntimeError):
        fail_after_consuming()
    assert tether.approvals.granted(asked.digest) is not None


def test_another_owner_gets_not_found_and_is_recorded(held) -> None:
    tether, agent = held
    asked = _ask(tether, agent)
    for attempt in (tether.approvals.approve, tether.approvals.deny):
        with pytest.raises(NotFound, match=f"no approval {asked.id}"):
            attempt(BOB, asked.id, "")
    with pytest.raises(NotFound):
        tether.approvals.get(BOB, asked.id)
    refused = _events(tether, "approval.refused")
    assert [(e.actor, e.subject, e.decision) for e in refused] == [
        ("user:bob@example.com", asked.id, "deny")
    ] * 3
    assert tether.approvals.get(ADMIN, asked.id).state == "pending"
    # an unknown or malformed id is "not found" too, and tells nothing
    with pytest.raises(NotFound):
        tether.approvals.approve(ALICE, "ap_" + "0" * 16)
    with pytest.raises(NotFound):
        tether.approvals.approve(ALICE, "../../etc")


def test_an_admin_approval_is_for_admins_only(held) -> None:
    tether, agent = held
    asked = _ask(tether, agent, approver="admin")
    with pytest.raises(Forbidden, match="only an admin"):
        tether.approvals.approve(ALICE, asked.id)
    [refused] = _events(tether, "approval.refused")
    assert refused.actor == "user:alice@example.com" and "only an admin" in refused.reasons[0]
    assert tether.approvals.approve(ADMIN, asked.id).state == "approved"
    with pytest.raises(InvalidRequest):
        _ask(tether, agent, approver="anyone")


def test_a_denied_approval_stays_denied(held) -> None:
    tether, agent = held
    asked = _ask(tether, agent)
    denied = tether.approvals.deny(ALICE, asked.id, "not this file")
    assert denied.state == "denied"
    with pytest.raises(IllegalTransition, match="is denied"):
        tether.approvals.approve(ADMIN, asked.id)
    with pytest.raises(IllegalTransition, match="is denied"):
        tether.approvals.deny(ADMIN, asked.id)
    assert tether.approvals.granted(asked.digest) is None
    with tether.store.write() as conn:
        assert not tether.approvals.consume(conn, asked.id, asked.digest)
    [event] = _events(tether, "approval.denied")
    assert event.actor == "user:alice@example.com" and event.reasons == ("not this file",)


def test_expired_approvals_cannot_be_decided_or_used(held, clock: Clock) -> None:
    tether, agent = held
    ttl = tether.settings.guard.approval_ttl
    late = _ask(tether, agent)
    clock.advance(seconds=ttl.total_seconds())
    assert tether.approvals.state(late.id) == "expired"
    with pytest.raises(IllegalTransition, match="is expired"):
        tether.approvals.approve(ALICE, late.id)
    # a new request for the same call after expiry is a new approval
    fresh = _ask(tether, agent)
    assert fresh.id != late.id
    tether.approvals.approve(ALICE, fresh.id)
    clock.advance(seconds=ttl.total_seconds() - 1)
    assert tether.approvals.granted(fresh.digest) is not None
    clock.advance(seconds=1)  # approved, but not used in time
    assert tether.approvals.granted(fresh.digest) is None
    with tether.store.write() as conn:
        assert not tether.approvals.consume(conn, fresh.id, fresh.digest)
    assert [a.id for a in tether.approvals.list(ADMIN, state="expired")] == [fresh.id, late.id]
    assert tether.approvals.list(ADMIN, state="pending") == []


def test_owners_list_their_agents_approvals_admins_all(held) -> None:
    tether, agent = held
    mine = _ask(tether, agent)
    theirs = _ask(tether, tether.registry.agent_id("other"))
    assert [a.id for a in tether.approvals.list(ALICE)] == [mine.id]
    assert [a.id for a in tether.approvals.list(BOB)] == [theirs.id]
    assert {a.id for a in tether.approvals.list(ADMIN)} == {mine.id, theirs.id}
    assert tether.approvals.list(Caller("user:nobody")) == []
    with pytest.raises(InvalidRequest, match="invalid state"):
        tether.approvals.list(ADMIN, state="maybe")
    listed = tether.approvals.list(ADMIN, state="pending")[0].to_dict()
    assert "arguments" not in listed and SECRET not in json.dumps(listed)


_EXAMPLES = itertools.count()
_OPS = st.lists(
    st.sampled_from(["approve", "deny", "bob approves", "consume", "other call", "late"]),
    max_size=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_whatever_happens_an_approval_lets_at_most_one_call_through(
    held, clock: Clock, ops: list[str]
) -> None:
    """Any sequence of answers, uses and time: a use succeeds only for an approval its
    owner approved, before it expired, and only once; a decided approval stays decided."""
    tether, agent = held
    asked = _ask(tether, agent, example=next(_EXAMPLES))  # a call of its own
    ttl = tether.settings.guard.approval_ttl
    state, expires, uses = "pending", asked.expires_at, 0
    for op in ops:
        live = clock.now < expires
        if op in ("approve", "deny"):
            decide = tether.approvals.approve if op == "approve" else tether.approvals.deny
            if state == "pending" and live:
                state = decide(ALICE, asked.id).state
                assert state == ("approved" if op == "approve" else "denied")
            else:
                with pytest.raises(IllegalTransition):
                    decide(ALICE, asked.id)
        elif op == "bob approves":
            with pytest.raises(NotFound):
                tether.approvals.approve(BOB, asked.id)
        elif op in ("consume", "other call"):
            digest = asked.digest if op == "consume" else "f" * 64
            with tether.store.write() as conn:
                used = tether.approvals.consume(conn, asked.id, digest)
            expected = op == "consume" and state == "approved" and live
            assert used is expected
            if used:
                state, uses = "used", uses + 1
        else:
            clock.advance(seconds=ttl.total_seconds() / 2)
    assert uses <= 1
    shown = tether.approvals.get(ADMIN, asked.id).state
    live = clock.now < expires
    assert shown == (state if state in ("denied", "used") or live else "expired")


# ---- the digest and the redacted form ------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(args=st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_the_digest_is_of_the_canonical_call(args: dict[str, Any]) -> None:
    chain = ("user:carol@example.com", "spiffe://tether.local/agent/helper")
    digest = call_digest(chain, "tools/call", "fs/write_file", args)
    reordered = dict(reversed(list(args.items())))
    assert call_digest(chain, "tools/call", "fs/write_file", reordered) == digest
    assert call_digest(chain, "tools/call", "fs/read_file", args) != digest
    assert call_digest(chain[1:], "tools/call", "fs/write_file", args) != digest
    assert call_digest(chain, "tools/call", "fs/write_file", {**args, "\x00extra": 1}) != digest


def test_a_call_without_a_canonical_form_has_no_digest() -> None:
    for args in ({"n": 2**53}, {"x": float("nan")}, {"s": "\ud800"}):
        with pytest.raises(ValueError, match="RFC 8785"):
            call_digest(("a",), "tools/call", "fs/x", args)


_SECRETS = st.sampled_from(
    [
        SECRET,
        "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
        "AKIA" + "Q4NX7T2W6YB3KD5M",
        "xoxb-2485937104-9876543210987-" + "AbCdEfGhIjKlMnOpQrStUvWx",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    secret=_SECRETS,
    before=st.text(alphabet=" ,;:=\n\"'", max_size=3),
    after=st.text(alphabet=" ,;\n\"'", max_size=3),
    name=st.sampled_from(["body", "text", "note", "value", "headers"]),
    nest=st.integers(0, 3),
)
def test_no_secret_survives_redaction(
    secret: str, before: str, after: str, name: str, nest: int
) -> None:
    value: Any = {name: f"prefix{before}{secret}{after}suffix", "path": "/srv/reports/q1.txt"}
    for _ in range(nest):
        value = {"wrapped": [value]}
    redacted = json.dumps(redact_arguments(value))
    assert secret not in redacted
    assert "[redacted:" in redacted and "/srv/reports/q1.txt" in redacted


_any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=80)
_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4),
    max_leaves=25,
)


def test_a_number_under_a_secret_sounding_name_is_redacted() -> None:
    """Red team: only strings were redacted, so ``{"password": 48151623}`` (a numeric
    password, a PIN code, a one-time code) went into the audit log and the webhook as it
    was."""
    args = {
        "password": 48151623,
        "pin": 4711,
        "card": {"cvv": 987, "otp_code": 135792.0},
        "count": 3,
        "spinner": 5,
    }
    redacted = redact_arguments(args)
    hidden = [redacted["password"], redacted["pin"], *redacted["card"].values()]
    assert all(re.fullmatch(r"\[redacted:[a-z-]+:[0-9a-f]{12}\]", h) for h in hidden), redacted
    assert redacted["count"] == 3 and redacted["spinner"] == 5
    assert redacted["password"].startswith("[redacted:password:")


@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(_any_text, _any_json, max_size=5))
def test_any_arguments_are_redacted_or_refused_with_a_reason_never_a_crash(
    args: dict[str, Any],
) -> None:
    redacted = redact_arguments(args)
    json.dumps(redacted)  # what the log keeps is JSON
    try:
        digest = call_digest(("a",), "tools/call", "fs/x", args)
    except ValueError as exc:
        assert "RFC 8785" in str(exc)
    else:
        assert len(digest) == 64


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("https://api.example.com/v1?token=abcd1234&page=2", "abcd1234", "&page=2"),
        ("Authorization: Bearer abc.def.ghi12345", "abc.def.ghi12345", "Authorization: Bearer "),
        ("password=hunter22 user=bob", "hunter22", "user=bob"),
        ('db_password: "s3cr3t!"', "s3cr3t!", "db_password: "),
        ("Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Basic "),
        ("x-api-key: zzzz9999 for the report", "zzzz9999", "for the report"),
    ],
)
def test_secrets_inside_text_are_redacted_and_the_rest_kept(
    text: str, secret: str, kept: str
) -> None:
    redacted = redact_arguments({"note": text})["note"]
    assert secret not in redacted and kept in redacted and "[redacted:" in redacted
    assert redacted.count("[redacted:") == 1  # one marker, never one inside another


def test_secret_names_redact_short_values_and_keep_ordinary_ones() -> None:
    redacted = redact_arguments(
        {"password": "hunter22", "API-Key": "abc12345", "path": "/tmp/x", "count": 3}
    )
    assert redacted["password"].startswith("[redacted:password:")
    assert redacted["API-Key"].startswith("[redacted:api-key:")
    assert redacted["path"] == "/tmp/x" and redacted["count"] == 3
    # the same secret gets the same fingerprint: an auditor can tell two uses apart
    assert redact_arguments({"password": "hunter22"})["password"] == redacted["password"]


# ---- racing processes (PostgreSQL) -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the cluster case is PostgreSQL
def test_racing_processes_use_one_approval_once(
    held, db_url: str, tmp_path: Path, clock: Clock
) -> None:
    tether, agent = held
    clock.now = datetime.now(UTC)  # the racers read the real clock
    asked = _ask(tether, agent)
    tether.approvals.approve(ALICE, asked.id)
    go = tmp_path / "go"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "helpers" / "approval_consumer.py"),
                str(tether.settings.home),
                db_url,
                asked.id,
                asked.digest,
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    for racer in racers:  # every racer open and waiting before any may go
        assert racer.stdout is not None
        assert racer.stdout.readline().strip() == "ready", racer.communicate(timeout=60)
    go.touch()
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    assert len(_events(tether, "approval.used")) == 1
    assert len(_events(tether, "test.consumed")) == 1


# ---- the webhook -----------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]
    status = 204

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        if type(self).status in (301, 302, 307):
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Any:
    handler = type("Receiver", (_Receiver,), {"bodies": [], "status": 204})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_the_webhook_is_told_of_each_new_pending_approval(
    make_settings, clock: Clock, receiver
) -> None:
    handler, url = receiver
    settings = make_settings(guard={"approval_webhook": url})
    Tether.init(settings)[0].close()
    with Tether.open(settings, clock=clock) as tether:
        assert tether.approvals.webhook is not None
        tether.registry.register(ADMIN, spec("helper"))
        agent = tether.registry.agent_id("helper")
        asked = _ask(tether, agent)
        _ask(tether, agent)  # a retry: no second notification
        assert tether.approvals.webhook.join()
        [told] = handler.bodies
        assert told["id"] == asked.id and told["digest"] == asked.digest
        assert told["agent"] == agent and told["tool"] == "fs/write_file"
        assert told["chain"] == ["user:carol@example.com", agent]
        assert told["expires_at"] == asked.expires_at.isoformat()
        assert told["reasons"] == list(asked.reasons)
        assert told["redacted_arguments"]["path"] == "/srv/reports/q1.txt"
        assert SECRET not in json.dumps(told) and "arguments" not in told
        assert tether.metrics.render({}).count("tether_webhook_sent_total") == 2


def test_a_failing_webhook_never_fails_the_call_and_is_counted(receiver) -> None:
    handler, url = receiver
    handler.status = 500
    metrics = Metrics()
    pauses: list[float] = []
    hook = Webhook(url, metrics, sleep=pauses.append, attempts=3)
    hook.notify({"id": "ap_x"})
    assert hook.join()
    assert len(handler.bodies) == 3 and pauses == [0.5, 1.0]  # retried, with growing pauses
    assert "tether_webhook_failures_total 1" in metrics.render({})
    # a redirect is not followed, nor retried
    handler.status, handler.bodies[:] = 302, []
    hook.notify({"id": "ap_y"})
    assert hook.join()
    assert len(handler.bodies) == 1
    assert "tether_webhook_failures_total 2" in metrics.render({})
    # nobody listening: failed, counted, never raised
    gone = Webhook("http://127.0.0.1:1/hook", metrics, sleep=pauses.append)
    gone.notify({"id": "ap_z"})
    assert gone.join()
    assert "tether_webhook_failures_total 3" in metrics.render({})
    hook.close()
    gone.close()


def test_entries_carry_no_exact_arguments() -> None:
    asked = Entry.of("approval.requested", actor="a", detail={"redacted_arguments": {}})
    assert "arguments" not in asked.detail


def test_a_webhook_receiver_that_drips_its_answer_cannot_hold_the_sender() -> None:
    """The POST has one deadline for the whole exchange (the audit sinks' Poster), not a
    timeout per read: a receiver that answers one header line every 0.1 s for seconds
    fails the notification within the deadline (counted), it does not hold the thread."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.1):
                    conn.sendall(b"X-Slow: yes\r\n")
            except OSError:
                return

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    metrics = Metrics()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    hook = Webhook(url, metrics, timeout=0.5, attempts=2, sleep=lambda _: None)
    try:
        hook.notify({"id": "ap_slow"})
        assert hook.join(timeout=4)  # two attempts of 0.5 s each, not the drip's pace
        assert "tether_webhook_failures_total 1" in metrics.render({})
    finally:
        stop.set()
        hook.close()
        listener.close()
