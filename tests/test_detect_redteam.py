"""The detector under attack: events, stored state and configuration chosen to halt it,
blind it, turn its automatic response on the wrong agent or disable it. Each test names
what the attacker controls; each was a failing regression test before its fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, spec
from sqlalchemy import select, update
from test_detect_runner import ADMIN, PERSON, _call, _routine, opened

from tether.audit.record import Entry
from tether.config import Settings
from tether.core import Tether
from tether.detect.detectors import Moment
from tether.detect.detectors.first_use import FirstUse
from tether.errors import InvalidRequest
from tether.model import AgentState
from tether.safe_text import UNSAFE
from tether.store import detect_baselines

__all__ = ["opened"]  # the fixture, shared with the runner's tests


def _record(tether: Tether, kind: str, agent: str, **fields: Any) -> int:
    """Record an event by ``agent`` (a name, or any ``spiffe://`` ID as it is)."""
    agent_id = agent if agent.startswith("spiffe://") else tether.registry.agent_id(agent)
    fields.setdefault("chain", (PERSON, agent_id))
    [seq] = tether.events.record(Entry.of(kind, actor=agent_id, subject=agent_id, **fields))
    return seq


def _office(clock: Clock) -> None:
    clock.now = clock.now.replace(hour=11, minute=0)


# ---- halting the detector -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"version": 1, "agent": "x", "first_seen": "not a time"',  # not JSON
        "[1, 2, 3]",  # not an object
        '{"version": 99}',  # a version this process does not know
        '{"version": 1, "agent": "x", "first_seen": null, "last_seen": null, '
        '"last_seq": Infinity, "sets": {}, "saturated": [], "marks": {}, "hours": null}',
        '{"version": 1, "agent": "x", "first_seen": null, "last_seen": null, '
        '"last_seq": 1, "sets": {}, "saturated": [], "marks": {}, "hours": null, '
        '"calls": {"window": 300, "history": ["x"], "index": 0, "value": 0, '
        '"alerted": false, "evidence": []}}',
    ],
)
def test_a_corrupt_stored_baseline_does_not_halt_the_detector(
    opened: Callable[..., Tether], clock: Clock, body: str
) -> None:
    """Attacker (or a bad restore) controls one ``detect_baselines.body``: the detector
    must go on for everyone, say what it did, and judge that agent afresh."""
    tether = opened()
    for name in ("worker", "other"):
        tether.registry.register(ADMIN, spec(name))
    _routine(tether, clock, ["worker", "other"], days=3)
    tether.detector.run_until_idle()
    worker = tether.registry.agent_id("worker")
    with tether.store.write() as conn:
        conn.execute(
            update(detect_baselines).where(detect_baselines.c.agent == worker).values(body=body)
        )
    _office(clock)
    _call(tether, "worker", "read_a")
    novel = _call(tether, "other", "export_all")
    with Tether.open(tether.settings, clock=clock) as restarted:  # reads the stored rows
        raised = restarted.detector.run_until_idle()
        assert restarted.detector.cursor() == restarted.events.size()
    assert [(a.detector, a.evidence) for a in raised if a.agent.endswith("/other")] == [
        ("first_use", (novel,))
    ]
    [skipped] = tether.events.list(type="detect.baseline_reset")
    assert skipped.actor == "system:detect" and skipped.subject == worker
    assert "baseline" in skipped.reason
    with tether.store.read() as conn:  # the bad row was replaced by a readable one
        stored = conn.execute(
            select(detect_baselines.c.body).where(detect_baselines.c.agent == worker)
        ).scalar_one()
    assert json.loads(stored)["version"] == 1


# ---- the circuit breaker -----------------------------------------------------------------


