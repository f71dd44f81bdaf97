"""Scale: the questions people ask of a large store, through Tether vs the same question
asked of PostgreSQL by hand.

A fresh PostgreSQL schema (``TETHER_TEST_POSTGRES_URL``; the bench fails when it is
unreachable: scale is a PostgreSQL matter) is filled with A agents (one owner per 10),
G grants (G / A per agent, ``tools/call`` on one tool each) and E audit events:

- agents and grants through the library (``registry.register``, ``grants.add``), so their
  rows and events are what Tether writes, on a clock 10 days back;
- E decision events (each a person through one of their agents, 90 % allowed by one of
  the agent's first 8 grants, so a fifth of the grants stays unused; two events per
  request id) built with the library's own ``decision_entry`` and ``stage`` (canonical
  bodies, leaf hashes, Merkle nodes, the head's frontier) and loaded with ``COPY`` in
  batches, each under the head's row lock as an append takes it. The index trigger is
  off meanwhile; then migration 0013's own statements index every event at once (as
  the migration indexes a store's earlier events: the rows the trigger would write) and
  the trigger is back on. Then ``VACUUM ANALYZE``, a first signed checkpoint (which
  recomputes every event from its body onto the empty tree, and signs only if that
  folds to the stored root) and, with ``--quick``, ``tether.verify_audit()``: the store
  is genuine (times on stderr; the full run, from the same generator, skips verify).

``--quick``: 1,000 agents, 10,000 grants, 1,000,000 events; the full run: 10,000 /
100,000 / 10,000,000. Then each measure, p50 and p95 (ms) over N runs of the Tether call
vs the raw query (hand-written SQL through the same engine, answering the same question
with the same indexes; what a page is made of is fetched, not turned into objects),
ratio = Tether ÷ raw (so above 1 Tether is slower; the goal is at most 3, and a p95 of
at most 200 ms for the pages the console shows). The peak memory (tracemalloc) of one
Tether call and of one raw query goes to stderr.

- ``agents page 1``/``deep``/``owner``: ``registry.list`` of 100 agents from the first
  name, from the name 90 % through, and of one owner (the API's ``after``/``limit``);
- ``grants unused``: ``reports.grants(unused=7d)`` (``tether grant list --unused 7d``) vs
  the anti-join of live grants and ``grant_uses``, with each grant's agent's state;
- ``audit by agent``/``by agent deep``/``by person``: ``search`` of 100 events of one
  agent (from the start, and from 90 % through its events) or one person, vs the join of
  ``event_terms`` and ``events``; ``audit by agent (scan)`` is the same search reading the
  log as before migration 0013, once per run (its p50 is that one run);
- ``explain``: ``explain`` of a decision vs the reads it makes (the event, its request's
  events, the agent's ownership events, the agent);
- ``inclusion``: ``events.inclusion(seq)`` vs one read of the same stored hashes;
- ``checkpoint``: ``checkpoints.make()`` after 1,000 more decisions vs reading those
  events' bodies and the head;
- ``decision miss``/``hit``: ``tether.decide_all`` of a new (or the same) request, decided
  and recorded, vs reading the chain's live grants and writing one row under the head's
  lock;
- ``kill``: ``killswitch.kill`` of an agent with C children each holding 2 tokens vs the
  raw updates (agents, tokens, epoch) in one transaction; ``kill refused`` is the time
  from the kill's start until a second Tether on the store (listening, as a second
  process does) refuses a child's token, vs the raw kill (that answer's own time, which
  rebuilds the second Tether's state, included). On stderr: how many kills the second
  Tether confirmed before they returned, and how often it still accepted the token
  when asked after a kill had returned (it must not: DESIGN §5.4).

    .venv/bin/python bench/scale.py [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import Result, expect, main, postgres_schema, result

from tether import AgentSpec, Caller, Settings, Tether, generate_key_pair
from tether.audit.queries import Filter, explain, search
from tether.audit.record import Entry, stage
from tether.audit.terms import EventTerms
from tether.audit.tree import Frontier, blocks, inclusion_ranges
from tether.core import decision_entry, utcnow
from tether.grants import GrantSpec
from tether.policy.decision import AccessRequest, Decision
from tether.upstreams.servers import UpstreamSpec

MIGRATION = importlib.import_module("tether.store.migrations.versions.0013_scale_indexes")
ADMIN = Caller.admin()
BACK = timedelta(days=10)  # the set-up's clock: agents and grants were made 10 days ago
BATCH = 50_000  # events staged and copied per transaction
PAGE = 100
THREADS = 4  # registering and granting
UI_GOAL_MS = 200.0


@dataclass(frozen=True, slots=True)
class Plan:
    agents: int
    grants: int
    events: int
    children: int  # of each killed agent
    kills: int  # killed families (and as many killed raw)
    runs: int  # timed runs per measure
    verify: bool  # run tether audit verify on the generated store (the same generator)


QUICK = Plan(1_000, 10_000, 1_000_000, children=20, kills=5, runs=30, verify=True)
FULL = Plan(10_000, 100_000, 10_000_000, children=50, kills=5, runs=40, verify=False)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- the store ----------------------------------------------------------------------------


@dataclass
class World:
    tether: Tether
    names: list[str]
    owners: list[str]
    grant_ids: dict[str, list[str]]  # agent name -> its grants, in order
    families: list[tuple[str, list[str]]]  # killed through Tether
    raw_families: list[tuple[str, list[str]]]  # killed by hand


def _owner(i: int) -> str:
    return f"owner{i // 10:05d}@example.com"


def populate(tether: Tether, plan: Plan) -> World:
    """Agents, families to kill and grants, through the library (from a few threads, as
    a server's requests would come: each call is its own transaction)."""
    registry, grants = tether.registry, tether.grants
    tether.upstreams.add(ADMIN, UpstreamSpec("svc", url="http://127.0.0.1:9/mcp"))
    start = time.perf_counter()
    names = [f"ag{i:05d}" for i in range(plan.agents)]

    def register(i: int) -> None:
        spec = AgentSpec(
            name=names[i],
            owner=_owner(i),
            public_key=generate_key_pair().public_key,
            labels={"team": f"t{i % 20}"},
        )
        registry.register(ADMIN, spec)

    def family(f: int) -> tuple[str, list[str]]:
        root = f"kill{f}"
        registry.register(ADMIN, _spec(root, None))
        kids = [f"kill{f}-c{c}" for c in range(plan.children)]
        for kid in kids:
            registry.register(ADMIN, _spec(kid, root))
            grants.add(ADMIN, GrantSpec(kid, "tools/call", "svc/*", reason="bench kill"))
        return root, kids

    per = plan.grants // plan.agents

    def grant(i: int) -> list[str]:
        return [
            grants.add(ADMIN, GrantSpec(names[i], "tools/call", f"svc/tool{i}_{k}", reason="b")).id
            for k in range(per)
        ]

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(register, range(plan.agents)))
        families = list(pool.map(family, range(2 * plan.kills)))
        say(f"  {plan.agents:,} agents in {time.perf_counter() - start:.0f}s")
        start = time.perf_counter()
        grant_ids = dict(zip(names, pool.map(grant, range(plan.agents)), strict=True))
    say(f"  {plan.grants:,} grants in {time.perf_counter() - start:.0f}s")
    owners = sorted({_owner(i) for i in range(plan.agents)})
    return World(tether, names, owners, grant_ids, families[: plan.kills], families[plan.kills :])


