"""The audit log under failure, crashes and concurrency, on SQLite and PostgreSQL.

* Fail closed, write before effect: when the store refuses every event, nothing with an
  event (a registration, a grant, a token) takes effect, and every decision is a deny.
* Crash safety: a writer process is SIGKILLed at random moments, round after round; every
  append it acknowledged is there with the body it wrote, the log stays gap-free and
  verifies, and a checkpoint can be signed afterwards.
* Concurrency: several processes (each with several threads) append to one PostgreSQL
  store while another signs checkpoints; no gap, no duplicate, no fork. In one process,
  the group commit batches concurrent ``record()`` calls into fewer transactions.

The writer processes are ``tests/helpers/audit_writer.py`` (see its docstring for the
lines it prints).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
import sqlalchemy as sa
from conftest import ADMIN, Cli, Clock, spec
from fastapi.testclient import TestClient

from tether import (
    AccessRequest,
    AgentSpec,
    Denied,
    GrantSpec,
    Settings,
    Tether,
    TetherError,
    generate_key_pair,
)
from tether.api import create_app
from tether.audit.log import GroupCommit
from tether.audit.note import Verifier
from tether.audit.record import Entry
from tether.audit.tree import Frontier
from tether.errors import StoreUnavailable
from tether.store import agents, audit_checkpoints, events, grants, issued_tokens, state_epoch

HELPER = Path(__file__).parent / "helpers" / "audit_writer.py"
ALICE = "alice@example.com"


# ---- helpers ---------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The CLI on the same home and store as ``tether`` / ``make_settings``."""
    return Cli(capsys)


def verify_ok(cli: Cli) -> dict:
    report = cli.json("audit", "verify")
    assert report["ok"] is True and report["first_bad_seq"] is None, report
    return report


def count(engine: sa.Engine, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).one()[0]
        )


def log_rows(engine: sa.Engine) -> list[tuple[int, dict]]:
    """Every event as (seq, parsed body), in order."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.seq, events.c.body).order_by(events.c.seq))
        return [(int(seq), json.loads(body)) for seq, body in rows]


def leaf(body_text: str) -> bytes:
    return hashlib.sha256(b"\x00" + body_text.encode("utf-8")).digest()


@dataclass
class Output:
    """What a writer process printed, complete lines only (a line cut by SIGKILL was never
    acknowledged)."""

    acks: list[tuple[int, str]] = field(default_factory=list)  # (seq, nonce)
    agents: list[str] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    commits: int | None = None
    done: bool = False

    @classmethod
    def read(cls, path: Path) -> Output:
        out = cls()
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            word, _, rest = line.rstrip("\n").partition(" ")
            if word == "ack":
                seq, nonce = rest.split(" ")
                out.acks.append((int(seq), nonce))
            elif word == "agent":
                out.agents.append(rest)
            elif word == "checkpoint":
                out.checkpoints.append(int(rest))
            elif word == "error":
                out.errors.append(rest)
            elif word == "commits":
                out.commits = int(rest)
            elif word == "done":
                out.done = True
        return out


class Writer:
    """One ``audit_writer.py`` process on the store, its stdout in a file."""

    def __init__(self, home: Path, db_url: str, out: Path, *args: str) -> None:
        env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DB": db_url}
        env.pop("TETHER_URL", None)
        env.pop("TETHER_TOKEN", None)
        self.out = out
        self.err = out.with_suffix(".err")
        with out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(HELPER), *args], stdout=stdout, stderr=stderr, env=env
            )

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.out.read_text(encoding="utf-8").startswith("ready\n"):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"writer exited {self.proc.returncode} early:\n{self.stderr()}")
            time.sleep(0.02)
        self.kill()
        pytest.fail("writer never became ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 90) -> Output:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"writer did not finish in {timeout}s:\n{self.stderr()}")
        assert code == 0, self.stderr()
        return Output.read(self.out)


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    """Writers started by a test; any still running at the end are killed."""
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.kill()


# ---- fail closed: no event, no effect ----------------------------------------------------


def _refuse_every_event(engine: sa.Engine) -> None:
    _refuse(engine, "no_events", "INSERT ON events", "no audit log today")


def _accept_events_again(engine: sa.Engine) -> None:
    _allow(engine, "no_events", "events")


def _refuse(engine: sa.Engine, name: str, what: str, message: str) -> None:
    """A trigger ``name`` that makes every ``what`` (``INSERT ON events``) fail."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE {what} BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                f"RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE {what} FOR EACH ROW EXECUTE FUNCTION {name}()"
            )


