"""Audit log throughput: durable appends, full verification and Merkle proofs vs the raw
libraries beneath (bare SQLAlchemy Core, bare hashlib).

Appends run on a SQLite file (WAL, ``synchronous=FULL``) and on a fresh PostgreSQL schema
(``TETHER_TEST_POSTGRES_URL``, skipped with a note on stderr when unreachable), each on a
fresh store. Every event is a decision event of ~300 bytes of canonical JSON; the baseline
writes the same canonical body text into a plain ``(id, body)`` table of the same database
through the same engine:

- ``append 1``: ``tether.events.record(...)`` from one thread, each call returning after
  its commit, vs one bare ``INSERT`` + ``COMMIT`` per event.
- ``append grouped``: T threads (16) calling ``record(...)`` at once, so the group commit
  writes whatever queued up together, vs one thread doing a bare ``executemany`` of T rows
  + ``COMMIT`` (the best a batch of T can do). The mean group Tether achieved goes to stderr.
- ``append many 100``: ``record`` of 100 entries vs a bare ``executemany`` of 100
  + ``COMMIT``.

Verification and proofs use one SQLite log grown with ``record`` in batches of 25k,
with a signed checkpoint at each measured size:

- ``verify 100k``: ``tether.verify_audit()`` (every leaf recomputed, columns checked
  against the body, the tree rebuilt, checkpoints checked) in events/s, vs bare hashlib
  computing the RFC 9162 root of the same leaf bytes already in memory (every leaf hash
  and node hash, nothing else). Goal: ratio at least 0.5. The full run also verifies 10⁶.
- ``verify 100k vs scan``: the same figure against the bare driver (``sqlite3``, the
  cursor SQLAlchemy hands out) streaming the same six columns with ``fetchmany`` and
  hashing the bodies as above: what reading the store costs before any check. The peak
  memory one verification allocates (tracemalloc) goes to stderr.
- at 10⁶ events, median µs over random leaves (and random old sizes): ``inclusion
  gen`` (``inclusion(seq, size)``, read from the store) and ``consistency gen``
  (``consistency(size1, size)``) vs bare SQLAlchemy reading the same stored hashes in one
  read transaction (one query on ``events``, one on ``audit_nodes`` with one ``IN`` per
  level, which both SQLite and PostgreSQL answer from the primary key; a row-value
  ``(level, idx) IN (VALUES ...)`` is a full table scan on SQLite); ``inclusion verify``
  (``merkle.verify_inclusion``) vs bare hashlib doing as many node hashes as the proof has
  entries. Samples stop early (after at least 25) once the proofs have taken 20 s (120 s
  in the full run), saying so on stderr.

ratio = Tether ÷ baseline: below 1 Tether is slower on events/s rows; above 1 it is
slower on µs rows. Throughput figures are the best of three rounds, the measures taking
turns within a round.

    .venv/bin/python bench/audit.py [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from _common import (
    TIMES,
    Op,
    Result,
    best_of,
    expect,
    in_threads,
    main,
    postgres_schema,
    rate,
    result,
)

from tether import Settings, Tether
from tether.audit.log import AuditLog
from tether.audit.merkle import verify_consistency, verify_inclusion
from tether.audit.record import Entry, encode
from tether.audit.tree import Node, blocks, consistency_ranges, inclusion_ranges
from tether.store import audit_nodes, events

ROUNDS = 3  # as in _common.best_of
THREADS = 16  # callers of record() at once for the grouped figure
MANY = 100  # entries per record call
BUILD_BATCH = 25_000  # entries per record call while growing the big log
VERIFY_GOAL = 0.5  # verify at least half as fast as bare hashlib over the same bytes
MIN_SAMPLES = 25  # proof samples taken whatever the time budget
CHECKS = 10  # proofs checked (and bare reads counted) before timing
POOL = 1000  # distinct entries (and bodies) cycled through


@dataclass(frozen=True, slots=True)
class Plan:
    seconds: float  # length of one timed round of one append measure
    verify_sizes: tuple[int, ...]  # log sizes at which full verification is timed
    big: int  # log size for the proofs
    samples: int  # random leaves (and old sizes) per proof measure
    proof_seconds: float  # ... unless the proofs have taken this long (at least MIN_SAMPLES)


QUICK = Plan(seconds=0.4, verify_sizes=(100_000,), big=1_000_000, samples=2000, proof_seconds=20)
FULL = Plan(
    seconds=2.0, verify_sizes=(100_000, 1_000_000), big=1_000_000, samples=20_000, proof_seconds=120
)

plain = sa.Table(  # the baseline's table: the body text and a key, nothing else
    "bench_plain",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("body", sa.Text, nullable=False),
)


def entry(i: int) -> Entry:
    """A decision event as ``Tether.record`` writes it (see ``core.decision_entry``)."""
    agent = f"agent-{i % 50}"
    return Entry.of(
        "decision",
        actor=agent,
        subject=agent,
        chain=("user:alice@example.com", agent),
        action="tools/call",
        resource=f"github/repo-{i}",
        decision="allow",
        reasons=(f"grant g-{i % 7} allows tools/call on github/*",),
        detail={"grants": [f"g-{i % 7}"], "policies": [], "epoch": 3 + i % 5, "cached": False},
    )


ENTRIES = [entry(i) for i in range(POOL)]


def bodies(tether: Tether) -> list[str]:
    """The canonical body text of each pool entry, as the log would store it."""
    at = tether.clock()
    return [encode(e, 1_000_000 + i, at)[1] for i, e in enumerate(ENTRIES)]


# ---- appends ----------------------------------------------------------------------------


def record(log: AuditLog, e: Entry) -> int:
    """``log.record`` of one event, returned after its commit."""
    [seq] = log.record(e)
    return seq


def bench_appends(label: str, tether: Tether, seconds: float) -> list[Result]:
    log = tether.events
    engine = tether.store.engine
    plain.create(engine)
    texts = bodies(tether)

    # Check both paths write what they claim before timing anything.
    before = log.size()
    [seq] = log.record(
        Entry.of("decision", actor="agent-0", subject="agent-0", reason="bench check")
    )
    expect(seq == before + 1 and log.size() == seq, f"record() gave {seq} after {before}")
    expect(len(log.record(*ENTRIES[:MANY])) == MANY, "record lost entries")
    with engine.begin() as conn:
        conn.execute(sa.insert(plain), {"body": texts[0]})
        stored = conn.execute(sa.select(plain.c.body).order_by(plain.c.id.desc())).first()
    expect(stored is not None and stored.body == texts[0], "the baseline did not store the body")

    def one(_tag: str, _n: int) -> Op:
        return lambda i: record(log, ENTRIES[i % POOL])

    def insert_one(_tag: str, _n: int) -> Op:
        def op(i: int) -> None:
            with engine.begin() as conn:
                conn.execute(sa.insert(plain), {"body": texts[i % POOL]})

        return op

    def many(_tag: str, _n: int) -> Op:
        batches = [ENTRIES[k : k + MANY] for k in range(0, POOL, MANY)]
        return lambda i: log.record(*batches[i % len(batches)])

    def executemany(size: int) -> Callable[[str, int], Op]:
        rows = [{"body": t} for t in texts]
        batches = [rows[k : k + size] for k in range(0, POOL - size + 1, size)]

        def make(_tag: str, _n: int) -> Op:
            def op(i: int) -> None:
                with engine.begin() as conn:
                    conn.execute(sa.insert(plain), batches[i % len(batches)])

            return op

        return make

    rates = best_of(
        {
            "one": (one, 10_000_000),
            "insert one": (insert_one, 10_000_000),
            "many": (many, 10_000_000),
            "executemany": (executemany(MANY), 10_000_000),
        },
        seconds,
        warm_calls=200,
    )
    per_many = {k: v * MANY for k, v in rates.items() if k in ("many", "executemany")}

    grouped, batch, group = concurrent_appends(tether, seconds, executemany(THREADS))
    print(
        f"{label}: grouped record() by {THREADS} threads committed {group:.1f} events per "
        "transaction on average",
        file=sys.stderr,
    )
    return [
        result(f"{label} append 1", rates["one"], rates["insert one"], "events/s"),
        result(f"{label} append grouped", grouped, batch, "events/s"),
        result(
            f"{label} append many {MANY}", per_many["many"], per_many["executemany"], "events/s"
        ),
    ]


def concurrent_appends(
    tether: Tether, seconds: float, batch: Callable[[str, int], Op]
) -> tuple[float, float, float]:
    """(events/s of THREADS threads each calling record() in a loop, events/s of the bare
    executemany of THREADS rows, mean events per Tether commit): best of ROUNDS rounds,
    taking turns."""
    log = tether.events
    commits = [0]
    log.on_commit(lambda _size: commits.__setitem__(0, commits[0] + 1))

    def threaded(duration: float) -> tuple[int, float]:
        def append(k: int, n: int) -> None:
            record(log, ENTRIES[(k * 61 + n) % POOL])

        return in_threads(append, THREADS, duration)

    threaded(0.05)  # warm up
    calls = max(10, int(seconds * rate(20, batch("warm", 20))))
    best, bare, events_done, commits_done = 0.0, 0.0, 0, 0
    for r in range(ROUNDS):
        before = commits[0]
        done, elapsed = threaded(seconds)
        events_done += done
        commits_done += commits[0] - before
        best = max(best, done / elapsed)
        bare = max(bare, rate(calls, batch(f"r{r}", calls)) * THREADS)
    return best, bare, events_done / max(1, commits_done)


# ---- verification -----------------------------------------------------------------------


def grow(tether: Tether, size: int) -> float:
    """Append pool entries with record until the log holds ``size`` events, then
    sign a checkpoint; the events/s of the growing."""
    log = tether.events
    start, have = time.perf_counter(), log.size()
    at = have
    while at < size:
        n = min(BUILD_BATCH, size - at)
        log.record(*[ENTRIES[(at + k) % POOL] for k in range(n)])
        at += n
    elapsed = time.perf_counter() - start
    tether.checkpoints.make()
    expect(log.size() == size, f"the log holds {log.size()} events, not {size}")
    return (size - have) / elapsed


def mth(leaves: Sequence[bytes]) -> bytes:
    """The RFC 9162 root with bare hashlib: each level pairs its nodes left to right and
    carries an odd last node up unchanged, which is the largest-power-of-two split."""
    sha256 = hashlib.sha256
    level = [sha256(b"\x00" + data).digest() for data in leaves]
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [
            sha256(b"\x01" + level[k] + level[k + 1]).digest() for k in range(0, len(level) - 1, 2)
        ]
        if odd is not None:
            level.append(odd)
    return level[0] if level else sha256(b"").digest()


SCAN = sa.text("SELECT seq, at, type, subject, body, leaf_hash FROM events ORDER BY seq")
RAW_SCAN = "SELECT seq, at, type, subject, CAST(body AS BLOB), leaf_hash FROM events ORDER BY seq"


def bench_verify(tether: Tether, size: int) -> list[Result]:
    engine = tether.store.engine
    with engine.connect() as conn:
        data = [row.body.encode("utf-8") for row in conn.execute(SCAN)]
    expect(len(data) == size, f"read {len(data)} bodies, not {size}")
    report = tether.verify_audit()
    expect(report.ok, f"verification failed: {report.problems}")
    expect(report.size == size and report.checkpoints >= 1, "verified the wrong log")
    expect(mth(data) == report.root, "bare hashlib finds another root than verify_audit")
    expect(tether.events.root()[1] == report.root, "the stored tree has another root")

    def timed(work: Callable[[], object]) -> float:
        start = time.perf_counter()
        work()
        return size / (time.perf_counter() - start)

    def scan_and_hash() -> bytes:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cursor = raw.cursor()
            cursor.execute(RAW_SCAN)
            bodies: list[bytes] = []
            while rows := cursor.fetchmany(10_000):
                bodies += [row[4] for row in rows]
            cursor.close()
            return mth(bodies)

    expect(scan_and_hash() == report.root, "the bare scan finds another root")
    tracemalloc.start()
    tether.verify_audit()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"verify {size:,}: peak memory allocated {peak / 1e6:.1f} MB", file=sys.stderr)

    best = {"verify": 0.0, "raw": 0.0, "scan": 0.0}
    for _ in range(ROUNDS):
        best["verify"] = max(best["verify"], timed(tether.verify_audit))
        best["raw"] = max(best["raw"], timed(lambda: mth(data)))
        best["scan"] = max(best["scan"], timed(scan_and_hash))
    name = f"verify {short(size)}"
    return [
        result(name, best["verify"], best["raw"], "events/s"),
        result(f"{name} vs scan", best["verify"], best["scan"], "events/s"),
    ]


def short(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def profile_verify(tether: Tether, top: int = 12) -> None:
    """Where verify_audit spends its time, on stderr (the ratio missed its goal)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(tether.verify_audit)
    print("verify_audit profile (cProfile, by own time):", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(top)


# ---- proofs -----------------------------------------------------------------------------


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def bench_proofs(tether: Tether, size: int, samples: int, budget: float) -> list[Result]:
    log = tether.events
    engine = tether.store.engine
    rng = random.Random(9162)
    seqs = [rng.randint(1, size) for _ in range(samples)]
    olds = [rng.randint(1, size - 1) for _ in range(samples)]
    _, root = log.root(size)

    # Check the proofs before timing anything (each check raises VerificationFailed).
    for seq, old in zip(seqs[:CHECKS], olds[:CHECKS], strict=True):
        at, leaf, proof = log.inclusion(seq, size)
        verify_inclusion(seq - 1, at, leaf, proof, root)
        verify_consistency(old, size, log.root(old)[1], root, log.consistency(old, size))

    def nodes(
        ranges: list[tuple[int, int]], extra: Sequence[Node] = ()
    ) -> tuple[list[int], list[Node]]:
        """(leaf seqs, inner nodes) the proof of ``ranges`` is folded from."""
        wanted = set(extra) | {node for lo, hi in ranges for node in blocks(lo, hi)}
        leaves = sorted(idx + 1 for level, idx in wanted if level == 0)
        inner = sorted((level, idx) for level, idx in wanted if level > 0)
        return leaves, inner

    def bare_read(leaves: list[int], inner: list[Node]) -> int:
        by_level: dict[int, list[int]] = {}
        for level, idx in inner:
            by_level.setdefault(level, []).append(idx)
        found = 0
        with engine.connect() as conn, conn.begin():
            if leaves:
                query = sa.select(events.c.leaf_hash).where(events.c.seq.in_(leaves))
                found += len(conn.execute(query).all())
            if inner:  # one IN per level: an index search on SQLite and PostgreSQL alike
                found += len(
                    conn.execute(
                        sa.select(audit_nodes.c.hash).where(
                            sa.or_(
                                *(
                                    sa.and_(audit_nodes.c.level == level, audit_nodes.c.idx.in_(ix))
                                    for level, ix in by_level.items()
                                )
                            )
                        )
                    ).all()
                )
        return found

    for seq, old in zip(seqs[:CHECKS], olds[:CHECKS], strict=True):
        for leaves, inner in (
            nodes(inclusion_ranges(seq - 1, size), [(0, seq - 1)]),
            nodes(consistency_ranges(old, size)),
        ):
            expect(bare_read(leaves, inner) == len(leaves) + len(inner), "bare read missed nodes")

    clock = time.perf_counter
    kinds = ("inc", "inc bare", "ver", "ver bare", "con", "con bare")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    sha256 = hashlib.sha256
    begin = clock()
    for k, seq in enumerate(seqs):
        if k >= MIN_SAMPLES and clock() - begin > budget:
            print(
                f"proofs: stopped after {k:,} of {samples:,} samples ({budget:.0f}s budget)",
                file=sys.stderr,
            )
            break
        leaves, inner = nodes(inclusion_ranges(seq - 1, size), [(0, seq - 1)])
        t0 = clock()
        _, leaf, proof = log.inclusion(seq, size)
        t1 = clock()
        bare_read(leaves, inner)
        t2 = clock()
        verify_inclusion(seq - 1, size, leaf, proof, root)
        t3 = clock()
        r = leaf
        for p in proof:
            r = sha256(b"\x01" + p + r).digest()
        t4 = clock()
        old = olds[k]
        leaves, inner = nodes(consistency_ranges(old, size))
        t5 = clock()
        log.consistency(old, size)
        t6 = clock()
        bare_read(leaves, inner)
        t7 = clock()
        for name, took in (
            ("inc", t1 - t0),
            ("inc bare", t2 - t1),
            ("ver", t3 - t2),
            ("ver bare", t4 - t3),
            ("con", t6 - t5),
            ("con bare", t7 - t6),
        ):
            times[name].append(took)
    at = short(size)
    m = {k: median_us(v) for k, v in times.items()}
    return [
        result(f"inclusion gen {at}", m["inc"], m["inc bare"], "µs"),
        result(f"inclusion verify {at}", m["ver"], m["ver bare"], "µs"),
        result(f"consistency gen {at}", m["con"], m["con bare"], "µs"),
    ]


# ---- the stores -------------------------------------------------------------------------


@contextlib.contextmanager
def fresh(settings: Settings) -> Iterator[Tether]:
    tether, _ = Tether.init(settings)
    with tether:
        yield tether


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        home = Path(tmp)
        with fresh(Settings.load(home / "sqlite")) as tether:
            results += bench_appends("sqlite", tether, plan.seconds)
        with postgres_schema() as url:
            if url is not None:
                with fresh(Settings.load(home / "pg", db_url=url)) as tether:
                    results += bench_appends("postgresql", tether, plan.seconds)
        with fresh(Settings.load(home / "big")) as tether:
            started = time.perf_counter()
            for size in sorted({*plan.verify_sizes, plan.big}):
                speed = grow(tether, size)
                print(
                    f"grew the SQLite log to {size:,} events ({speed:,.0f} events/s by "
                    f"record of {BUILD_BATCH:,}; {time.perf_counter() - started:.0f}s "
                    "so far)",
                    file=sys.stderr,
                )
                if size in plan.verify_sizes:
                    found = bench_verify(tether, size)
                    results += found
                    if found[0].ratio < VERIFY_GOAL:
                        profile_verify(tether)
                if size == plan.big:
                    results += bench_proofs(tether, size, plan.samples, plan.proof_seconds)
    return results


def footer(results: list[Result]) -> list[str]:
    lines = [
        "baseline = bare SQLAlchemy Core on the same database (appends, proof reads), bare",
        "hashlib over the same leaf bytes (verify), or the bare driver's scan + hashlib (vs scan)",
        f"ratio = Tether ÷ baseline: events/s below 1{TIMES} and µs above 1{TIMES} are slower",
    ]
    for r in results:
        if r.name.startswith("verify") and not r.name.endswith("scan"):
            verdict = "met" if r.ratio >= VERIFY_GOAL else "MISSED"
            lines.append(
                f"goal {r.name}: at least {VERIFY_GOAL}{TIMES} bare hashlib: {verdict} at "
                f"{r.ratio:.2f}{TIMES}"
            )
    return lines


if __name__ == "__main__":
    main("audit", __doc__ or "", run, footer, baseline="baseline", width=26)
