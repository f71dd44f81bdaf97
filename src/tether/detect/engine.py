"""The detection engine: audit events in, findings out. Pure: no store, no clock, no I/O.

:class:`Engine` is fed the audit log in ``seq`` order (the runner reads it after its
cursor). For each event it takes the observations (:func:`tether.detect.observe.observe`),
and for each agent they are about it runs the detectors that read those kinds against the
agent's :class:`~tether.detect.baseline.Baseline`, which they update as they go. Time is
the events' own (``Event.at``), never the wall clock: replaying a log gives the same
findings, and tests inject time through the events they make.

**Persistence and restarts.** The engine never writes: :meth:`Engine.dirty` hands over the
baselines changed since its last call, as JSON-ready dicts, and the runner stores them in
the transaction that advances its cursor. A baseline is read through ``load(agent_id)``
the first time an agent is met (``None``: a new agent). Everything that makes one anomaly
raise one finding (the open windows, their "reported" flags, cooldowns, learned items)
is in the baseline, so a restart from a committed cursor and the baselines committed with
it gives the same findings as an uninterrupted run. What is *not* persisted is a cache:
the registry facts (re-read through :class:`~tether.detect.model.Facts`) and the peer
index (kind + owner -> the agents met since start; :meth:`Engine.prime` fills it from
the baselines the runner knows of).

**What it cannot read, it says.** A stored baseline that cannot be read (not JSON, a
malformed document, an unknown version: ``load`` raises ``ValueError``) does not stop the
engine: that agent starts afresh, its learning period again, and the reset is handed to
the runner (:meth:`Engine.resets`), which records it as a ``detect.baseline_reset`` event
by ``system:detect`` in the batch's transaction (and logs it). So one bad row neither halts
detection for every agent (the runner would retry the same batch forever) nor blinds one
agent silently.

An event the engine cannot judge (a detector, or :func:`observe`, raises on it: a bug
some recorded value reaches) is skipped for that agent and handed to the runner with the
error (:meth:`Engine.skipped`), which records a ``detect.skipped`` event naming its seq:
the detector goes on with the next event instead of retrying the same batch for ever,
blind for everyone, and the event is not lost silently. Errors of the store (loading a
baseline, looking facts up) are not caught: the batch fails and is read again.

**Facts.** Each agent's facts (kind, owner, shadow) are looked up when it is first met,
again when a lifecycle event about it (``agent.*``) goes by, and at least every
:data:`FACTS_TTL` seconds of event time.

**Cost.** Per event: one observation tuple, one dict lookup per agent, and the detectors
that read its kinds, each O(1) (thresholds are precomputed when windows close). No
per-event sort, copy or allocation beyond the observations and one :class:`Moment`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from tether.config import DetectSettings
from tether.detect.baseline import Baseline
from tether.detect.detectors import Detector, Moment, build
from tether.detect.model import AgentFacts, Facts, Finding
from tether.detect.observe import DELEGATED_BY, Observation, is_agent, observe
from tether.model import Event

__all__ = ["FACTS_TTL", "Engine"]

FACTS_TTL: Final = 300.0  # seconds of event time between two lookups of an agent's facts

_Group = tuple[str, str | None]  # (kind, owner): a peer group


class _Agent:
    """An agent as the engine holds it: its baseline and the cached registry facts."""

    __slots__ = ("baseline", "facts", "facts_at", "group", "moment")

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
        self.facts: AgentFacts | None = None
        self.facts_at = float("-inf")
        self.group: _Group | None = None
        self.moment: Moment | None = None  # reused event after event (detectors keep none)


class Engine:
    """Events in, findings out (see the module docstring)."""

    def __init__(
        self,
        settings: DetectSettings,
        facts: Facts,
        load: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.settings = settings
        self._facts = facts
        self._load = load
        self._learning = settings.learning.total_seconds()
        self._detectors = build(settings)
        self._dispatch: dict[tuple[str, ...], tuple[Detector, ...]] = {}
        self._agents: dict[str, _Agent] = {}
        self._groups: dict[_Group, set[str]] = {}
        self._dirty: set[str] = set()
        self._resets: list[tuple[str, str]] = []  # (agent, why): unreadable baselines
        self._skipped: list[tuple[int, str, str]] = []  # (seq, agent, why): not judged

    # ---- the public face ----------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> list[Finding]:
        """Judge ``events`` (in ``seq`` order); the findings they raise, in order."""
        found: list[Finding] = []
        for event in events:
            try:
                observations = observe(event)
            except Exception as exc:  # skipped and said (the module docstring)
                self._skipped.append((event.seq, event.actor, _why(exc)))
                continue
            if not observations:
                if event.type.startswith("agent.") and is_agent(event.subject):
                    self._stale(str(event.subject))
                continue
            first = observations[0].agent
            if len(observations) == 1 or all(o.agent == first for o in observations):
                self._judge(first, event, observations, found)
                continue
            groups: dict[str, list[Observation]] = {}
            for o in observations:
                groups.setdefault(o.agent, []).append(o)
            for agent, group in groups.items():
                self._judge(agent, event, group, found)
        return found

    def dirty(self) -> dict[str, dict[str, Any]]:
        """The baselines changed since the last call, as dicts to persist (agent id ->
        :meth:`Baseline.to_dict`); the dirty set is then empty."""
        changed = {a: self._agents[a].baseline.to_dict() for a in sorted(self._dirty)}
        self._dirty.clear()
        return changed

    def resets(self) -> list[tuple[str, str]]:
        """The agents whose stored baseline could not be read since the last call, and
        why (each started afresh); the list is then empty."""
        found, self._resets = self._resets, []
        return found

    def skipped(self) -> list[tuple[int, str, str]]:
        """The events not judged since the last call: (seq, agent, the error); the list
        is then empty."""
        found, self._skipped = self._skipped, []
        return found

    def forget(self) -> None:
        """Drop every in-memory state (the runner lost its lock: another process goes on
        from the committed cursor and baselines; this one will reload them if it resumes)."""
        self._agents.clear()
        self._groups.clear()
        self._dirty.clear()
        self._resets.clear()
        self._skipped.clear()
        self._detectors = build(self.settings)  # drops the detectors' per-run memos
        self._dispatch.clear()

    def prime(self, agents: Iterable[str]) -> None:
        """Load the baselines of ``agents`` now, so that they count as peers before they
        act (after a restart, the runner primes with every agent it has a baseline of)."""
        for agent in agents:
            held = self._agent(agent, float("-inf"))
            if held.facts_at == float("-inf"):
                self._refresh(agent, held, float("-inf"))

    def baseline(self, agent: str) -> Baseline | None:
        """The in-memory baseline of ``agent`` (None if not met since start)."""
        held = self._agents.get(agent)
        return held.baseline if held else None

    # ---- the work ---------------------------------------------------------------------------

    def _judge(
        self, agent: str, event: Event, observations: Sequence[Observation], found: list[Finding]
    ) -> None:
        now = event.at.timestamp()
        held = self._agent(agent, now)
        baseline = held.baseline
        kinds = (  # observe() gives them in a fixed order
            (observations[0].kind,)
            if len(observations) == 1
            else tuple([o.kind for o in observations])
        )
        detectors = self._dispatch.get(kinds)
        if detectors is None:
            detectors = tuple(d for d in self._detectors if not d.kinds.isdisjoint(kinds))
            self._dispatch[kinds] = detectors
        moment = held.moment
        if moment is None:
            moment = held.moment = Moment(
                agent=agent,
                baseline=baseline,
                facts=None,
                event=event,
                now=now,
                learning=True,
                previous=None,
                peers=lambda: self._peers(agent, held, held.moment.now if held.moment else 0.0),
            )
        moment.facts = held.facts
        moment.event = event
        moment.now = now
        moment.learning = baseline.learning(now, self._learning)
        moment.previous = baseline.last_seen
        try:
            for detector in detectors:
                finding = detector.observe(moment, observations)
                if finding is not None:
                    found.append(finding)
        except Exception as exc:  # skipped and said (the module docstring)
            self._skipped.append((event.seq, agent, _why(exc)))
        baseline.seen(now, event.seq, active=kinds != (DELEGATED_BY,))
        self._dirty.add(agent)

    def _agent(self, agent: str, now: float) -> _Agent:
        held = self._agents.get(agent)
        if held is None:
            try:
                data = self._load(agent)
                baseline = (
                    Baseline.from_dict(data, self.settings)
                    if data is not None
                    else Baseline(agent, self.settings)
                )
            except ValueError as exc:  # unreadable: afresh, and said (the module docstring)
                baseline = Baseline(agent, self.settings)
                self._resets.append((agent, str(exc)))
                self._dirty.add(agent)  # the bad row is replaced at the next commit
            held = self._agents[agent] = _Agent(baseline)
        if now - held.facts_at > FACTS_TTL:
            self._refresh(agent, held, now)
        return held

    def _refresh(self, agent: str, held: _Agent, now: float) -> None:
        held.facts = facts = self._facts.agent(agent)
        held.facts_at = now
        group = (facts.kind, facts.owner) if facts is not None and facts.owner else None
        if group != held.group:
            if held.group is not None:
                self._groups[held.group].discard(agent)
            if group is not None:
                self._groups.setdefault(group, set()).add(agent)
            held.group = group

    def _stale(self, agent: str) -> None:
        held = self._agents.get(agent)
        if held is not None:
            held.facts_at = float("-inf")  # looked up again at its next observation

    def _peers(self, agent: str, held: _Agent, now: float) -> list[Baseline]:
        if held.group is None:
            return []
        peers = []
        for other in self._groups.get(held.group, ()):
            if other != agent:
                baseline = self._agents[other].baseline
                if not baseline.learning(now, self._learning):
                    peers.append(baseline)
        return peers


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