def _spec(name: str, parent: str | None) -> AgentSpec:
    key = generate_key_pair().public_key
    lifetime = timedelta(days=60) if parent else None  # a child cannot outlive its parent
    return AgentSpec(
        name=name, owner="killer@example.com", public_key=key, parent=parent, expires_in=lifetime
    )


def decisions(world: World, count: int) -> Iterator[Entry]:
    """``count`` decision entries as the decision point records them, in time order."""
    rng = random.Random(16)
    registry = world.tether.registry
    ids = {name: registry.agent_id(name) for name in world.names}
    for n in range(count):
        i = rng.randrange(len(world.names))
        name = world.names[i]
        chain = (f"user:{_owner(i)}", ids[name])
        k = rng.randrange(8)
        allowed = rng.random() < 0.9
        grant = world.grant_ids[name][k] if allowed else None
        d = Decision(
            allowed=allowed,
            chain=chain,
            action="tools/call",
            resource=f"svc/tool{i}_{k}",
            reasons=(f"allowed by grant {grant}",)
            if grant
            else (f"{chain[1]} holds no grant for tools/call on svc/tool{i}_{k}x",),
            grants=(grant,) if grant else (),
            epoch=n // 1000,
        )
        yield dataclasses.replace(decision_entry(d), request_id=f"r-{n // 2:016x}")


