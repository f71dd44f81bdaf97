"""The detector job: audit events after a durable cursor in, alerts out.

**Exactly once.** A batch of events after the cursor is read, fed to the engine
(:class:`~tether.detect.engine.Engine`), and then *one* write transaction stores what it
learned: the baselines that changed, the alerts it raised (with their ``alert.raised``
events and the agents' new risk scores), the automatic actions the response policy asks
for (as ``pending``), and the cursor, moved by compare-and-set on its old value. Either
all of it commits or none of it does: a process that dies half way leaves the cursor where
it was, and the next holder reads the same events again from the same baselines. So no
event is skipped and no alert is raised twice.

**One detector per store.** The job holds a store lock (``job:detect``: a PostgreSQL
session advisory lock, or a file lock beside a SQLite store) while it works; other
processes leave the detector to the holder and take it over when the holder stops or
dies. The compare-and-set on the cursor is the second guard: if two ever raced, the later
commit finds the cursor moved, rolls back and starts again from the stored state.

**Responses** are taken after the commit, from the ``pending`` rows
(:class:`~tether.detect.response.Responder`), so a crash between the two leaves them to
the next tick.

Events the detector raises itself (``alert.*``, ``detect.*``, actor ``system:detect``)
are not fed back: :func:`~tether.detect.observe.observe` holds no observation for them.

**Nothing it cannot read stops it.** A stored baseline that cannot be read makes its agent
start afresh; the batch records a ``detect.baseline_reset`` event (actor
``system:detect``, subject the agent, the reason) with the rest, and the bad row is
replaced; an event the engine cannot judge is recorded as a ``detect.skipped`` event
(its seq, the agent, the error) and the batch goes on (:mod:`tether.detect.engine`). A
finding the alert store would refuse (an agent of another trust domain, an unknown
severity) is dropped the same way, said in a ``detect.skipped`` event. So no event stops
the detector, and none is passed over without a record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tether.audit.record import Entry
from tether.callers import Caller
from tether.config import SEVERITIES, DetectSettings
from tether.detect.alerts import Alerts
from tether.detect.budget import budget, held_evidence
from tether.detect.engine import Engine
from tether.detect.model import SYSTEM_ACTOR, AgentFacts, Alert, Finding
from tether.detect.response import Responder
from tether.epoch import StateEpoch
from tether.errors import Conflict, NotFound, TetherError
from tether.jobs import Periodic
from tether.model import Event
from tether.registry import Registry
from tether.services import Services
from tether.store import detect_baselines, detect_cursor
from tether.store.locks import StoreLock

__all__ = ["CURSOR", "Detector", "RegistryFacts", "TickReport"]

log = logging.getLogger("tether.detect")

CURSOR = "detector"  # the name of the detector's row in detect_cursor


class RegistryFacts:
    """:class:`~tether.detect.model.Facts` from the registry, remembered while the state
    epoch stands (every registry change moves it; :meth:`refresh` before each batch) and
    dropped for an agent as soon as one of its ``agent.*`` events is read (:meth:`drop`):
    an agent is never judged by facts older than the events read before."""

    def __init__(self, registry: Registry, epoch: StateEpoch) -> None:
        self._registry = registry
        self._epoch = epoch
        self._at_epoch: int | None = None
        self._seen: dict[str, AgentFacts | None] = {}
        self._by = Caller.system("detect")

    def refresh(self) -> None:
        """Before a batch: forget everything if the epoch moved."""
        epoch = self._epoch.current()
        if epoch != self._at_epoch:
            self._seen.clear()
            self._at_epoch = epoch

    def drop(self, agent_id: str) -> None:
        """Forget ``agent_id``'s facts (a lifecycle event about it was just read)."""
        self._seen.pop(agent_id, None)

    def agent(self, agent_id: str) -> AgentFacts | None:
        if agent_id not in self._seen:
            self._seen[agent_id] = self._look_up(agent_id)
        return self._seen[agent_id]

    def _look_up(self, agent_id: str) -> AgentFacts | None:
        try:
            agent = self._registry.get(self._by, agent_id)
        except (NotFound, TetherError):  # another trust domain, or no such agent
            return None
        return AgentFacts(
            id=agent.id,
            kind=agent.kind.value,
            owner=agent.owner,
            state=agent.state.value,
            shadow=agent.owner is None and "discovery.finding" in agent.labels,
        )

    def named(self, agent_id: str) -> bool:
        """Whether ``agent_id`` names an agent of this trust domain (alerts are about those
        only)."""
        try:
            self._registry.parse_ref(agent_id)
        except TetherError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one batch did."""

    read: int  # events read after the cursor
    cursor: int  # the cursor after the batch
    alerts: tuple[Alert, ...] = ()


class Detector:
    """The detector of one store. :meth:`tick` works one batch (the job calls it under
    its lock); :meth:`job` makes the background job."""

    def __init__(
        self,
        services: Services,
        registry: Registry,
        alerts: Alerts,
        responder: Responder,
        settings: DetectSettings | None = None,
    ) -> None:
        self._services = services
        self._store = services.store
        self._events = services.events
        self._settings = settings or services.settings.detect
        self._alerts = alerts
        self._responder = responder
        self._facts = RegistryFacts(registry, services.epoch)
        self._engine = self._new_engine()
        self._cursor: int | None = None  # where the in-memory engine state stands
        self._primed: dict[str, str] = {}  # stored baselines being loaded by _prime

    def _new_engine(self) -> Engine:
        return Engine(self._settings, self._facts, self._baseline)

    # ---- the batch ---------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Read the next batch after the cursor, detect, commit; then take the pending
        automatic actions. Returns what was done."""
        stored = self.cursor()
        if stored != self._cursor:  # first run, or another process moved it: start afresh
            self.forget()
            self._prime()
            self._cursor = stored
        found = self._events.bodies(after=stored, limit=self._settings.batch_size)
        if not found:
            self._responder.run_pending()
            return TickReport(0, stored)
        self._facts.refresh()
        last = found[-1][0]
        try:
            findings: list[Finding] = []
            skipped = []
            for finding in self._engine.feed(self._parsed(found)):
                refused = self._refused(finding)
                if refused is None:
                    findings.append(finding)
                else:
                    skipped.append((max(finding.evidence, default=last), finding.agent, refused))
            skipped.extend(self._engine.skipped())
            raised = self._commit(
                stored, last, findings, self._engine.dirty(), self._engine.resets(), skipped
            )
        except Exception:
            self.forget()  # the engine's state is ahead of the store's: rebuild it from there
            raise
        self._cursor = last
        self._responder.run_pending()
        return TickReport(len(found), last, tuple(raised))

    def _parsed(self, found: Iterable[tuple[int, Any, str]]) -> Iterator[Event]:
        """The batch's events one by one (parsed as the engine takes them, so a batch never
        holds thousands of parsed events at once; the engine's observe() ignores the
        detector's own ``alert.*`` / ``detect.*``); an agent's lifecycle event makes its
        registry facts be looked up afresh."""
        for _, at, body in found:
            event = Event.from_body(json.loads(body), at)
            if event.type.startswith("agent.") and event.subject:
                self._facts.drop(event.subject)
            yield event

    def run_until_idle(self, limit: int = 1_000_000) -> list[Alert]:
        """Work batches until the log is read (tests, ``tether detect run --once``)."""
        raised: list[Alert] = []
        for _ in range(limit):
            report = self.tick()
            raised.extend(report.alerts)
            if report.read == 0:
                break
        return raised

    def _commit(
        self,
        old: int,
        new: int,
        findings: list[Finding],
        baselines: Mapping[str, Mapping[str, Any]],
        resets: Sequence[tuple[str, str]] = (),
        skipped: Sequence[tuple[int, str, str]] = (),
    ) -> list[Alert]:
        now = self._services.clock()
        for agent, why in resets:
            log.warning("stored baseline of %r unreadable, started afresh: %s", agent, why)
        for seq, agent, why in skipped:
            log.warning("event %d of %r skipped by the detector: %s", seq, agent, why)
        with self._store.write() as conn:
            moved = conn.execute(
                update(detect_cursor)
                .where(detect_cursor.c.name == CURSOR, detect_cursor.c.seq == old)
                .values(seq=new, updated_at=now)
            ).rowcount
            if moved != 1:
                raise Conflict(
                    f"the detector's cursor is no longer at {old}: another detector moved it"
                )
            for agent, body in baselines.items():
                _save_baseline(conn, agent, body, now)
            for agent, why in resets:
                text = f"the stored baseline could not be read ({why}): the agent is learned afresh"
                self._events.append(conn, _note("detect.baseline_reset", agent, text))
            for seq, agent, why in skipped:
                text = f"event {seq} was not judged: {why}"
                self._events.append(conn, _note("detect.skipped", agent, text, seq=seq))
            kept = budget(
                conn, findings, self._settings.max_alerts_per_agent_hour, now, self._exempt
            )
            for agent, held in kept.held.items():
                text = f"{len(held)} finding(s) held back by the alert budget"
                detectors = sorted({f.detector for f in held})
                seqs = held_evidence(held)
                self._events.append(
                    conn,
                    _note("detect.throttled", agent, text, detectors=detectors, evidence=seqs),
                )
            raised = self._alerts.raise_all(conn, kept.raised) if kept.raised else []
            self._responder.plan(conn, raised)
        return raised

    def _exempt(self, finding: Finding) -> bool:
        """Whether ``finding`` is raised whatever the alert budget (see :mod:`.budget`)."""
        if finding.severity in ("high", "critical"):
            return True
        return self._settings.response_for(finding.detector, finding.severity) != "alert"

    def _refused(self, finding: Finding) -> str | None:
        """Why the alert store would refuse ``finding`` (None: it would not)."""
        if not self._facts.named(finding.agent):
            return f"a {finding.detector} finding about {finding.agent!r}, not an agent here"
        if finding.severity not in SEVERITIES or not finding.detector:
            return f"a finding of {finding.detector!r} at severity {finding.severity!r}"
        return None

    def learn(self, history: Iterable[Event]) -> int:
        """Learn baselines from ``history``: events that are *not* in the log (the demo's
        synthetic past), in time order. No alert is raised from them; the baselines are
        stored and the cursor moves to the end of the log, so the detector judges what
        happens from now on against them. Returns the number of agents learned."""
        engine = self._new_engine()
        engine.feed(history)  # findings about a made-up past are not alerts
        learned = engine.dirty()
        stored, size = self.cursor(), self._events.size()
        now = self._services.clock()
        with self._store.write() as conn:
            for agent, body in learned.items():
                _save_baseline(conn, agent, body, now)
            conn.execute(
                update(detect_cursor)
                .where(detect_cursor.c.name == CURSOR, detect_cursor.c.seq == stored)
                .values(seq=max(stored, size), updated_at=now)
            )
        self.forget()
        return len(learned)

    # ---- state -------------------------------------------------------------------------

    def cursor(self) -> int:
        """The seq of the last event the detector has read (made at 0 if missing)."""
        with self._store.read() as conn:
            seq = conn.execute(
                select(detect_cursor.c.seq).where(detect_cursor.c.name == CURSOR)
            ).scalar()
        if seq is not None:
            return int(seq)
        with self._store.write() as conn:
            seq = conn.execute(
                select(detect_cursor.c.seq).where(detect_cursor.c.name == CURSOR)
            ).scalar()
            if seq is None:
                conn.execute(
                    insert(detect_cursor).values(
                        name=CURSOR, seq=0, updated_at=self._services.clock()
                    )
                )
                seq = 0
        return int(seq)

    def forget(self) -> None:
        """Drop what is in memory; baselines are read again from the store when needed
        (and pending actions looked for: the last holder may have left some)."""
        self._engine = self._new_engine()
        self._cursor = None
        self._responder.recheck()

    def _prime(self) -> None:
        """Load every stored baseline (one query), so that agents count as peers before
        they act again."""
        with self._store.read() as conn:
            rows = conn.execute(select(detect_baselines.c.agent, detect_baselines.c.body)).all()
        self._primed = {row.agent: row.body for row in rows}
        try:
            self._engine.prime(list(self._primed))
        finally:
            self._primed = {}

    def _baseline(self, agent: str) -> Mapping[str, Any] | None:
        body = self._primed.pop(agent, None)
        if body is not None:
            return json.loads(body)  # type: ignore[no-any-return]
        with self._store.read() as conn:
            body = conn.execute(
                select(detect_baselines.c.body).where(detect_baselines.c.agent == agent)
            ).scalar()
        return json.loads(body) if body is not None else None

    # ---- the job -----------------------------------------------------------------------

    def job(self, lock: StoreLock | None = None) -> Periodic:
        """The background job: a tick every ``interval_ms`` and as soon as events are
        committed in this process; with ``lock`` (the runtime passes ``job:detect``) only
        in the process holding it."""
        job = Periodic("detector", self._settings.interval_ms / 1000, self._tick_held, lock=lock)
        self._events.on_commit(lambda _size: job.wake())
        return job

    def _tick_held(self) -> None:
        while self.tick().read >= self._settings.batch_size:
            pass  # a full batch: more is waiting


def _note(kind: str, agent: str, reason: str, **detail: Any) -> Entry:
    """A ``detect.*`` event: something the detector did not judge as usual, on record."""
    return Entry.of(
        kind, actor=SYSTEM_ACTOR, subject=agent, resource=agent, reason=reason, detail=detail
    )


def _save_baseline(conn: Connection, agent: str, body: Mapping[str, Any], now: Any) -> None:
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    changed = conn.execute(
        update(detect_baselines)
        .where(detect_baselines.c.agent == agent)
        .values(body=text, updated_at=now)
    ).rowcount
    if not changed:
        conn.execute(insert(detect_baselines).values(agent=agent, body=text, updated_at=now))
