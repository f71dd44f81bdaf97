"""The detector as a job on a real store: events after a durable cursor, one transaction
per batch (baselines, alerts, risk, cursor), restarts that lose and repeat nothing, the
response policy (suspend, kill, the circuit breaker) and configuration errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, spec

from tether.audit.record import Entry
from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.detect.alerts import Alerts
from tether.detect.budget import BUDGET
from tether.detect.model import Alert
from tether.detect.response import BREAKER
from tether.errors import Denied, InvalidRequest, TetherError
from tether.grants import GrantSpec
from tether.model import AgentState, Email
from tether.policy.decision import AccessRequest
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
PERSON = "user:alice@example.com"


def _open(make_settings: Callable[..., Settings], clock: Clock, **detect: Any) -> Tether:
    settings = make_settings(unowned_grace="30d", detect={"learning": "1d", **detect})
    first, _ = Tether.init(settings)
    first.close()
    return Tether.open(settings, clock=clock)


@pytest.fixture
def opened(make_settings: Callable[..., Settings], clock: Clock) -> Iterator[Callable[..., Tether]]:
    made: list[Tether] = []

    def make(**detect: Any) -> Tether:
        tether = _open(make_settings, clock, **detect)
        made.append(tether)
        return tether

    yield make
    for tether in made:
        tether.close()


def _call(tether: Tether, agent: str, tool: str, decision: str = "allow") -> int:
    agent_id = tether.registry.agent_id(agent)
    [seq] = tether.events.record(
        Entry.of(
            "decision",
            actor=agent_id,
            subject=agent_id,
            chain=(PERSON, agent_id),
            action="tools/call",
            resource=f"files/{tool}",
            decision=decision,
        )
    )
    return seq


def _routine(tether: Tether, clock: Clock, agent: str | list[str], days: int) -> None:
    """``days`` of office-hours calls to tools a and b (every 30 min, 09:00-17:00 UTC)."""
    names = [agent] if isinstance(agent, str) else agent
    for _ in range(days):
        clock.now = clock.now.replace(hour=9, minute=0)
        for step in range(16):
            for name in names:
                _call(tether, name, "read_a" if step % 3 else "read_b")
            clock.advance(minutes=30)
        clock.advance(days=1)


def _anomalies(tether: Tether, clock: Clock, agent: str) -> list[int]:
    """Two first uses during office hours, after learning: two first_use alerts."""
    clock.now = clock.now.replace(hour=11, minute=0)
    first = _call(tether, agent, "export_all")
    clock.advance(minutes=5)
    second = _call(tether, agent, "delete_all")
    return [first, second]


def _first_uses(alerts: list[Alert]) -> list[tuple[str, tuple[int, ...]]]:
    return sorted((a.agent, a.evidence) for a in alerts if a.detector == "first_use")


def test_a_first_use_after_learning_is_one_alert_with_its_event_as_evidence(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    tether = opened()
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    assert [a for a in tether.detector.run_until_idle() if a.severity in ("high", "critical")] == []
    seqs = _anomalies(tether, clock, "worker")
    raised = tether.detector.run_until_idle()
    agent_id = tether.registry.agent_id("worker")
    assert _first_uses(raised) == [(agent_id, (seqs[0],)), (agent_id, (seqs[1],))]
    listed = tether.alerts.list(ADMIN, agent=agent_id)
    assert {a.id for a in raised} <= {a.id for a in listed}
    assert tether.detector.cursor() == tether.events.size()
    # each alert is an audit event naming the alert and the evidence
    recorded = tether.events.list(type="alert.raised")
    assert {e.detail["alert"] if "alert" in e.detail else e.detail.get("id") for e in recorded} >= {
        a.id for a in raised
    }
    # nothing more to read: nothing raised twice
    assert tether.detector.run_until_idle() == []


def test_restarts_and_a_failed_commit_lose_nothing_and_raise_nothing_twice(
    opened: Callable[..., Tether], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tether = opened(batch_size=7)  # many batches
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    seqs = _anomalies(tether, clock, "worker")
    real = Alerts.raise_all
    failures = {"left": 1}

    def failing(self: Alerts, conn: Any, findings: Any) -> list[Alert]:
        if findings and failures["left"]:
            failures["left"] -= 1
            raise TetherError("the store went away mid-batch")
        return real(self, conn, findings)

    monkeypatch.setattr(Alerts, "raise_all", failing)
    raised: list[Alert] = []
    settings = tether.settings
    while True:  # a new process for every batch (a restart), and one batch that fails
        with Tether.open(settings, clock=clock) as process:
            try:
                report = process.detector.tick()
            except TetherError:
                continue
            raised.extend(report.alerts)
            if report.read == 0:
                break
    agent_id = tether.registry.agent_id("worker")
    assert failures["left"] == 0
    assert _first_uses(raised) == [(agent_id, (seqs[0],)), (agent_id, (seqs[1],))]
    stored = tether.alerts.list(ADMIN, agent=agent_id)
    assert len([a for a in stored if a.detector == "first_use"]) == 2
    assert len({a.id for a in stored}) == len(stored)


def test_suspend_by_policy_is_an_admin_hold_and_the_next_decision_is_denied(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    tether = opened(response={"first_use": "suspend"})
    tether.registry.register(ADMIN, spec("worker"))
    tether.grants.add(ADMIN, GrantSpec("worker", "tools/call", "files/*"))
    _routine(tether, clock, "worker", days=3)
    tether.detector.run_until_idle()
    assert tether.registry.get(ADMIN, "worker").state is AgentState.ACTIVE
    _anomalies(tether, clock, "worker")
    raised = tether.detector.run_until_idle()
    assert raised
    agent = tether.registry.get(ADMIN, "worker")
    assert agent.state is AgentState.SUSPENDED
    assert agent.held_by == "system:detect" and agent.to_dict()["held_by"] == "system:detect"
    with pytest.raises(Denied):
        tether.authorize(AccessRequest.of(agent.id, "tools/call", "files/read_a"))
    # recorded as system:detect, naming the alert; listed on the alert
    [suspended] = tether.events.list(type="agent.suspended")
    assert suspended.actor == "system:detect"
    first = min(raised, key=lambda a: a.created_at)
    assert any(a.id in suspended.reason for a in raised)
    shown = tether.alerts.get(ADMIN, first.id)
    assert [(x.action, x.outcome) for x in shown.actions][:1] == [("suspend", "done")]
    # the owner cannot lift it: an admin hold
    owner = Caller.user(Email("alice@example.com"))
    with pytest.raises(TetherError) as caught:
        tether.registry.resume(owner, "worker", reason="it is fine")
    assert "admin hold (system:detect suspended it)" in caught.value.description
    assert tether.registry.get(ADMIN, "worker").state is AgentState.SUSPENDED


@pytest.mark.parametrize(("policy", "child_dies"), [("kill", False), ("kill-cascade", True)])
def test_kill_by_policy_kills_the_agent_and_its_tokens(
    opened: Callable[..., Tether], clock: Clock, policy: str, child_dies: bool
) -> None:
    tether = opened(response={"first_use": policy})
    tether.registry.register(ADMIN, spec("worker"))
    tether.registry.register(ADMIN, spec("helper", parent="worker"))
    tether.grants.add(ADMIN, GrantSpec("worker", "tools/call", "files/*"))
    _routine(tether, clock, "worker", days=3)
    _anomalies(tether, clock, "worker")
    audience = f"{tether.settings.issuer}/mcp/files"
    tether.upstreams.add(ADMIN, UpstreamSpec("files", url="http://127.0.0.1:9/mcp"))
    token = tether.tokens.client_credentials(
        tether.registry.get(ADMIN, "worker"), audience, None, None
    ).access_token
    assert tether.tokens.verify(token, audience).claims["client_id"].endswith("/worker")
    tether.detector.run_until_idle()
    assert tether.registry.get(ADMIN, "worker").state is AgentState.KILLED
    with pytest.raises(TetherError):  # the chain dies: its token is refused at once
        tether.tokens.verify(token, audience)
    helper = tether.registry.get(ADMIN, "helper").state
    assert (helper is AgentState.KILLED) is child_dies  # no cascade unless the policy says
    killed = tether.events.list(type="agent.killed")
    assert killed and {e.actor for e in killed} == {"system:detect"}


def test_the_circuit_breaker_stops_automatic_actions_and_says_so(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    tether = opened(response={"first_use": "suspend"}, max_actions_per_hour=1)
    for name in ("one", "two", "three"):
        tether.registry.register(ADMIN, spec(name))
    _routine(tether, clock, ["one", "two", "three"], days=3)
    tether.detector.run_until_idle()
    for name in ("one", "two", "three"):
        _anomalies(tether, clock, name)
    tether.detector.run_until_idle()
    states = {n: tether.registry.get(ADMIN, n).state for n in ("one", "two", "three")}
    assert list(states.values()).count(AgentState.SUSPENDED) == 1, states
    breakers = [a for a in tether.alerts.list(ADMIN) if a.detector == BREAKER]
    assert len(breakers) == 1 and breakers[0].severity == "high"
    skipped = [x for a in tether.alerts.list(ADMIN) for x in a.actions if x.outcome == "skipped"]
    assert skipped and all("circuit breaker" in x.detail for x in skipped)
    # an hour later the breaker closes again
    clock.advance(hours=1, minutes=1)
    assert tether.responder._breaker_open() is False


def test_pending_actions_survive_a_crash_between_commit_and_action(
    opened: Callable[..., Tether], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tether = opened(response={"first_use": "suspend"})
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    _anomalies(tether, clock, "worker")
    monkeypatch.setattr(type(tether.responder), "run_pending", lambda self: 0)  # "crash"
    assert tether.detector.run_until_idle()
    assert tether.registry.get(ADMIN, "worker").state is AgentState.ACTIVE
    monkeypatch.undo()
    with Tether.open(tether.settings, clock=clock) as restarted:
        restarted.detector.tick()  # nothing new to read; the pending action is taken
    assert tether.registry.get(ADMIN, "worker").state is AgentState.SUSPENDED


def test_an_unowned_agent_acting_is_a_high_alert(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    tether = opened()
    tether.registry.register(ADMIN, spec("orphan", owner="bob@example.com"))
    tether.registry.offboard_owner(ADMIN, "bob@example.com", reason="left")
    _call(tether, "orphan", "read_a")
    _call(tether, "orphan", "read_b")
    raised = [a for a in tether.detector.run_until_idle() if a.detector == "unowned_actor"]
    assert len(raised) == 1 and raised[0].severity == "high"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ('[detect]\nlearning = "soon"\n', "detect.learning"),
        ("[detect.detectors.call_rate]\nmad_k = -1\n", "detect.detectors.call_rate.mad_k"),
        ("[detect.detectors.call_rates]\nmad_k = 3\n", "detect.detectors.call_rates"),
        ('[detect.response]\nfirst_use = "explode"\n', "detect.response.first_use"),
        ('[detect.response]\nnobody = "kill"\n', "response.nobody"),
        ('[detect]\ntimezone = "Mars/Olympus"\n', "timezone"),
    ],
)
def test_malformed_detector_config_is_an_error_naming_the_key(
    tmp_path: Path, config: str, named: str
) -> None:
    (tmp_path / "tether.toml").write_text(config, encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        Settings.load(tmp_path)
    assert named in caught.value.description


def test_the_detector_job_runs_once_per_store(opened: Callable[..., Tether], clock: Clock) -> None:
    from tether.server import standard_jobs

    tether = opened()
    assert "detector" in [job.name for job in standard_jobs(tether)]
    off = _open_off(tether)
    try:
        assert "detector" not in [job.name for job in standard_jobs(off)]
    finally:
        off.close()


def _open_off(tether: Tether) -> Tether:
    settings = tether.settings.model_copy(
        update={"detect": tether.settings.detect.model_copy(update={"enabled": False})}
    )
    return Tether.open(settings)


def test_after_a_restart_stored_baselines_are_peers_at_once(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    tether = opened()
    tether.registry.register(ADMIN, spec("veteran"))
    _routine(tether, clock, "veteran", days=3)
    tether.detector.run_until_idle()
    tether.registry.register(ADMIN, spec("rookie"))  # same kind and owner: a peer
    clock.now = clock.now.replace(hour=10)
    known = _call(tether, "rookie", "read_a")
    novel = _call(tether, "rookie", "export_all")
    with Tether.open(tether.settings, clock=clock) as restarted:  # the veteran is not acting
        raised = restarted.detector.run_until_idle()
    rookie = tether.registry.agent_id("rookie")
    [finding] = [a for a in raised if a.detector == "first_use"]
    assert (finding.agent, finding.evidence) == (rookie, (novel,))
    assert finding.detail.get("basis") == "peer group"
    assert known not in finding.evidence


def test_detect_run_once_reads_the_log_and_prints_the_alerts(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import Cli, initialised

    cli = initialised(Cli(capsys))
    settings = Settings.from_env()
    with Tether.open(settings) as tether:
        tether.registry.register(ADMIN, spec("orphan", owner="bob@example.com"))
        tether.registry.offboard_owner(ADMIN, "bob@example.com", reason="left")
        _call(tether, "orphan", "read_a")
        size = tether.events.size()
    doc = cli.json("detect", "run", "--once")
    assert doc["cursor"] >= size
    assert [a["detector"] for a in doc["alerts"]] == ["unowned_actor"]
    assert cli.json("detect", "run", "--once")["alerts"] == []  # nothing raised twice
    listed = cli.json("alerts", "list")["alerts"]
    assert [a["id"] for a in listed] == [doc["alerts"][0]["id"]]


def test_detect_run_refuses_when_the_detector_is_off(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import Cli, initialised

    cli = initialised(Cli(capsys))
    (cli_env / "tether.toml").write_text("[detect]\nenabled = false\n", encoding="utf-8")
    code, out, err = cli("detect", "run", "--once")
    assert code == 2 and "the detector is off" in out + err
    (cli_env / "tether.toml").write_text('[detect]\nlearning = "later"\n', encoding="utf-8")
    code, out, err = cli("detect", "run", "--once")
    assert code == 2 and "detect.learning" in out + err and "Traceback" not in out + err


def test_the_alert_budget_bounds_one_agents_alerts_and_holds_back_nothing_silently(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    tether = opened(max_alerts_per_agent_hour=3)
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    tether.detector.run_until_idle()
    clock.now = clock.now.replace(hour=11)
    novel = [_call(tether, "worker", f"new_tool_{i}") for i in range(10)]  # 10 first uses
    tether.detector.run_until_idle()
    agent_id = tether.registry.agent_id("worker")
    stored = tether.alerts.list(ADMIN, agent=agent_id)
    first_uses = [a for a in stored if a.detector == "first_use"]
    [over] = [a for a in stored if a.detector == BUDGET]
    assert len(first_uses) == 3 and over.severity == "high"
    assert over.detail["held"] == 7 and set(over.evidence) == set(novel) - {
        seq for a in first_uses for seq in a.evidence
    }
    [throttled] = tether.events.list(type="detect.throttled")
    assert throttled.subject == agent_id and throttled.detail["detectors"] == ["first_use"]
    # more in the same hour: held back and recorded, no second budget alert
    _call(tether, "worker", "yet_another")
    tether.detector.run_until_idle()
    assert [a.detector for a in tether.alerts.list(ADMIN, agent=agent_id)].count(BUDGET) == 1
    assert len(tether.events.list(type="detect.throttled")) == 2
    # an hour later there is room again
    clock.advance(hours=1, minutes=1)
    _call(tether, "worker", "the_next_day_tool")
    raised = tether.detector.run_until_idle()
    assert [a.detector for a in raised] == ["first_use"]


def test_the_budget_never_holds_back_a_finding_the_policy_acts_on(
    opened: Callable[..., Tether], clock: Clock
) -> None:
    """An agent that first spends its alert budget on cheap novelties is still suspended
    by the policy on its next finding (high or acted upon: never held back)."""
    tether = opened(max_alerts_per_agent_hour=3, response={"denial_burst": "suspend"})
    tether.registry.register(ADMIN, spec("worker"))
    _routine(tether, clock, "worker", days=3)
    tether.detector.run_until_idle()
    clock.now = clock.now.replace(hour=11)
    for i in range(10):
        _call(tether, "worker", f"new_tool_{i}")  # 10 first uses: the budget is spent
    tether.detector.run_until_idle()
    clock.advance(minutes=10)
    for i in range(6):
        _call(tether, "worker", f"forbidden_{i}", decision="deny")
    tether.detector.run_until_idle()
    agent_id = tether.registry.agent_id("worker")
    assert [a.detector for a in tether.alerts.list(ADMIN, agent=agent_id)].count(
        "denial_burst"
    ) == 1
    assert tether.registry.get(ADMIN, "worker").state is AgentState.SUSPENDED