def _allow(engine: sa.Engine, name: str, table: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON {table}")
            conn.exec_driver_sql(f"DROP FUNCTION {name}()")


def _assertion(agent_id: str, private_pem: bytes, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": agent_id, "sub": agent_id, "aud": audience, "iat": now, "exp": now + 60}
    claims["jti"] = os.urandom(12).hex()
    return jwt.encode(claims, private_pem, algorithm="EdDSA")


def test_when_no_event_can_be_written_nothing_happens_and_every_decision_is_a_deny(
    tether: Tether, clock: Clock, cli: Cli
) -> None:
    clock.now = datetime.now(UTC)  # the token endpoint checks real assertion times
    engine = tether.store.engine
    pair = generate_key_pair()
    helper = tether.registry.register(
        ADMIN, AgentSpec(name="helper", owner=ALICE, public_key=pair.public_key)
    )
    tether.grants.add(ADMIN, GrantSpec(helper.id, "tools/call", "github/create_issue"))
    ask = AccessRequest.of("helper", "tools/call", "github/create_issue")
    assert tether.authorize(ask).allowed  # allowed, and the allow is cached
    github = tether.tokens.issuer  # an audience Tether always knows
    assert tether.tokens.client_credentials(helper, github, None).jti
    client = TestClient(create_app(tether), raise_server_exceptions=False)

    def token_over_http() -> httpx.Response:
        """A token request as the agent makes it (RFC 7523 client assertion)."""
        assertion = _assertion(helper.id, pair.private_pem, tether.tokens.token_endpoint)
        return client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
                "resource": github,
            },
        )

    issued = token_over_http()
    assert issued.status_code == 200 and issued.json()["access_token"], issued.text
    size = tether.events.size()
    counts = {t.name: count(engine, t) for t in (agents, grants, issued_tokens)}
    with engine.connect() as conn:
        epoch = conn.execute(sa.select(state_epoch.c.value)).scalar_one()

    _refuse_every_event(engine)

    with pytest.raises(TetherError):
        tether.registry.register(ADMIN, spec("ghost"))
    assert count(engine, agents, agents.c.name == "ghost") == 0
    with pytest.raises(TetherError):
        tether.grants.add(ADMIN, GrantSpec(helper.id, "tools/call", "github/delete_repo"))
    assert count(engine, grants, grants.c.resource == "github/delete_repo") == 0
    with pytest.raises(TetherError):
        tether.tokens.client_credentials(helper, github, None)
    refused = token_over_http()
    # an error about the store (SQLite reports a trigger's abort as a constraint: 409),
    # never one about the agent's request, and no token
    assert refused.status_code in (409, 500, 503), refused.text
    assert "access_token" not in refused.json()
    with pytest.raises(TetherError):
        tether.registry.suspend(ADMIN, "helper", "no record, no suspension")
    assert tether.registry.get(ADMIN, "helper").state.value == "active"
    with pytest.raises(TetherError):
        tether.events.record(Entry.of("test.note", actor="tester", subject=None))

    # decisions: the allow (even the cached one) becomes a deny, nothing is recorded
    with pytest.raises(Denied, match="decision record could not be written"):
        tether.authorize(ask)
    answers = tether.decide_all([ask, ask, AccessRequest.of("helper", "tools/call", "x/y")])
    assert [d.allowed for d in answers] == [False, False, False]

    assert {t.name: count(engine, t) for t in (agents, grants, issued_tokens)} == counts
    with engine.connect() as conn:
        assert conn.execute(sa.select(state_epoch.c.value)).scalar_one() == epoch
    assert tether.events.size() == size == count(engine, events)

    _accept_events_again(engine)
    assert tether.authorize(ask).allowed
    tether.registry.register(ADMIN, spec("ghost"))
    assert token_over_http().status_code == 200
    assert tether.events.size() == size + 3
    client.close()
    verify_ok(cli)


# ---- crash safety ------------------------------------------------------------------------

MIN_ROUNDS = 5  # each round: start a writer, let it append for 0.3-2 s, SIGKILL it
ROUND_BUDGET_S = 16  # per backend; more rounds until TARGET_APPENDS or the budget is spent
TARGET_APPENDS = 2000
MIN_APPENDS = 1000  # what every run must show: a loaded machine (parallel workers) takes
MIN_APPENDS_LIMIT_S = 120  # more rounds to get there, within this limit