Staged = tuple[list[dict[str, Any]], list[dict[str, Any]], int, list[bytes]]


def load_events(world: World, plan: Plan) -> None:
    """E decision events, appended in batches as the log appends them (each batch under
    the head's row lock, after the size it was staged on), loaded by COPY; a thread
    stages the next batch meanwhile."""
    engine = world.tether.store.engine
    with engine.connect() as conn:
        size, text = conn.exec_driver_sql("SELECT size, frontier FROM audit_head").one()
    frontier = Frontier(size, (bytes.fromhex(h) for h in json.loads(text)))
    end = utcnow() - timedelta(minutes=1)
    begin = end - BACK + timedelta(hours=1)
    step = (end - begin) / plan.events
    staged: queue.Queue[Staged | None] = queue.Queue(maxsize=2)

    def produce() -> None:
        entries = decisions(world, plan.events)
        for first in range(0, plan.events, BATCH):
            n = min(BATCH, plan.events - first)
            timed = ((next(entries), begin + step * (first + j)) for j in range(n))
            before = frontier.size
            rows, nodes = stage(timed, frontier)
            staged.put((rows, nodes, before, list(frontier.hashes)))
        staged.put(None)

    producer = threading.Thread(target=produce, name="stage", daemon=True)
    producer.start()
    started, done = time.perf_counter(), 0
    while (batch := staged.get()) is not None:
        rows, nodes, before, hashes = batch
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("SELECT size FROM audit_head WHERE id = 1 FOR UPDATE")
            expect(cur.fetchone()[0] == before, "the log grew while the bench loaded it")
            with cur.copy(
                "COPY events (seq, at, type, subject, body, leaf_hash) FROM STDIN"
            ) as copy:
                for r in rows:
                    copy.write_row(
                        (r["seq"], r["at"], r["type"], r["subject"], r["body"], r["leaf_hash"])
                    )
            with cur.copy("COPY audit_nodes (level, idx, hash) FROM STDIN") as copy:
                for node in nodes:
                    copy.write_row((node["level"], node["idx"], node["hash"]))
            cur.execute(
                "UPDATE audit_head SET size = %s, frontier = %s WHERE id = 1",
                (before + len(rows), json.dumps([h.hex() for h in hashes])),
            )
            raw.commit()
        finally:
            raw.close()
        done += len(rows)
        if done % (BATCH * 10) == 0 or done == plan.events:
            rate = done / (time.perf_counter() - started)
            say(f"  events: {done:,} ({rate:,.0f}/s)")
    producer.join()


@contextlib.contextmanager
def bulk_indexed(tether: Tether) -> Iterator[None]:
    """Leave the index trigger off while the store is filled, then index every event at
    once with migration 0013's own statements (as it indexes a store's earlier events)
    and turn the trigger back on: the same rows the trigger writes one event at a time."""
    engine = tether.store.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER tether_index_event")
    yield
    start = time.perf_counter()
    with engine.begin() as conn:  # the primary key is built once, after the rows
        conn.exec_driver_sql("DELETE FROM event_terms")
        conn.exec_driver_sql("DELETE FROM grant_uses")
        conn.exec_driver_sql("ALTER TABLE event_terms DROP CONSTRAINT pk_event_terms")
        for statement in MIGRATION._PG_BACKFILL:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(
            "ALTER TABLE event_terms ADD CONSTRAINT pk_event_terms PRIMARY KEY (kind, term, seq)"
        )
        conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER tether_index_event")
    say(f"  indexed (event_terms, grant_uses) in {time.perf_counter() - start:.0f}s")


# ---- timing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    p50: float
    p95: float