def test_one_agent_cannot_trip_the_breaker_with_actions_that_change_nothing(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    """Attacker controls one agent and what it calls: a burst of new tools raises many
    alerts whose ``suspend`` is redundant after the first; that must not use up the
    breaker and leave the next agent's attack unanswered."""
    tether = opened(response={"first_use": "suspend"}, max_actions_per_hour=3)
    for name in ("decoy", "target"):
        tether.registry.register(ADMIN, spec(name))
    _routine(tether, clock, ["decoy", "target"], days=3)
    tether.detector.run_until_idle()
    _office(clock)
    for n in range(6):
        _call(tether, "decoy", f"new_{n}")
    tether.detector.run_until_idle()
    assert tether.registry.get(ADMIN, "decoy").state is AgentState.SUSPENDED
    outcomes = sorted(
        x.outcome for a in tether.alerts.list(ADMIN, agent="decoy") for x in a.actions
    )
    assert outcomes == ["done"] + ["unneeded"] * 5
    clock.advance(minutes=5)
    _call(tether, "target", "export_all")
    tether.detector.run_until_idle()
    assert tether.registry.get(ADMIN, "target").state is AgentState.SUSPENDED
    assert not [a for a in tether.alerts.list(ADMIN) if a.detector == "response_breaker"]


# ---- the wrong agent ----------------------------------------------------------------------


def test_being_delegated_to_never_makes_the_delegate_the_agent_acted_on(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    """Attacker controls a new agent that may delegate to a long-standing one: its first
    hand-off must not put the innocent delegate under an alert's automatic response."""
    tether = opened(response={"new_delegation": "suspend"})
    tether.registry.register(ADMIN, spec("veteran"))
    _routine(tether, clock, "veteran", days=3)
    tether.detector.run_until_idle()
    tether.registry.register(ADMIN, spec("rogue", kind="other"))
    _office(clock)
    veteran = tether.registry.agent_id("veteran")
    seq = _record(
        tether, "decision", "rogue", action="delegate", resource=veteran, decision="allow"
    )
    raised = tether.detector.run_until_idle()
    found = [a for a in raised if a.detector == "new_delegation"]
    rogue = tether.registry.agent_id("rogue")
    assert [(a.agent, a.evidence, a.detail["side"]) for a in found] == [
        (rogue, (seq,), "delegated_by")
    ]
    assert tether.registry.get(ADMIN, "veteran").state is AgentState.ACTIVE
    assert tether.risk.score("veteran") == 0
    assert tether.registry.get(ADMIN, "rogue").state is AgentState.SUSPENDED


# ---- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("[detect.detectors.call_rate]\nmad_k = inf\n", "detect.detectors.call_rate.mad_k"),
        ("[detect.detectors.call_rate]\nmad_k = nan\n", "detect.detectors.call_rate.mad_k"),
        ("[detect.detectors.call_rate]\nfactor = inf\n", "detect.detectors.call_rate.factor"),
        (
            "[detect.detectors.result_volume]\nmin_count = inf\n",
            "detect.detectors.result_volume.min_count",
        ),
        ("[detect.detectors.off_hours]\nmin_share = nan\n", "detect.detectors.off_hours.min_share"),
        ("[detect.detectors.enumeration]\nfactor = nan\n", "detect.detectors.enumeration.factor"),
        ("[detect]\nlearning = -5\n", "detect.learning"),
        ("[detect]\nlearning = 0\n", "detect.learning"),
        ("[detect.detectors.call_rate]\nwindow = -300\n", "detect.detectors.call_rate.window"),
        ("[detect.detectors.call_rate]\nwindow = 0.5\n", "detect.detectors.call_rate.window"),
        ("[detect.detectors.dormant_wake]\nafter = -1\n", "detect.detectors.dormant_wake.after"),
        ("[detect.detectors.call_rate]\nwindow = 1e300\n", "detect.detectors.call_rate.window"),
        ('[detect]\ntimezone = ""\n', "timezone"),
        ('[detect]\ntimezone = "../../etc/passwd"\n', "timezone"),
    ],
)
def test_malformed_detector_values_are_a_start_up_error_naming_the_key(
    tmp_path: Path, config: str, named: str
) -> None:
    """Whoever writes ``tether.toml`` controls these: a value the detector cannot use is
    refused when the settings load, never a crash (or a silently blind detector) later."""
    (tmp_path / "tether.toml").write_text(config, encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        Settings.load(tmp_path)
    assert named in caught.value.description


# ---- poison events ---------------------------------------------------------------------


def test_events_with_odd_bodies_neither_halt_the_detector_nor_lose_the_alert(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    """Attacker controls the strings and numbers Tether records about its agent (tool
    names, paths, audiences, sizes) and which identities appear as actors: none of it may
    stop the detector (it would retry the same batch for ever, blind for everyone), and the
    alert it should raise is stored on both stores."""
    tether = opened()
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    tether.detector.run_until_idle()
    _office(clock)
    worker = tether.registry.agent_id("worker")
    evil = "files/x\x00y\ud800\u202e\x1b[2J" + "z" * 5000
    poisoned = _call(tether, "worker", evil.removeprefix("files/"))
    for size in (10**30, float("nan"), float("inf"), -5, True, 1e300, "12", None, [1]):
        _record(tether, "tool.result", "worker", resource="files/read_a", detail={"size": size})
    _record(tether, "token.issued", "worker", detail={"aud": {"not": "a string"}})
    _record(tether, "token.exchanged", "worker", chain=(worker,), detail={"aud": None})
    _record(tether, "token.exchanged", "worker", chain=("spiffe://else.where/agent/x", worker))
    _record(tether, "token.exchanged", "worker", chain=(PERSON, PERSON, worker, worker))
    _record(tether, "credential.issued", "worker", resource=None)
    _record(tether, "mcp.refused", "worker", action=None)
    _record(tether, "decision", "worker", action="delegate", resource=worker, decision="allow")
    _record(tether, "decision", "worker", action=None, resource=None, decision="maybe")
    for actor in (
        "spiffe://else.where/agent/worker",  # another trust domain
        "spiffe://tether.local/agent/ghost",  # never registered
        "spiffe://tether.local/agent/Not A Name",  # no agent name at all
        "spiffe://tether.local/",
    ):
        call = {"action": "tools/call", "resource": "files/read_a", "decision": "allow"}
        _record(tether, "decision", actor, chain=(actor,), **call)
    raised = tether.detector.run_until_idle()
    assert tether.detector.cursor() == tether.events.size()
    [first] = [a for a in raised if a.detector == "first_use" and a.evidence == (poisoned,)]
    assert first.agent == worker
    stored = tether.alerts.get(ADMIN, first.id)
    assert len(stored.summary) <= 1000 and not UNSAFE & set(stored.summary)
    [event] = [e for e in tether.events.list(type="alert.raised") if e.detail["alert"] == first.id]
    assert event.reason == stored.summary


def test_an_event_a_detector_cannot_judge_is_skipped_and_recorded_not_retried_for_ever(
    opened: Callable[..., Tether], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attacker finds a value some detector chokes on (here: a tool called ``boom``): the
    detector records that it skipped the event and judges the next ones, instead of
    failing the same batch for ever while nothing else is watched."""
    tether = opened()
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    tether.detector.run_until_idle()
    real = FirstUse.observe

    def choking(self: FirstUse, moment: Moment, observations: Any) -> Any:
        if any("boom" in o.value for o in observations):
            raise ZeroDivisionError("a bug some value reaches")
        return real(self, moment, observations)

    monkeypatch.setattr(FirstUse, "observe", choking)
    _office(clock)
    boom = _call(tether, "worker", "boom")
    novel = _call(tether, "worker", "export_all")
    raised = tether.detector.run_until_idle()
    assert tether.detector.cursor() == tether.events.size()
    assert [a.evidence for a in raised if a.detector == "first_use"] == [(novel,)]
    [skipped] = tether.events.list(type="detect.skipped")
    assert (skipped.actor, skipped.subject, skipped.detail["seq"]) == (
        "system:detect",
        tether.registry.agent_id("worker"),
        boom,
    )
    assert "ZeroDivisionError" in skipped.reason
    assert tether.detector.run_until_idle() == []  # nothing retried, nothing raised twice


def test_long_values_are_bounded_in_baselines_and_stay_distinct() -> None:
    """An agent inventing 2,000-character paths cannot grow its stored baseline without
    bound: values past VALUE_MAX are a prefix and a hash, distinct for distinct inputs."""
    from datetime import UTC, datetime

    from tether.detect.observe import VALUE_MAX, bounded, observe
    from tether.model import Event

    long_a, long_b = "srv/" + "a" * 3000, "srv/" + "a" * 2999 + "b"
    assert len(bounded(long_a)) < VALUE_MAX and bounded(long_a) != bounded(long_b)
    assert bounded("srv/short") == "srv/short"
    agent = "spiffe://tether.local/agent/x"
    event = Event(
        1,
        datetime(2026, 1, 1, tzinfo=UTC),
        "decision",
        agent,
        agent,
        (agent,),
        "tools/call",
        long_a,
        "allow",
        (),
        None,
        {},
    )
    assert all(len(o.value) <= VALUE_MAX for o in observe(event))


def test_a_denial_burst_across_a_window_boundary_is_one_finding() -> None:
    """Probes timed around a clock boundary (3 just before :05:00, 3 just after) are one
    burst: the window slides, it is not a fixed five-minute block."""
    from datetime import UTC, datetime, timedelta

    from tether.config import DetectSettings
    from tether.detect.engine import Engine
    from tether.detect.model import AgentFacts
    from tether.model import Event

    agent = "spiffe://tether.local/agent/prober"

    class Facts:
        def agent(self, agent_id: str) -> AgentFacts | None:
            return AgentFacts(agent_id, "autonomous", "alice@example.com", "active")

    engine = Engine(DetectSettings(), Facts(), lambda _agent: None)
    boundary = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)  # a multiple of 300 s
    times = [boundary + timedelta(seconds=s) for s in (-3, -2, -1, 1, 2, 3)]
    events = [
        Event(
            i + 1,
            at,
            "decision",
            agent,
            agent,
            (agent,),
            "tools/call",
            f"github/delete_{i}",
            "deny",
            (),
            None,
            {},
        )
        for i, at in enumerate(times)
    ]
    findings = [f for f in engine.feed(events) if f.detector == "denial_burst"]
    assert len(findings) == 1
    assert findings[0].evidence == (1, 2, 3, 4, 5)  # found at the fifth, across the boundary