@pytest.mark.slow
def test_every_acknowledged_append_survives_sigkill(
    request: pytest.FixtureRequest,
    make_settings,
    db_url: str,
    home: Path,
    tmp_path: Path,
    cli: Cli,
    writers: list[Writer],
) -> None:
    settings = make_settings()
    Tether.init(settings)[0].close()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    outputs: list[Output] = []
    started = time.monotonic()
    rounds = 0

    def more() -> bool:
        appended, spent = sum(len(o.acks) + len(o.agents) for o in outputs), time.monotonic()
        return (
            rounds < MIN_ROUNDS
            or (appended < TARGET_APPENDS and spent - started < ROUND_BUDGET_S)
            or (appended < MIN_APPENDS and spent - started < MIN_APPENDS_LIMIT_S)
        )

    while more():
        writer = Writer(home, db_url, tmp_path / f"crash-{rounds}.out", "crash", f"r{rounds}", "3")
        writers.append(writer)
        writer.wait_ready()
        time.sleep(rng.uniform(0.3, 2.0))
        assert writer.proc.poll() is None, f"writer died on its own:\n{writer.stderr()}"
        writer.kill()
        outputs.append(Output.read(writer.out))
        rounds += 1
        if rounds % 2 == 0:  # checkpoints between crashes must stay consistent too
            with Tether.open(settings) as tether:
                tether.checkpoints.make()

    acks = [a for o in outputs for a in o.acks]
    names = [n for o in outputs for n in o.agents]
    assert len(acks) + len(names) >= MIN_APPENDS, (seed, rounds, len(acks), len(names))

    engine = sa.create_engine(db_url)
    request.addfinalizer(engine.dispose)
    logged = log_rows(engine)
    assert [seq for seq, _ in logged] == list(range(1, len(logged) + 1)), "gap-free 1..n"
    by_seq = dict(logged)
    for seq, nonce in acks:
        assert seq in by_seq, f"acknowledged event {seq} lost (seed {seed})"
        assert by_seq[seq]["type"] == "test.append"
        assert by_seq[seq]["detail"] == {"nonce": nonce}, (seq, by_seq[seq], seed)
    nonces = Counter(b["detail"]["nonce"] for _, b in logged if b["type"] == "test.append")
    assert max(nonces.values()) == 1, "no append was written twice"
    # registrations: effect and event together or neither, acknowledged ones present
    with engine.connect() as conn:
        stored = set(
            conn.execute(sa.select(agents.c.name).where(agents.c.name.like("r%-a%"))).scalars()
        )
    registered = Counter(
        b["subject"].rsplit("/", 1)[1] for _, b in logged if b["type"] == "agent.registered"
    )
    assert set(names) <= stored
    assert set(registered) == stored and max(registered.values()) == 1

    report = verify_ok(cli)
    signed = count(engine, audit_checkpoints)
    # (the report also counts the checkpoint the signing home keeps outside the store)
    assert report["size"] == len(logged) and report["checkpoints"] >= signed >= 1
    with Tether.open(settings) as tether:
        made = tether.checkpoints.make()
    assert made.size == len(logged)
    report = verify_ok(cli)
    assert count(engine, audit_checkpoints) in (signed, signed + 1)
    assert report["checkpoints"] >= count(engine, audit_checkpoints)


# ---- concurrency ---------------------------------------------------------------------------

PROCESSES = 4
THREADS = 3
OPS = 60  # per thread; half record(), half record() of 1-4: about 120 events a thread