def timing(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return Timing(statistics.median(ordered), p95)


def timed(op: Callable[[int], object], runs: int) -> Timing:
    op(0)  # warm
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        op(i)
        samples.append((time.perf_counter() - start) * 1000)
    return timing(samples)


def peak_kib(op: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        op()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


class Measures:
    """Rows of Tether vs raw, p50 and p95, with the memory of each on stderr."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.rows: list[Result] = []
        self.slow: list[str] = []

    def add(
        self,
        name: str,
        ours: Callable[[int], object],
        raw: Callable[[int], object],
        *,
        ui: bool = False,
        runs: int | None = None,
    ) -> None:
        n = runs or self.runs
        mine, theirs = timed(ours, n), timed(raw, n)
        self.record(name, mine, theirs, ui=ui)
        say(
            f"  {name}: {mine.p50:.2f}/{mine.p95:.2f} ms vs raw {theirs.p50:.2f}/"
            f"{theirs.p95:.2f} ms; peak memory {peak_kib(lambda: ours(n + 1)):,.0f} KiB vs "
            f"raw {peak_kib(lambda: raw(n + 1)):,.0f} KiB"
        )

    def record(self, name: str, mine: Timing, theirs: Timing, *, ui: bool = False) -> None:
        self.rows.append(result(f"{name} p50", mine.p50, theirs.p50, "ms"))
        self.rows.append(result(f"{name} p95", mine.p95, theirs.p95, "ms"))
        if mine.p50 > 3 * theirs.p50:
            self.slow.append(f"{name}: {mine.p50 / theirs.p50:.1f}x the raw query at p50")
        if ui and mine.p95 > UI_GOAL_MS:
            self.slow.append(f"{name}: p95 {mine.p95:.0f} ms > {UI_GOAL_MS:.0f} ms")


# ---- the measures -------------------------------------------------------------------------


def measure(world: World, plan: Plan) -> list[Result]:
    tether = world.tether
    engine = tether.store.engine
    m = Measures(plan.runs)
    rng = random.Random(7)

    def sql(text: str, **params: Any) -> list[Any]:
        with engine.connect() as conn:
            return conn.execute(sa.text(text), params).all()

    # agents
    deep = sorted(world.names)[int(len(world.names) * 0.9)]
    owners = [rng.choice(world.owners) for _ in range(plan.runs + 2)]
    agents_sql = "SELECT * FROM agents {} ORDER BY name LIMIT 100"
    m.add(
        "agents page 1",
        lambda _: tether.registry.list(ADMIN, limit=PAGE),
        lambda _: sql(agents_sql.format("")),
        ui=True,
    )
    m.add(
        "agents deep",
        lambda _: tether.registry.list(ADMIN, after=deep, limit=PAGE),
        lambda _: sql(agents_sql.format("WHERE name > :a"), a=deep),
        ui=True,
    )
    m.add(
        "agents owner",
        lambda i: tether.registry.list(ADMIN, owner=owners[i], limit=PAGE),
        lambda i: sql(agents_sql.format("WHERE owner = :o"), o=owners[i]),
        ui=True,
    )

    # grants unused
    window = timedelta(days=7)
    unused_sql = (  # with each agent's state, which the report's suggestion names
        "SELECT g.*, a.state, a.expires_at AS agent_expires_at, a.unowned_since "
        "FROM grants g LEFT JOIN agents a ON g.principal = 'agent:' || a.name "
        "WHERE g.revoked_at IS NULL AND g.expires_at > :now "
        "AND NOT EXISTS (SELECT 1 FROM grant_uses u WHERE u.grant_id = g.id "
        "AND u.last_used >= :since) ORDER BY g.created_at, g.id"
    )
    unused = tether.reports.grants(ADMIN, unused=window)
    now = utcnow()
    raw_unused = sql(unused_sql, now=now, since=now - window)
    expect(len(unused) == len(raw_unused), f"unused: {len(unused)} vs raw {len(raw_unused)}")
    say(f"  {len(unused):,} of {plan.grants:,} grants unused")
    m.add(
        "grants unused",
        lambda _: tether.reports.grants(ADMIN, unused=window),
        lambda _: sql(unused_sql, now=utcnow(), since=utcnow() - window),
        runs=max(5, plan.runs // 3),
    )

    # audit search
    terms = EventTerms(tether.store)
    registry = tether.registry
    picks = [rng.choice(world.names) for _ in range(plan.runs + 2)]
    people = [rng.choice(world.owners) for _ in range(plan.runs + 2)]
    term_sql = (
        "SELECT e.seq, e.at, e.body FROM event_terms t JOIN events e ON e.seq = t.seq "
        "WHERE t.kind = 'p' AND t.term = :term AND t.seq > :after ORDER BY t.seq LIMIT 100"
    )

    def by_agent(name: str, after: int = 0) -> list[Any]:
        where = Filter.of(registry, agent=name)
        return search(tether.events, terms, where, after=after, limit=PAGE)[0]

    found = by_agent(picks[0])
    raw_found = sql(term_sql, term=registry.agent_id(picks[0]), after=0)
    expect([e.seq for e in found] == [r.seq for r in raw_found], "search by agent differs")
    m.add(
        "audit by agent",
        lambda i: by_agent(picks[i]),
        lambda i: sql(term_sql, term=registry.agent_id(picks[i]), after=0),
        ui=True,
    )
    depth = {}
    for name in picks:
        seqs = [
            r[0]
            for r in sql(
                "SELECT seq FROM event_terms WHERE kind = 'p' AND term = :t ORDER BY seq",
                t=registry.agent_id(name),
            )
        ]
        depth[name] = seqs[int(len(seqs) * 0.9)] if seqs else 0
    m.add(
        "audit by agent deep",
        lambda i: by_agent(picks[i], depth[picks[i]]),
        lambda i: sql(term_sql, term=registry.agent_id(picks[i]), after=depth[picks[i]]),
        ui=True,
    )
    m.add(
        "audit by person",
        lambda i: search(tether.events, terms, Filter.of(registry, user=people[i]), limit=PAGE),
        lambda i: sql(term_sql, term=f"user:{people[i]}", after=0),
        ui=True,
    )
    unindexed = _Unindexed(tether.store)
    start = time.perf_counter()
    scanned = search(tether.events, unindexed, Filter.of(registry, agent=picks[1]), limit=PAGE)
    scan_ms = (time.perf_counter() - start) * 1000
    expect([e.seq for e in scanned[0]] == [e.seq for e in by_agent(picks[1])], "scan differs")
    raw_scan = timed(lambda _: sql(term_sql, term=registry.agent_id(picks[1]), after=0), 5)
    m.record("audit by agent (scan)", Timing(scan_ms, scan_ms), raw_scan)
    say(f"  audit by agent, reading the log as before 0013: {scan_ms:,.0f} ms")

    # explain and proofs
    size = tether.events.size()
    seqs = [rng.randrange(size // 2, size) + 1 for _ in range(plan.runs + 2)]

    def raw_explain(i: int) -> None:
        [event] = sql("SELECT seq, at, body FROM events WHERE seq = :s", s=seqs[i])
        body = json.loads(event.body)
        sql(
            "SELECT seq FROM event_terms WHERE kind = 'r' AND term = :t ORDER BY seq LIMIT 1000",
            t=body["request_id"],
        )
        agent = body["chain"][-1]
        sql(
            "SELECT seq, at, body FROM events WHERE subject = :a AND type IN "
            "('agent.registered', 'agent.owner_changed', 'agent.unowned') AND seq <= :s "
            "ORDER BY seq",
            a=agent,
            s=seqs[i],
        )
        sql("SELECT * FROM agents WHERE name = :n", n=agent.rsplit("/", 1)[1])

    m.add(
        "explain",
        lambda i: explain(tether.events, terms, registry, seqs[i]),
        raw_explain,
        ui=True,
    )

    def raw_inclusion(i: int) -> None:
        index = seqs[i] - 1
        nodes = [n for lo, hi in inclusion_ranges(index, size) for n in blocks(lo, hi)]
        by_level: dict[int, list[int]] = {}
        for level, idx in nodes:
            by_level.setdefault(level, []).append(idx)
        where = " OR ".join(
            f"(level = {level} AND idx IN ({','.join(map(str, idxs))}))"
            for level, idxs in by_level.items()
        )
        sql("SELECT leaf_hash FROM events WHERE seq = :s", s=seqs[i])
        sql(f"SELECT level, idx, hash FROM audit_nodes WHERE {where}")

    m.add("inclusion", lambda i: tether.events.inclusion(seqs[i], size), raw_inclusion)

    # checkpoint after 1,000 more decisions
    agent = registry.get(ADMIN, world.names[0])
    request = AccessRequest.of(
        agent.id, "tools/call", "svc/tool0_0", on_behalf_of=f"user:{_owner(0)}"
    )

    def grow() -> None:
        tether.decide_all([request] * 1000)

    def checkpoint(_: int) -> None:
        tether.checkpoints.make()

    def raw_checkpoint(_: int) -> None:
        [(base,)] = sql("SELECT max(size) FROM audit_checkpoints")
        sql("SELECT size, frontier FROM audit_head WHERE id = 1")
        sql("SELECT seq, body FROM events WHERE seq > :b ORDER BY seq", b=base)

    mine, theirs = [], []
    for _ in range(max(5, plan.runs // 3)):
        grow()
        start = time.perf_counter()
        raw_checkpoint(0)
        theirs.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        checkpoint(0)
        mine.append((time.perf_counter() - start) * 1000)
    m.record("checkpoint", timing(mine), timing(theirs))
    say(f"  checkpoint: {timing(mine)} vs raw {timing(theirs)}")

    # decisions
    ids = [registry.agent_id(world.names[i]) for i in range(len(world.names))]
    grants_sql = (
        "SELECT * FROM grants WHERE principal IN (:a, :u) AND revoked_at IS NULL "
        "AND expires_at > :now"
    )
    scratch = "CREATE TEMPORARY TABLE IF NOT EXISTS bench_decisions (seq bigint, body text)"
    entry = decision_entry(tether.decide_all([request])[0])
    body = json.dumps(entry.body(0, "2026-01-01T00:00:00.000000Z"))

    def raw_decision(i: int) -> None:
        n = i % len(world.names)
        sql(grants_sql, a=f"agent:{world.names[n]}", u=f"user:{_owner(n)}", now=utcnow())
        with engine.begin() as conn:
            conn.execute(sa.text(scratch))
            [(size_,)] = conn.execute(
                sa.text("SELECT size FROM audit_head WHERE id = 1 FOR UPDATE")
            ).all()
            conn.execute(
                sa.text("INSERT INTO bench_decisions VALUES (:s, :b)"), {"s": size_, "b": body}
            )

    def miss(i: int) -> None:
        n = i % len(world.names)
        req = AccessRequest.of(
            ids[n], "tools/call", f"svc/tool{n}_{i % 8}", on_behalf_of=f"user:{_owner(n)}"
        )
        tether.decide_all([req])

    m.add("decision miss", miss, raw_decision)
    m.add("decision hit", lambda _: tether.decide_all([request]), raw_decision)

    kill_rows(world, plan, m)
    return _finish(m)


class _Unindexed(EventTerms):
    """Search as before migration 0013: every term read from the log."""

    def indexed(self, term: str) -> bool:
        return False


def kill_rows(world: World, plan: Plan, m: Measures) -> None:
    """Kill each family through Tether while a second Tether on the store (listening, as
    a second process does) asks about a child's token until it is refused."""
    tether = world.tether
    audience = f"{tether.settings.issuer}/mcp/svc"
    with Tether.open(tether.settings) as other:
        other.listen()
        kills, refused, raw = [], [], []
        confirmed = accepted = 0
        for (root, kids), (raw_root, raw_kids) in zip(
            world.families, world.raw_families, strict=True
        ):
            tokens = []
            for kid in kids:
                agent = tether.registry.get(ADMIN, kid)
                tokens += [
                    tether.tokens.client_credentials(agent, audience, None).access_token
                    for _ in range(2)
                ]
            watched = tokens[-1]
            expect(other.tokens.introspect(watched)["active"], "a child's token is not active")
            start = time.perf_counter()
            report = tether.killswitch.kill(ADMIN, root, reason="bench")
            kills.append((time.perf_counter() - start) * 1000)
            while other.tokens.introspect(watched)["active"]:
                accepted += 1  # asked after the kill returned, and still accepted
                if time.perf_counter() - start > 10:
                    raise RuntimeError("a killed agent's token was still accepted after 10s")
            refused.append((time.perf_counter() - start) * 1000)
            expect(len(report.agents_killed) == len(kids) + 1, "not every child was killed")
            confirmed += report.processes_confirmed  # the second Tether heard it in time
            raw.append(_raw_kill(tether, raw_root, raw_kids))
    m.record("kill", timing(kills), timing(raw))
    m.record("kill refused", timing(refused), timing(raw))
    say(f"  kill {timing(kills)}, refused {timing(refused)}, raw {timing(raw)}")
    say(
        f"  the second Tether confirmed {confirmed} of {len(kills)} kills before they "
        f"returned, and accepted a killed token {accepted} times after a kill returned"
    )


def _raw_kill(tether: Tether, root: str, kids: list[str]) -> float:
    """The kill's writes by hand: the family found by recursion, killed, their tokens
    revoked and the epoch bumped (with its notification), in one transaction."""
    now = utcnow()
    start = time.perf_counter()
    with tether.store.engine.begin() as conn:
        family = [
            r[0]
            for r in conn.execute(
                sa.text(
                    "WITH RECURSIVE f(name) AS (SELECT name FROM agents WHERE name = :r "
                    "UNION ALL SELECT a.name FROM agents a JOIN f ON a.parent = f.name) "
                    "SELECT name FROM f"
                ),
                {"r": root},
            )
        ]
        conn.execute(
            sa.text(
                "UPDATE agents SET state = 'killed', state_changed_at = :n WHERE name = ANY(:names)"
            ),
            {"n": now, "names": family},
        )
        ids = [tether.registry.agent_id(name) for name in family]
        conn.execute(
            sa.text(
                "UPDATE issued_tokens SET revoked_at = :n WHERE subject = ANY(:ids) "
                "AND revoked_at IS NULL"
            ),
            {"n": now, "ids": ids},
        )
        conn.execute(sa.text("UPDATE state_epoch SET value = value + 1 WHERE id = 1"))
        conn.execute(sa.text("NOTIFY bench_raw_kill"))
    expect(len(family) == len(kids) + 1, "the raw kill missed children")
    return (time.perf_counter() - start) * 1000


def _finish(m: Measures) -> list[Result]:
    for line in m.slow:
        say(f"  goal missed: {line}")
    return m.rows


# ---- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def store(plan: Plan) -> Iterator[World]:
    with postgres_schema() as url, tempfile.TemporaryDirectory() as tmp:
        expect(url is not None, "PostgreSQL is unreachable (TETHER_TEST_POSTGRES_URL)")
        assert url is not None
        settings = Settings.load(Path(tmp), db_url=url)
        Tether.init(settings)[0].close()
        say(f"generating {plan.agents:,} agents, {plan.grants:,} grants, {plan.events:,} events")
        with Tether.open(settings, clock=lambda: utcnow() - BACK) as past, bulk_indexed(past):
            world = populate(past, plan)
            load_events(world, plan)
        with Tether.open(settings) as tether:
            world.tether = tether
            engine = tether.store.engine
            start = time.perf_counter()
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
            say(f"  vacuum analyze: {time.perf_counter() - start:.0f}s")
            start = time.perf_counter()
            tether.checkpoints.make()
            say(f"  first checkpoint: {time.perf_counter() - start:.0f}s")
            if plan.verify:
                start = time.perf_counter()
                report = tether.verify_audit()
                expect(report.ok, f"tether audit verify fails on the generated store: {report}")
                say(f"  tether audit verify: ok in {time.perf_counter() - start:.0f}s")
            yield world


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    with store(plan) as world:
        return measure(world, plan)


def footer(results: list[Result]) -> list[str]:
    worst = max(results, key=lambda r: r.ratio)
    return [f"worst ratio: {worst.name} {worst.ratio:.2f}x the raw query"]


if __name__ == "__main__":
    main("scale", __doc__ or "", run, footer, baseline="raw SQL", width=26)
