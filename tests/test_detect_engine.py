"""The detection engine on simulated traffic (tests/helpers/workload.py): a benign week of
two different shapes raises no high finding and fewer than one medium per agent-week;
each attack is then found within a bounded number of events, with the evidence pointing
at the injected events; learning, peers, restarts and parameters behave as documented.

Learning is 2 days (not the default 7) in these scenarios, so that five of the seven
benign days are judged: a stricter test of false positives than a week spent learning.
Time comes from the events only; nothing sleeps.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers.attacks import Attacks
from helpers.workload import Profile, Raw, Roster, Workload, number, shape_a, shape_b

from tether.config import DetectSettings
from tether.detect.engine import Engine
from tether.detect.model import AgentFacts, Finding
from tether.model import Event

LEARNING = timedelta(days=2)
SETTINGS = DetectSettings(learning=LEARNING)


@dataclass
class Run:
    """A benign week fed to an engine: its events, findings and persisted baselines."""

    workload: Workload
    events: list[Event]
    findings: list[Finding]
    baselines: dict[str, dict[str, Any]]

    def engine(self, settings: DetectSettings = SETTINGS, roster: Roster | None = None) -> Engine:
        """A fresh engine resuming from the persisted baselines (as after a restart)."""
        engine = Engine(settings, roster or self.workload.roster, self.baselines.get)
        engine.prime(self.baselines)
        return engine

    def attack(self, raws: list[Raw]) -> list[Event]:
        return number(raws, start_seq=len(self.events) + 1)


def _run(workload: Workload) -> Run:
    events = workload.events()
    engine = Engine(SETTINGS, workload.roster, lambda agent: None)
    findings = engine.feed(events)
    baselines = json.loads(json.dumps(engine.dirty()))  # persisted as JSON
    return Run(workload, events, findings, baselines)


@pytest.fixture(scope="module")
def run_a() -> Run:
    return _run(shape_a())


@pytest.fixture(scope="module")
def run_b() -> Run:
    return _run(shape_b())


def _local(run: Run, p: Profile, days: int, hour: int) -> datetime:
    """``hour`` o'clock in the agent's zone, ``days`` (>= 1) local days after the benign
    traffic ends (so always after it)."""
    zone = ZoneInfo(p.zone)
    day = run.workload.end.astimezone(zone).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone)


# ---- benign traffic ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["A", "B"])
def test_a_benign_week_raises_no_high_and_under_one_medium_per_agent_week(
    shape: str, run_a: Run, run_b: Run
) -> None:
    run = run_a if shape == "A" else run_b
    agents = len(run.workload.profiles)
    weeks = (run.workload.end - run.events[0].at) / timedelta(days=7)
    by = Counter(f.severity for f in run.findings)
    per_agent_week = by["medium"] / (agents * weeks)
    print(
        f"\nshape {shape}: {len(run.events)} events, {agents} agents, {weeks:.2f} weeks, "
        f"learning {LEARNING.days}d: high {by['high']}, medium {by['medium']} "
        f"({per_agent_week:.3f} per agent-week), low {by['low']}; "
        f"{dict(Counter((f.detector, f.severity) for f in run.findings))}"
    )
    assert len(run.events) > 50_000  # a real week of traffic, not a handful of events
    assert by["high"] == 0 and by["critical"] == 0, [f.summary for f in run.findings]
    assert per_agent_week < 1.0


def test_the_two_shapes_differ(run_a: Run, run_b: Run) -> None:
    """Shape B is not shape A with another seed: other hours, sets and volumes."""

    def night_share(run: Run) -> float:
        hours = [
            e.at.astimezone(ZoneInfo(run.workload.profile(e.actor.rsplit("/", 1)[1]).zone)).hour
            for e in run.events
            if e.type == "decision"
        ]
        return sum(1 for h in hours if h >= 22 or h < 6) / len(hours)

    assert night_share(run_a) == 0.0 and night_share(run_b) > 0.3
    tools_a = sum(len(p.tools) for p in run_a.workload.profiles)
    tools_b = sum(len(p.tools) for p in run_b.workload.profiles)
    assert tools_b > 2 * tools_a


# ---- attacks -----------------------------------------------------------------------------

ATTACKS = Attacks()


@dataclass(frozen=True)
class Case:
    detector: str
    severity: str
    bound: int  # detected within this many injected events


def _scenario(name: str, run: Run, shape: str) -> tuple[list[Raw], Case, Roster | None]:
    """The injected raws of attack ``name`` on ``run``, what must find it and how fast."""
    profiles = run.workload.profiles
    p = profiles[0]  # a00-copilot (office, delegates) or b00-etl (24x7 batch)
    when = _local(run, p, 1, 10)  # a working hour, the day after the benign week
    big = shape == "B"
    if name == "enumeration":
        return ATTACKS.enumeration(p, when, n=300 if big else 80), Case(name, "high", 200), None
    if name == "exfiltration":
        return ATTACKS.exfiltration(p, when), Case("result_volume", "high", 4), None
    if name == "off_hours":
        night = next(q for q in profiles if q.pattern in ("office", "night"))
        hour = 3 if night.pattern == "office" else 13
        return ATTACKS.burst(night, _local(run, night, 1, hour)), Case(name, "medium", 1), None
    if name == "new_tool":
        return ATTACKS.new_tool(p, when), Case("first_use", "medium", 1), None
    if name == "new_delegation":
        stranger = next(q for q in profiles if q.owner != p.owner)
        return ATTACKS.new_delegation(p, stranger, when), Case(name, "high", 1), None
    if name == "probing":
        return ATTACKS.probing(p, when), Case("denial_burst", "high", 5), None
    if name == "dormant":
        return ATTACKS.wake(p, _local(run, p, 16, 10)), Case("dormant_wake", "medium", 1), None
    if name == "credentials":
        return ATTACKS.credentials(p, when), Case("credential_spike", "high", 24), None
    if name == "flood":
        return ATTACKS.flood(p, when, n=600), Case("call_rate", "medium", 200), None
    assert name == "unowned"
    roster = Roster(dict(run.workload.roster.facts))
    roster.facts[p.id] = AgentFacts(p.id, p.kind, None, "active")
    return ATTACKS.unowned(p, when), Case("unowned_actor", "high", 2), roster


NAMES = [
    "enumeration",
    "exfiltration",
    "off_hours",
    "new_tool",
    "new_delegation",
    "probing",
    "dormant",
    "credentials",
    "flood",
    "unowned",
]


@pytest.mark.parametrize("shape", ["A", "B"])
@pytest.mark.parametrize("name", NAMES)
def test_each_attack_is_detected_fast_with_the_right_evidence(
    name: str, shape: str, run_a: Run, run_b: Run
) -> None:
    run = run_a if shape == "A" else run_b
    raws, case, roster = _scenario(name, run, shape)
    engine = run.engine(roster=roster)
    events = run.attack(raws)
    injected = {e.seq for e in events}
    found = engine.feed(events)
    mine = [f for f in found if f.detector == case.detector]
    assert mine, f"{name} on {shape}: nothing from {case.detector}; got {found}"
    first = mine[0]
    assert first.severity == case.severity
    assert first.agent in {e.actor for e in events if e.type != "agent.unowned"}
    assert set(first.evidence) <= injected and first.evidence
    assert list(first.evidence) == sorted(first.evidence)
    position = next(i for i, e in enumerate(events) if e.seq == first.evidence[-1]) + 1
    print(f"\n{name} on {shape}: {case.detector} after {position} injected events")
    assert position <= case.bound
    assert first.chain == next(e for e in events if e.seq == first.evidence[-1]).chain
    assert len(mine) == 1, "one anomaly, one finding"


def test_spike_evidence_is_the_window_capped_at_the_most_recent(run_a: Run) -> None:
    p = run_a.workload.profiles[0]
    events = run_a.attack(ATTACKS.flood(p, _local(run_a, p, 1, 10), n=600))
    [spike] = [f for f in run_a.engine().feed(events) if f.detector == "call_rate"]
    calls = [e.seq for e in events if e.type == "decision"]
    assert len(spike.evidence) <= 50
    assert spike.evidence[-1] in calls and set(spike.evidence) <= set(calls)
    assert spike.detail["value"] >= spike.detail["threshold"]


# ---- learning and peers --------------------------------------------------------------------

T0 = datetime(2026, 6, 1, 9, tzinfo=ZoneInfo("UTC"))


def _profile(name: str, owner: str = "o@example.com", kind: str = "worker") -> Profile:
    return Profile(name, owner, kind, "UTC", "office", ("x/a", "x/b"), (1.0, 2.0), deny=0.0)


def _roster(*profiles: Profile) -> Roster:
    roster = Roster()
    for p in profiles:
        roster.add(p)
    return roster


def test_learning_suppresses_novelty_then_lets_it_through() -> None:
    p = _profile("learner")
    raws = [
        *ATTACKS.burst(p, T0, 10),
        *ATTACKS.new_tool(p, T0 + timedelta(days=1), "x/new-while-learning"),
        *ATTACKS.new_tool(p, T0 + LEARNING + timedelta(hours=1), "x/new-after-learning"),
    ]
    events = number(raws)
    found = Engine(SETTINGS, _roster(p), lambda a: None).feed(events)
    assert [(f.detector, f.detail["new"]) for f in found] == [
        ("first_use", [{"kind": "tool", "value": "x/new-after-learning"}])
    ]
    assert found[0].evidence == (events[-2].seq,)  # the decision, not its result


def test_a_learning_agent_is_compared_with_its_peers() -> None:
    old1, old2 = _profile("old1"), _profile("old2")
    newbie = _profile("newbie")
    other_owner = _profile("elsewhere", owner="someone@example.com")
    other_kind = _profile("otherkind", kind="copilot")
    later = T0 + LEARNING + timedelta(hours=2)
    raws = [
        *ATTACKS.burst(old1, T0, 5),
        *ATTACKS.burst(old2, T0, 5),
        *ATTACKS.new_tool(old2, T0 + timedelta(minutes=30), "x/c"),
        *ATTACKS.new_tool(newbie, later, "x/a"),  # its peers use it: nothing
        *ATTACKS.new_tool(newbie, later + timedelta(minutes=1), "x/c"),  # one peer uses it
        *ATTACKS.new_tool(newbie, later + timedelta(minutes=2), "y/z"),  # no peer ever did
        *ATTACKS.new_tool(other_owner, later, "y/z"),  # no peers: nothing while learning
        *ATTACKS.new_tool(other_kind, later, "y/z"),
    ]
    events = number(raws)
    roster = _roster(old1, old2, newbie, other_owner, other_kind)
    found = Engine(SETTINGS, roster, lambda a: None).feed(events)
    assert len(found) == 1
    [f] = found
    assert f.agent == newbie.id and f.detector == "first_use"
    assert f.detail == {
        "new": [{"kind": "tool", "value": "y/z"}, {"kind": "server", "value": "y"}],
        "basis": "peer group",
    }
    assert "peers" in f.summary


def test_a_new_delegation_is_one_finding_and_the_pair_is_learned() -> None:
    a, b = _profile("boss"), _profile("helper")
    later = T0 + LEARNING + timedelta(hours=1)
    raws = [
        *ATTACKS.burst(a, T0, 3),
        *ATTACKS.burst(b, T0, 3),
        *ATTACKS.new_delegation(a, b, later),
        *ATTACKS.new_delegation(a, b, later + timedelta(minutes=5)),
    ]
    events = number(raws)
    found = Engine(SETTINGS, _roster(a, b), lambda x: None).feed(events)
    hops = [f for f in found if f.detector == "new_delegation"]
    assert [(f.agent, f.evidence, f.severity) for f in hops] == [(a.id, (events[-4].seq,), "high")]
    assert hops[0].detail["delegate"] == b.id
    assert hops[0].chain == (f"user:{a.owner}", a.id)


def test_unowned_actor_reports_once_a_day() -> None:
    p = _profile("orphan")
    roster = _roster(p)
    roster.facts[p.id] = replace(roster.facts[p.id], owner=None)
    raws = [*ATTACKS.burst(p, T0, 5), *ATTACKS.burst(p, T0 + timedelta(days=1), 5)]
    found = Engine(SETTINGS, roster, lambda x: None).feed(number(raws))
    assert [f.detector for f in found] == ["unowned_actor", "unowned_actor"]
    assert found[0].severity == "high"


# ---- restarts and parameters -------------------------------------------------------------


def _attack_stream(run: Run) -> list[Event]:
    p, q = run.workload.profiles[0], run.workload.profiles[4]
    when = _local(run, p, 1, 10)
    raws = [
        *ATTACKS.flood(p, when, n=300),
        *ATTACKS.exfiltration(q, when + timedelta(minutes=1)),
        *ATTACKS.new_tool(q, when + timedelta(minutes=2)),
        *ATTACKS.probing(p, when + timedelta(minutes=10)),  # past the flood's window
        *ATTACKS.burst(p, _local(run, p, 2, 3), 5),
    ]
    return run.events + run.attack(raws)


@pytest.mark.parametrize("cut", [0.5, "mid-attack"])
def test_a_restart_mid_stream_gives_the_same_findings(run_a: Run, cut: float | str) -> None:
    events = _attack_stream(run_a)
    roster = run_a.workload.roster
    whole = Engine(SETTINGS, roster, lambda a: None).feed(events)
    assert {f.detector for f in whole} >= {
        "call_rate",
        "result_volume",
        "first_use",
        "denial_burst",
        "off_hours",
    }
    at = int(len(events) * cut) if isinstance(cut, float) else len(run_a.events) + 150
    first = Engine(SETTINGS, roster, lambda a: None)
    before = first.feed(events[:at])
    stored = json.loads(json.dumps(first.dirty()))
    assert first.dirty() == {}  # the dirty set was handed over
    second = Engine(SETTINGS, roster, stored.get)
    second.prime(stored)
    after = second.feed(events[at:])
    assert before + after == whole


def test_forget_drops_state_and_reloads_from_the_store(run_a: Run) -> None:
    engine = run_a.engine()
    p = run_a.workload.profiles[0]
    assert engine.baseline(p.id) is not None
    engine.forget()
    assert engine.baseline(p.id) is None and engine.dirty() == {}
    events = run_a.attack(ATTACKS.new_tool(p, _local(run_a, p, 1, 10)))
    assert [f.detector for f in engine.feed(events)] == ["first_use"]


def test_a_disabled_detector_raises_nothing_but_still_learns(run_a: Run) -> None:
    settings = DetectSettings.model_validate(
        {"learning": "2d", "detectors": {"first_use": {"enabled": False}}}
    )
    engine = run_a.engine(settings)
    p = run_a.workload.profiles[0]
    events = run_a.attack(ATTACKS.new_tool(p, _local(run_a, p, 1, 10), "admin/nuke"))
    assert [f for f in engine.feed(events) if f.detector == "first_use"] == []
    baseline = engine.baseline(p.id)
    assert baseline is not None and baseline.knows("tool", "admin/nuke")


def test_a_severity_override_applies(run_a: Run) -> None:
    settings = DetectSettings.model_validate(
        {"learning": "2d", "detectors": {"first_use": {"severity": "critical"}}}
    )
    p = run_a.workload.profiles[0]
    events = run_a.attack(ATTACKS.new_tool(p, _local(run_a, p, 1, 10)))
    [finding] = run_a.engine(settings).feed(events)
    assert (finding.detector, finding.severity) == ("first_use", "critical")


def test_first_use_kinds_limit_what_reports(run_a: Run) -> None:
    settings = DetectSettings.model_validate(
        {"learning": "2d", "detectors": {"first_use": {"kinds": ["audience"]}}}
    )
    p = run_a.workload.profiles[0]
    events = run_a.attack(ATTACKS.new_tool(p, _local(run_a, p, 1, 10)))
    assert run_a.engine(settings).feed(events) == []


def test_the_detectors_own_events_and_people_are_not_observed(run_a: Run) -> None:
    p = run_a.workload.profiles[0]
    at = _local(run_a, p, 1, 10)
    raws: list[Raw] = [
        (at, "alert.raised", "system:detect", ("system:detect",), "alert.raised", None, None, {}),
        (at, "decision", "user:x@example.com", ("user:x@example.com",), "tools/call",
         "evil/tool", "allow", {}),
        (at, "tool.refused", "anonymous", ("anonymous",), "tools/call", "evil/tool", "deny", {}),
    ]  # fmt: skip
    engine = run_a.engine()
    assert engine.feed(run_a.attack(raws)) == []
    assert engine.dirty() == {}