@pytest.mark.slow
def test_concurrent_processes_and_a_checkpointer_share_one_gap_free_log(
    request: pytest.FixtureRequest,
    postgres_schema_url: str,
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    writers: list[Writer],
) -> None:
    db_url = postgres_schema_url
    settings = Settings.load(home, db_url=db_url)
    Tether.init(settings)[0].close()
    go, stop = tmp_path / "go", tmp_path / "stop"
    appenders = [
        Writer(
            home, db_url, tmp_path / f"p{p}.out", "append", f"p{p}", str(THREADS), str(OPS), str(go)
        )
        for p in range(PROCESSES)
    ]
    signer = Writer(home, db_url, tmp_path / "signer.out", "checkpoints", str(stop))
    writers.extend([*appenders, signer])
    for writer in writers:
        writer.wait_ready()
    go.touch()
    outputs = [writer.finish() for writer in appenders]
    stop.touch()
    signed = signer.finish()

    for out in outputs:
        assert out.done and not out.errors, out.errors
    assert not signed.errors, signed.errors
    assert signed.checkpoints, "the signer signed while the others appended"
    acks = [a for o in outputs for a in o.acks]
    assert len(acks) >= PROCESSES * 300
    assert len({seq for seq, _ in acks}) == len(acks), "no seq handed out twice"
    assert len({nonce for _, nonce in acks}) == len(acks)
    # the group commit merged calls of different threads into one transaction
    calls = PROCESSES * THREADS * OPS
    commits = sum(o.commits or 0 for o in outputs)
    assert 0 < commits < calls, (commits, calls)

    engine = sa.create_engine(db_url)
    request.addfinalizer(engine.dispose)
    logged = log_rows(engine)
    assert [seq for seq, _ in logged] == list(range(1, len(logged) + 1)), "gap-free 1..n"
    appended = {seq: b["detail"]["nonce"] for seq, b in logged if b["type"] == "test.append"}
    assert appended == dict(acks), "every acknowledged event exactly once, where it was said"

    # every checkpoint: signed by this home's key, over the root of the one log
    with Tether.open(settings) as tether:
        verifier = Verifier.parse(tether.checkpoints.verifier_key())
    with engine.connect() as conn:
        texts = conn.execute(sa.select(events.c.body).order_by(events.c.seq)).scalars().all()
        rows = conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.size)).all()
    roots: dict[int, bytes] = {}
    frontier = Frontier()
    for text in texts:
        frontier.append(leaf(text))
        roots[frontier.size] = frontier.root()
    assert len(rows) >= 2
    assert {row.size for row in rows} >= set(signed.checkpoints)
    for row in rows:
        opened = verifier.open(row.note)
        assert (opened.size, opened.root) == (row.size, bytes(row.root))
        assert bytes(row.root) == roots[row.size], f"checkpoint {row.size} forks from the log"

    monkeypatch.setenv("TETHER_HOME", str(home))
    monkeypatch.setenv("TETHER_DB", db_url)
    monkeypatch.delenv("TETHER_URL", raising=False)
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    report = verify_ok(Cli(capsys))
    assert report["size"] == len(logged) and report["checkpoints"] >= len(rows)


