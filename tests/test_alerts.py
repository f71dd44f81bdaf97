"""Stored alerts (``tether.detect.alerts``), on both stores: raised in the detector's
transaction, seen only by their agents' owners and admins, moved through their states by
the rules, every change on record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, Clock, spec
from ocsf_validate import validate

from tether import Caller, Forbidden, IllegalTransition, InvalidRequest, NotFound, Tether
from tether.audit.sinks import SinkRunner
from tether.config import SinkConfig
from tether.detect.alerts import alert_id
from tether.detect.model import Alert, AlertAction, Finding
from tether.model import Email

ALICE = Caller.user(Email("alice@example.com"))
BOB = Caller.user(Email("bob@example.com"))
AT = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


def spiffe(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


def finding(
    agent: str = "helper",
    severity: Any = "high",
    detector: str = "first_use",
    evidence: tuple[int, ...] = (3, 4),
    **kw: Any,
) -> Finding:
    return Finding(
        detector=detector,
        severity=severity,
        agent=agent,
        chain=kw.pop("chain", ("user:alice@example.com", spiffe(agent))),
        summary=kw.pop("summary", f"{agent} called a tool it never used"),
        evidence=evidence,
        at=kw.pop("at", AT),
        detail=kw.pop("detail", {"tool": "payments/refund"}),
    )


def raise_(tether: Tether, *found: Finding) -> list[Alert]:
    with tether.store.write() as conn:
        return tether.alerts.raise_all(conn, found)


def events(tether: Tether, kind: str) -> list[dict[str, Any]]:
    return [e.to_dict() for e in tether.events.list() if e.type == kind]


@pytest.fixture
def org(tether: Tether) -> Tether:
    tether.registry.register(ADMIN, spec("helper", owner="alice@example.com"))
    tether.registry.register(ADMIN, spec("scout", owner="alice@example.com"))
    tether.registry.register(ADMIN, spec("billing", owner="bob@example.com"))
    return tether


# ---- raising -------------------------------------------------------------------------


def test_raise_all_stores_alerts_with_their_events_and_counts_them(org: Tether) -> None:
    [alert] = raise_(org, finding())
    assert alert.id == alert_id(finding(), spiffe("helper"))
    assert alert.id.startswith("alt_") and len(alert.id) == 20
    assert (alert.agent, alert.owner, alert.state, alert.severity) == (
        spiffe("helper"),
        "alice@example.com",
        "open",
        "high",
    )
    assert alert.evidence == (3, 4)
    assert org.alerts.get(ADMIN, alert.id) == alert
    [event] = events(org, "alert.raised")
    assert event["actor"] == "system:detect"
    assert event["subject"] == event["resource"] == spiffe("helper")
    assert event["chain"] == ["user:alice@example.com", spiffe("helper")]
    detail = event["detail"]
    assert (detail["alert"], detail["detector"], detail["severity"]) == (
        alert.id,
        "first_use",
        "high",
    )
    assert detail["evidence"] == [3, 4]
    assert detail["summary"] == "helper called a tool it never used"
    rendered = org.metrics.render({})
    assert 'tether_alerts_total{detector="first_use",severity="high"} 1' in rendered


def test_the_same_finding_raised_again_is_the_same_alert(org: Tether) -> None:
    [first] = raise_(org, finding(), finding())  # twice in one batch: one alert
    assert raise_(org, finding()) == []  # and again later (a restarted detector): none
    assert [a.id for a in org.alerts.list(ADMIN)] == [first.id]
    assert len(events(org, "alert.raised")) == 1
    other = raise_(org, finding(evidence=(3, 5)))
    assert len(other) == 1 and other[0].id != first.id


def test_a_rolled_back_transaction_leaves_no_alert_no_event_and_no_risk(org: Tether) -> None:
    size = org.events.size()

    def fail_after_raising() -> None:
        with org.store.write() as conn:
            org.alerts.raise_all(conn, [finding(), finding("scout", "critical")])
            raise RuntimeError("the detector failed")

    with pytest.raises(RuntimeError, match="the detector failed"):
        fail_after_raising()
    assert org.alerts.list(ADMIN) == []
    assert org.events.size() == size
    assert org.risk.score("helper") == 0
    assert "tether_alerts_total" not in org.metrics.render({})


def test_findings_are_checked(org: Tether) -> None:
    with pytest.raises(InvalidRequest, match="severity"):
        raise_(org, finding(severity="dire"))
    with pytest.raises(InvalidRequest):
        raise_(org, finding(agent="Not A Name"))
    assert org.alerts.list(ADMIN) == []


def test_an_unknown_agent_is_stored_with_no_owner_and_only_admins_see_it(org: Tether) -> None:
    [alert] = raise_(org, finding("ghost"))
    assert alert.owner is None
    assert org.alerts.list(ALICE) == [] and org.alerts.list(BOB) == []
    assert org.alerts.list(ADMIN) == [alert]


def test_add_action_lists_the_automatic_response_on_the_alert(org: Tether) -> None:
    [alert] = raise_(org, finding())
    action = AlertAction("suspend", AT, "done", "suspended by policy")
    with org.store.write() as conn:
        changed = org.alerts.add_action(conn, alert.id, action)
    assert changed.actions == (action,)
    assert org.alerts.get(ADMIN, alert.id).actions == (action,)
    assert org.alerts.get(ADMIN, alert.id).to_dict()["actions"][0]["action"] == "suspend"
    with pytest.raises(NotFound), org.store.write() as conn:
        org.alerts.add_action(conn, "alt_0000000000000000", action)


# ---- reading -------------------------------------------------------------------------


def test_list_is_newest_first_and_filters(org: Tether, clock: Clock) -> None:
    [old] = raise_(org, finding(severity="low", evidence=(1,)))
    clock.advance(minutes=1)
    [mid] = raise_(org, finding("scout", "critical", evidence=(2,)))
    clock.advance(minutes=1)
    [new] = raise_(org, finding("billing", "high", evidence=(3,)))
    assert [a.id for a in org.alerts.list(ADMIN)] == [new.id, mid.id, old.id]
    assert org.alerts.list(ADMIN, severity="critical") == [mid]
    assert org.alerts.list(ADMIN, agent="helper") == [old]
    assert org.alerts.list(ADMIN, agent=spiffe("scout")) == [mid]
    assert [a.id for a in org.alerts.list(ADMIN, limit=2)] == [new.id, mid.id]
    assert [a.id for a in org.alerts.list(ADMIN, after=mid.id)] == [old.id]
    org.alerts.acknowledge(ADMIN, old.id)
    assert [a.id for a in org.alerts.list(ADMIN, state="acknowledged")] == [old.id]
    assert [a.id for a in org.alerts.list(ADMIN, state="open")] == [new.id, mid.id]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"state": "closed"}, "invalid state"),
        ({"severity": "dire"}, "invalid severity"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"agent": "Bad Name"}, "invalid agent name"),
    ],
)
def test_list_refuses_bad_filters(org: Tether, args: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        org.alerts.list(ADMIN, **args)


def test_owners_see_only_their_agents_alerts(org: Tether) -> None:
    [mine] = raise_(org, finding("helper"))
    [bobs] = raise_(org, finding("billing"))
    assert org.alerts.list(ALICE) == [mine]
    assert org.alerts.list(BOB) == [bobs]
    assert org.alerts.get(ALICE, mine.id) == mine
    refused = len(events(org, "access.refused"))
    with pytest.raises(NotFound, match=f"no alert {bobs.id}"):
        org.alerts.get(ALICE, bobs.id)
    [refusal] = events(org, "access.refused")[refused:]
    assert refusal["actor"] == "user:alice@example.com"
    assert refusal["subject"] == bobs.id
    with pytest.raises(NotFound):  # not even as a list's bookmark
        org.alerts.list(ALICE, after=bobs.id)
    # an unknown id is the same answer, and is no refusal
    refused = len(events(org, "access.refused"))
    with pytest.raises(NotFound, match="no alert alt_ffffffffffffffff"):
        org.alerts.get(ALICE, "alt_ffffffffffffffff")
    with pytest.raises(NotFound):
        org.alerts.get(ADMIN, "../etc/passwd")
    assert len(events(org, "access.refused")) == refused


def test_a_caller_who_owns_nothing_sees_no_unowned_alert(org: Tether) -> None:
    [alert] = raise_(org, finding("ghost"))  # no owner
    nobody = Caller("service:reporter")  # neither admin nor a person
    assert org.alerts.list(nobody) == []
    with pytest.raises(NotFound):
        org.alerts.get(nobody, alert.id)


def test_an_alert_follows_the_agent_to_its_new_owner_and_stays_with_the_old(
    org: Tether,
) -> None:
    [alert] = raise_(org, finding("helper"))
    org.registry.set_owner(ADMIN, "helper", "bob@example.com")
    assert org.alerts.list(BOB) == [alert]  # bob owns the agent now
    assert org.alerts.list(ALICE) == [alert]  # alice owned it when it was raised
    org.alerts.acknowledge(BOB, alert.id)


# ---- changing ------------------------------------------------------------------------


def test_an_owner_acknowledges_and_an_admin_resolves(org: Tether) -> None:
    [alert] = raise_(org, finding())
    acked = org.alerts.acknowledge(ALICE, alert.id)
    assert (acked.state, acked.state_by, acked.state_reason) == (
        "acknowledged",
        "user:alice@example.com",
        None,
    )
    assert acked.state_at is not None
    resolved = org.alerts.resolve(ADMIN, alert.id, "  a new tool, announced in the change log ")
    assert (resolved.state, resolved.state_by) == ("resolved", "admin")
    assert resolved.state_reason == "a new tool, announced in the change log"
    assert org.alerts.get(ADMIN, alert.id) == resolved
    [ack] = events(org, "alert.acknowledged")
    assert (ack["actor"], ack["subject"]) == ("user:alice@example.com", spiffe("helper"))
    assert ack["detail"]["alert"] == alert.id and ack["detail"]["from"] == "open"
    [done] = events(org, "alert.resolved")
    assert done["actor"] == "admin"
    assert done["reasons"] == ["a new tool, announced in the change log"]
    assert (done["detail"]["from"], done["detail"]["state"]) == ("acknowledged", "resolved")


@pytest.mark.parametrize("severity", ["high", "critical"])
@pytest.mark.parametrize("move", ["resolve", "suppress"])
def test_only_an_admin_resolves_or_suppresses_a_high_one(
    org: Tether, severity: str, move: str
) -> None:
    [alert] = raise_(org, finding(severity=severity))
    size = org.events.size()
    with pytest.raises(Forbidden, match="only an admin"):
        getattr(org.alerts, move)(ALICE, alert.id, "looks fine to me")
    assert org.alerts.get(ADMIN, alert.id) == alert  # nothing changed
    [refusal] = [e.to_dict() for e in org.events.list() if e.seq > size]
    assert refusal["type"] == "access.refused"
    assert refusal["actor"] == "user:alice@example.com"
    assert org.risk.score("helper") == (70 if severity == "high" else 90)
    done = getattr(org.alerts, move)(ADMIN, alert.id, "checked with the team")
    assert done.state == ("resolved" if move == "resolve" else "suppressed")
    assert org.risk.score("helper") == 0


@pytest.mark.parametrize("severity", ["low", "medium"])
def test_an_owner_resolves_or_suppresses_a_low_one(org: Tether, severity: str) -> None:
    [first] = raise_(org, finding(severity=severity, evidence=(1,)))
    [second] = raise_(org, finding(severity=severity, evidence=(2,)))
    assert org.alerts.resolve(ALICE, first.id, "expected").state == "resolved"
    assert org.alerts.suppress(ALICE, second.id, "noisy").state == "suppressed"
    with pytest.raises(NotFound):  # but never another owner's
        org.alerts.acknowledge(BOB, first.id)


@pytest.mark.parametrize("move", ["resolve", "suppress"])
@pytest.mark.parametrize("reason", ["", "   "])
def test_resolving_or_suppressing_needs_a_reason(org: Tether, move: str, reason: str) -> None:
    [alert] = raise_(org, finding())
    size = org.events.size()
    with pytest.raises(InvalidRequest, match="a reason is required"):
        getattr(org.alerts, move)(ADMIN, alert.id, reason)
    with pytest.raises(InvalidRequest, match="at most 1000"):
        getattr(org.alerts, move)(ADMIN, alert.id, "x" * 1001)
    assert org.alerts.get(ADMIN, alert.id).state == "open"
    assert org.events.size() == size


def test_illegal_transitions_are_refused(org: Tether) -> None:
    [alert] = raise_(org, finding(severity="low"))
    org.alerts.acknowledge(ALICE, alert.id)
    with pytest.raises(IllegalTransition, match="acknowledged again"):
        org.alerts.acknowledge(ALICE, alert.id)
    org.alerts.resolve(ADMIN, alert.id, "fixed")
    size = org.events.size()
    for move in ("acknowledge", "resolve", "suppress"):
        with pytest.raises(IllegalTransition, match="is resolved"):
            getattr(org.alerts, move)(ADMIN, alert.id, "again")
    assert org.events.size() == size
    with pytest.raises(InvalidRequest, match="invalid state"):
        org.alerts.transition(ADMIN, alert.id, "open", "reopen")


def test_unknown_ids_are_not_found(org: Tether) -> None:
    for bad in ("alt_0123456789abcdef", "alt_XYZ", "", "x" * 500):
        with pytest.raises(NotFound):
            org.alerts.acknowledge(ADMIN, bad)


def test_open_counts(org: Tether) -> None:
    [a, _, _] = raise_(
        org,
        finding(severity="high", evidence=(1,)),
        finding(severity="high", evidence=(2,)),
        finding("scout", severity="low", evidence=(3,)),
    )
    org.alerts.acknowledge(ADMIN, a.id)
    assert org.alerts.open_counts() == {"low": 1, "medium": 0, "high": 1, "critical": 0}


# ---- to the SIEM ---------------------------------------------------------------------


def test_every_alert_event_reaches_the_file_sink_as_a_valid_detection_finding(
    org: Tether, tmp_path: Path
) -> None:
    [alert] = raise_(org, finding(evidence=(2, 3)))
    org.alerts.acknowledge(ALICE, alert.id)
    org.alerts.suppress(ADMIN, alert.id, "a load test")
    path = tmp_path / "siem.ocsf"
    config = SinkConfig(name="siem", kind="file", format="ocsf", path=path)
    with SinkRunner(org.store, org.events, [config], version=org.version) as sink:
        assert sink.deliver_once() == org.events.size()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    findings = [event for event in lines if event["class_uid"] == 2004]
    assert [(f["activity_id"], f["status"]) for f in findings] == [
        (1, "New"),
        (2, "In Progress"),
        (3, "Suppressed"),
    ]
    for event in findings:
        assert validate(event) == []
        assert event["finding_info"]["uid"] == alert.id
        assert event["finding_info"]["types"] == ["first_use"]
        assert event["finding_info"]["related_events"] == [{"uid": "2"}, {"uid": "3"}]
        assert event["severity"] == "High"
    assert findings[0]["actor"]["user"]["uid"] == "system:detect"
    assert findings[1]["actor"]["user"]["uid"] == "user:alice@example.com"
    assert findings[2]["status_detail"] == "a load test"
