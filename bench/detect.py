"""The behaviour detector: throughput against merely reading the same events, the time
from an event to its alert inside a running Tether, and the false-positive rate on benign
traffic.

Set-up: the scenario workload of the test suite (``tests/helpers/workload.py``, shape A:
office hours in six zones, Poisson calls, stable Zipf tool sets; 12 agents for a week, or
6 agents for 2 days with ``--quick``) written into a fresh SQLite store as real audit
events (in commits of 20, each at its events' synthetic time), its agents registered with
their kind and owner. ``[detect] learning`` is 2 days.

- ``throughput``: ``Detector.run_until_idle`` from the start of the log (read a batch of
  ``[detect] batch_size`` (5,000) after the cursor, parse, detect, one commit of
  baselines, alerts and cursor per batch), in events/s, against the baseline of *reading*
  the same events the same way (``AuditLog.bodies`` after a cursor, in batches of the same
  size, each parsed into an ``Event``):
  the cost the detector cannot avoid. Goal: a ratio of at least 0.5. Best of 3.
- ``event->alert p50/p99``: a running Tether (``Runtime``, its background jobs started:
  the detector wakes on every commit of the audit log) and N unowned agents (their owner
  offboarded, 50 or 20 with ``--quick``); for each, one decision event is recorded and
  the time until its ``unowned_actor`` alert is in the store is measured (polled every
  millisecond). Baseline: the 1 s goal; a ratio below 1 meets it.
- ``high alerts``, ``medium per agent-week``: the engine over the benign week of shape A
  and of shape B (night-shift and 24x7 batch agents, bursty sessions, weekly cycle,
  heavier results; another seed), against the goals: no high alert (shown against a
  baseline of 1: the ratio must be 0) and fewer than 1 medium alert per agent-week.

    .venv/bin/python bench/detect.py [--quick] [--json]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Result, expect, main, result

from tether import Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.audit.record import Entry
from tether.callers import Caller
from tether.detect.engine import Engine
from tether.model import AgentKind, Event
from tether.registry import AgentSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.workload import Workload, shape_a, shape_b

ADMIN = Caller.admin()
DETECT = {"learning": "2d"}  # batch_size: the default (5,000)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _kind(kind: str) -> str:
    return kind if kind in {k.value for k in AgentKind} else AgentKind.AUTONOMOUS.value


def _register(tether: Tether, work: Workload) -> None:
    for p in work.profiles:
        tether.registry.register(
            ADMIN,
            AgentSpec(
                name=p.name,
                owner=p.owner,
                kind=_kind(p.kind),
                public_key=generate_key_pair().public_key,
                expires_in=timedelta(days=300),
            ),
        )


def _write(tether: Tether, clock: _Clock, events: list[Event]) -> None:
    """The events as real audit events, 20 to a commit at the last one's time."""
    for i in range(0, len(events), 20):
        chunk = events[i : i + 20]
        clock.now = chunk[-1].at
        tether.events.record(
            *(
                Entry(
                    type=e.type,
                    actor=e.actor,
                    subject=e.subject,
                    chain=e.chain,
                    action=e.action,
                    resource=e.resource,
                    decision=e.decision,
                    detail=e.detail,
                )
                for e in chunk
            )
        )


def _read_all(tether: Tether) -> int:
    after, count, batch = 0, 0, tether.settings.detect.batch_size
    while True:
        found = tether.events.bodies(after=after, limit=batch)
        if not found:
            return count
        for _, at, body in found:
            Event.from_body(json.loads(body), at)
        count += len(found)
        after = found[-1][0]


def _reset(tether: Tether) -> None:
    from sqlalchemy import delete, update

    from tether.store import alerts, detect_baselines, detect_cursor, detect_risk

    with tether.store.write() as conn:
        for table in (alerts, detect_baselines, detect_risk):
            conn.execute(delete(table))
        conn.execute(update(detect_cursor).values(seq=0))
    tether.detector.forget()