def test_group_commit_batches_concurrent_records(tether: Tether, cli: Cli) -> None:
    """16 threads x 50 record() in one process: 800 distinct, gap-free sequence numbers,
    each thread's in its own order, in fewer transactions than records (counted with a
    SQLAlchemy ``commit`` listener on the engine, and with the log's own on_commit)."""
    engine = tether.store.engine
    commits: list[int] = []
    appended: list[int] = []
    tether.events.on_commit(appended.append)
    before = tether.events.size()
    barrier = threading.Barrier(16)
    seqs: list[list[int]] = [[] for _ in range(16)]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(50):
                seqs[t].extend(
                    tether.events.record(
                        Entry.of(
                            "test.append",
                            actor=f"thread:{t}",
                            subject=None,
                            detail={"n": f"{t}.{i}"},
                        )
                    )
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    def on_commit(conn: sa.Connection) -> None:
        commits.append(1)

    sa.event.listen(engine, "commit", on_commit)
    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sa.event.remove(engine, "commit", on_commit)
    assert not errors, errors
    every = sorted(s for mine in seqs for s in mine)
    assert every == list(range(before + 1, before + 801))
    for mine in seqs:
        assert mine == sorted(mine), "one thread's records are in its own order"
    assert 1 <= len(commits) < 800, "the group commit wrote several records per transaction"
    assert len(appended) == len(commits)
    by_seq = dict(log_rows(engine))
    for t, mine in enumerate(seqs):
        assert [by_seq[s]["detail"]["n"] for s in mine] == [f"{t}.{i}" for i in range(50)]
    verify_ok(cli)


# ---- records nobody waits for (tool results) ------------------------------------------


def _deferred(tether: Tether, n: str) -> None:
    tether.events.defer(Entry.of("test.later", actor="gateway", subject=None, detail={"n": n}))


def test_a_deferred_record_rides_along_with_the_next_commit(tether: Tether, cli: Cli) -> None:
    """defer() returns at once; the next record() writes it first, in the same
    transaction (one commit for both), so its seq comes just before."""
    engine = tether.store.engine
    commits: list[int] = []
    tether.events.on_commit(commits.append)
    _deferred(tether, "a")
    _deferred(tether, "b")
    [seq] = tether.events.record(Entry.of("test.now", actor="gateway", subject=None))
    assert len(commits) == 1
    rows = dict(log_rows(engine))
    assert [rows[seq - 2]["detail"]["n"], rows[seq - 1]["detail"]["n"]] == ["a", "b"]
    assert rows[seq]["type"] == "test.now"
    verify_ok(cli)


def test_a_deferred_record_is_written_on_its_own_when_nothing_else_comes(
    tether: Tether,
) -> None:
    before = tether.events.size()
    _deferred(tether, "alone")
    deadline = time.monotonic() + 5
    while tether.events.size() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tether.events.size() == before + 1
    assert [e.detail["n"] for e in tether.events.list(type="test.later")] == ["alone"]


def test_a_deferred_record_survives_a_failed_write_and_is_written_later(
    tether: Tether, cli: Cli
) -> None:
    """While the store refuses events, the deferred record stays queued (the record() that
    failed does not take it down with it); once the store accepts again, it is written."""
    engine = tether.store.engine
    _refuse_every_event(engine)
    _deferred(tether, "kept")
    with pytest.raises(TetherError):
        tether.events.record(Entry.of("test.now", actor="gateway", subject=None))
    with pytest.raises(TetherError):
        tether.events.flush()
    assert tether.events.list(type="test.later") == []
    _accept_events_again(engine)
    tether.events.flush()
    assert [e.detail["n"] for e in tether.events.list(type="test.later")] == ["kept"]
    verify_ok(cli)


def test_closing_writes_what_was_deferred(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    Tether.init(settings)[0].close()
    first = Tether.open(settings)
    _deferred(first, "at close")
    first.close()
    with Tether.open(settings) as again:
        assert [e.detail["n"] for e in again.events.list(type="test.later")] == ["at close"]


# ---- the group commit: batches fail whole ---------------------------------------------


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the callers never queued"
        time.sleep(0.001)


def test_a_failed_group_commit_fails_every_waiter_in_it_and_keeps_the_deferred() -> None:
    """Three callers queued behind a commit in flight are written as one batch; when that
    write fails, each of them gets the error (none gets a sequence number), and what was
    deferred stays queued for the next commit, which writes it first."""
    gate = threading.Event()
    batches: list[list[str]] = []

    def write(items: list[str]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            gate.wait(10)  # the first commit is in flight while the others queue
            return [1]
        if len(batches) == 2:
            raise StoreUnavailable("the disk is full")
        return list(range(2, 2 + len(items)))

    group: GroupCommit[str] = GroupCommit(write, delay=60)
    outcomes: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            outcomes[name] = group.submit([name])
        except StoreUnavailable as exc:
            outcomes[name] = exc

    first = threading.Thread(target=call, args=("first",))
    first.start()
    _until(lambda: len(batches) == 1)
    group.defer(["later"])
    others = [threading.Thread(target=call, args=(n,)) for n in ("b", "c", "d")]
    for thread in others:
        thread.start()
    _until(lambda: group.queued() == 3)
    gate.set()
    for thread in [first, *others]:
        thread.join()
    assert outcomes["first"] == [1]
    assert sorted(batches[1]) == ["b", "c", "d", "later"] and batches[1][0] == "later"
    errors = [outcomes[n] for n in ("b", "c", "d")]
    assert all(isinstance(e, StoreUnavailable) for e in errors), errors
    assert group.pending() == 1  # "later" was not written: it waits for the next commit
    assert group.submit(["e"]) == [3] and batches[2] == ["later", "e"]  # later got 2
    assert group.pending() == 0


def test_a_batch_that_fails_half_way_leaves_nothing_of_it_in_the_log(
    tether: Tether, cli: Cli
) -> None:
    """The store refuses the tree head's update, the batch's last statement (its events
    and subtrees are already inserted): every concurrent record() fails and not one of
    their events is in the log; once the head is writable the log goes on gap-free."""
    engine = tether.store.engine
    before = tether.events.size()
    _refuse(engine, "frozen_head", "UPDATE ON audit_head", "the head is frozen")
    failed: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        try:
            tether.events.record(Entry.of("test.lost", actor=f"thread:{t}", subject=None))
        except TetherError as exc:
            failed.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failed) == 8
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
    assert stored == before and tether.events.size() == before
    _allow(engine, "frozen_head", "audit_head")
    assert tether.events.record(Entry.of("test.kept", actor="admin")) == [before + 1]
    assert tether.events.list(type="test.lost") == []
    verify_ok(cli)