def _best(rounds: int, work: Callable[[], int], before: Callable[[], None]) -> float:
    best = 0.0
    for _ in range(rounds):
        before()
        start = time.perf_counter()
        n = work()
        best = max(best, n / (time.perf_counter() - start))
    return best


def _throughput(quick: bool) -> list[Result]:
    work = shape_a(agents=6, days=2) if quick else shape_a()
    events = work.events()
    with tempfile.TemporaryDirectory() as home:
        clock = _Clock()
        settings = Settings.load(Path(home), detect=DETECT)
        Tether.init(settings)[0].close()
        with Tether.open(settings, clock=clock) as tether:
            _register(tether, work)
            _write(tether, clock, events)
            size = tether.events.size()
            read = _best(3, lambda: _read_all(tether), lambda: None)

            def detect() -> int:
                tether.detector.run_until_idle()
                expect(tether.detector.cursor() >= size, "the detector read the whole log")
                return size

            detected = _best(3, detect, lambda: _reset(tether))
    print(f"{len(events):,} workload events, {size:,} in the log", file=sys.stderr)
    return [result("throughput", detected, read, "events/s")]


def _latency(quick: bool) -> list[Result]:
    from tether.server import Runtime

    n = 20 if quick else 50
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.load(Path(home), unowned_grace="30d")
        with Runtime(settings, initialise=True) as runtime:
            tether = runtime.tether
            names = [f"orphan-{i}" for i in range(n)]
            for name in names:
                tether.registry.register(
                    ADMIN,
                    AgentSpec(
                        name=name,
                        owner="gone@example.com",
                        public_key=generate_key_pair().public_key,
                    ),
                )
            tether.registry.offboard_owner(ADMIN, "gone@example.com", reason="bench")
            size = tether.events.size()
            while tether.detector.cursor() < size:  # the detector has read the set-up
                time.sleep(0.01)
            waits: list[float] = []
            for name in names:
                agent_id = tether.registry.agent_id(name)
                start = time.perf_counter()
                tether.events.record(
                    Entry.of(
                        "decision",
                        actor=agent_id,
                        chain=(agent_id,),
                        action="tools/call",
                        resource="files/read",
                        decision="allow",
                    )
                )
                while not tether.alerts.list(ADMIN, agent=agent_id):
                    expect(time.perf_counter() - start < 10, "an alert within 10 s")
                    time.sleep(0.001)
                waits.append((time.perf_counter() - start) * 1000)
    waits.sort()
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    return [
        result("event->alert p50", p50, 1000.0, "ms"),
        result("event->alert p99", p99, 1000.0, "ms"),
    ]


def _false_positives(quick: bool) -> list[Result]:
    from tether.config import DetectSettings

    settings = DetectSettings.model_validate({"learning": "2d"})
    rows: list[Result] = []
    for label, work in (("A", shape_a()), ("B", shape_b())):
        engine = Engine(settings, work.roster, lambda _agent: None)
        findings = engine.feed(work.events())
        weeks = len(work.profiles) * (work.end - work.events()[0].at).days / 7
        high = sum(1 for f in findings if f.severity in ("high", "critical"))
        medium = sum(1 for f in findings if f.severity == "medium") / weeks
        rows.append(Result(f"high alerts ({label})", high, "alerts", 1.0, float(high)))
        rows.append(result(f"medium/agent-week ({label})", medium, 1.0, "alerts"))
        if quick:
            break
    return rows


def run(quick: bool) -> list[Result]:
    return [*_throughput(quick), *_latency(quick), *_false_positives(quick)]


def footer(results: list[Result]) -> list[str]:
    by = {r.name: r for r in results}
    throughput = "met" if by["throughput"].ratio >= 0.5 else "MISSED"
    latency = "met" if by["event->alert p99"].ratio < 1 else "MISSED"
    return [
        f"throughput goal (>= 0.5x reading): {throughput}",
        f"event->alert p99 goal (< 1 s): {latency}",
    ]


if __name__ == "__main__":
    main("detect", __doc__ or "", run, footer, baseline="baseline", width=24)
