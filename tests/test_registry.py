"""The registry on both stores: registration rules, lifecycle, expiry, ownership, events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import ADMIN, Clock, spec

from tether import (
    AgentState,
    Caller,
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    OwnerRequired,
    Tether,
)
from tether.registry import AgentSpec

ALICE = Caller.user("alice@example.com")  # type: ignore[arg-type]
BOB = Caller.user("bob@example.com")  # type: ignore[arg-type]


def test_register_gives_spiffe_id_owner_and_lifetime(tether: Tether, clock: Clock) -> None:
    agent = tether.registry.register(
        ADMIN, spec("helper", owner="Alice@Example.com", kind="copilot", labels={"team": "x"})
    )
    assert agent.id == "spiffe://tether.local/agent/helper"
    assert agent.owner == "alice@example.com"
    assert agent.state is AgentState.ACTIVE
    assert agent.expires_at == clock.now + timedelta(days=90)
    assert agent.created_by == "admin"
    assert tether.registry.get(ADMIN, agent.id) == agent
    assert tether.registry.get(ADMIN, "helper") == agent


def test_trust_domain_comes_from_config(make_settings, clock) -> None:
    settings = make_settings(trust_domain="acme.example")
    Tether.init(settings)[0].close()
    with Tether.open(settings, clock=clock) as t:
        agent = t.registry.register(ADMIN, spec("a1"))
        assert agent.id == "spiffe://acme.example/agent/a1"
        with pytest.raises(InvalidRequest, match="trust domain"):
            t.registry.get(ADMIN, "spiffe://tether.local/agent/a1")


@pytest.mark.parametrize("owner", [None, "", "   "])
def test_registration_without_owner_is_refused_and_stores_nothing(tether, owner) -> None:
    before = tether.events.list()
    with pytest.raises(OwnerRequired, match="owner"):
        tether.registry.register(ADMIN, spec("x", owner=owner))
    assert tether.registry.list(ADMIN) == []
    assert tether.events.list() == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "a/b", "invalid agent name"),
        ("name", "..", "invalid agent name"),
        ("name", "x" * 64, "invalid agent name"),
        ("name", "Upper", "invalid agent name"),
        ("owner", "not-an-email", "invalid email"),
        ("kind", "robot", "invalid kind"),
        ("labels", {"Bad Key": "v"}, "invalid label key"),
        ("purpose", "p" * 1001, "purpose"),
    ],
)
def test_invalid_registrations_are_refused_and_store_nothing(tether, field, value, message):
    kwargs = {"name": "ok", "owner": "alice@example.com", field: value}
    name, owner = kwargs.pop("name"), kwargs.pop("owner")
    with pytest.raises(InvalidRequest, match=message):
        tether.registry.register(ADMIN, spec(name, owner=owner, **kwargs))
    assert tether.registry.list(ADMIN) == []


def test_lifetime_above_maximum_is_refused(tether) -> None:
    with pytest.raises(InvalidRequest, match="longer than the maximum"):
        tether.registry.register(ADMIN, spec("x", expires_in=timedelta(days=366)))
    agent = tether.registry.register(ADMIN, spec("x", expires_in=timedelta(days=365)))
    assert agent.state is AgentState.ACTIVE


def test_names_and_keys_are_never_reused(tether) -> None:
    first = tether.registry.register(ADMIN, spec("x"))
    tether.registry.retire(ADMIN, "x")
    with pytest.raises(Conflict, match="never reused"):
        tether.registry.register(ADMIN, spec("x"))
    with pytest.raises(Conflict, match="public_key"):
        tether.registry.register(
            ADMIN, AgentSpec(name="y", owner="a@b.co", public_key=first.public_key)
        )


def test_parent_must_exist_be_active_and_outlive_child(tether, clock) -> None:
    with pytest.raises(NotFound):
        tether.registry.register(ADMIN, spec("child", parent="ghost"))
    tether.registry.register(ADMIN, spec("parent", expires_in=timedelta(days=10)))
    with pytest.raises(InvalidRequest, match="outlive"):
        tether.registry.register(
            ADMIN, spec("child", parent="parent", expires_in=timedelta(days=11))
        )
    child = tether.registry.register(
        ADMIN,
        spec("child", parent="spiffe://tether.local/agent/parent", expires_in=timedelta(days=5)),
    )
    assert child.parent == "spiffe://tether.local/agent/parent"
    tether.registry.suspend(ADMIN, "parent")
    with pytest.raises(InvalidRequest, match="not active"):
        tether.registry.register(
            ADMIN, spec("child2", parent="parent", expires_in=timedelta(days=1))
        )


def test_suspend_resume_retire_and_illegal_transitions(tether) -> None:
    tether.registry.register(ADMIN, spec("x"))
    assert tether.registry.suspend(ADMIN, "x", "investigating").state is AgentState.SUSPENDED
    with pytest.raises(IllegalTransition, match="already suspended"):
        tether.registry.suspend(ADMIN, "x")
    assert tether.registry.resume(ADMIN, "x").state is AgentState.ACTIVE
    with pytest.raises(IllegalTransition, match="already active"):
        tether.registry.resume(ADMIN, "x")
    assert tether.registry.retire(ADMIN, "x").state is AgentState.RETIRED
    for move in (tether.registry.resume, tether.registry.suspend, tether.registry.retire):
        with pytest.raises(IllegalTransition, match="retired"):
            move(ADMIN, "x")
    with pytest.raises(InvalidRequest, match="retired"):
        tether.registry.set_owner(ADMIN, "x", "bob@example.com")


def test_expiry_is_true_on_every_read_and_not_resumable(tether, clock) -> None:
    tether.registry.register(ADMIN, spec("x", expires_in=timedelta(seconds=2)))
    clock.advance(seconds=3)
    # No sweep has run: the read itself says expired.
    assert tether.registry.get(ADMIN, "x").state is AgentState.EXPIRED
    assert [a.name for a in tether.registry.list(ADMIN, state="expired")] == ["x"]
    with pytest.raises(IllegalTransition, match="expired"):
        tether.registry.resume(ADMIN, "x")
    # The sweep persists it once, with an event naming the reason.
    assert [a.name for a in tether.registry.sweep()] == ["x"]
    assert tether.registry.sweep() == []
    expired = tether.events.list(type="agent.expired")
    assert len(expired) == 1 and "lifetime ended" in expired[0].reason
    assert tether.registry.retire(ADMIN, "x").state is AgentState.RETIRED


def test_suspended_agent_also_expires(tether, clock) -> None:
    tether.registry.register(ADMIN, spec("x", expires_in=timedelta(seconds=10)))
    tether.registry.suspend(ADMIN, "x")
    clock.advance(seconds=11)
    assert tether.registry.get(ADMIN, "x").state is AgentState.EXPIRED


def test_offboard_makes_agents_unowned_then_suspended_after_grace(tether, clock) -> None:
    for name in ("a1", "a2"):
        tether.registry.register(ADMIN, spec(name))
    tether.registry.register(ADMIN, spec("b1", owner="bob@example.com"))
    done = tether.registry.offboard_owner(ADMIN, "alice@example.com", "left the company")
    assert [a.name for a in done] == ["a1", "a2"]
    assert all(a.owner is None and a.unowned for a in done)
    unowned = tether.registry.list(ADMIN, unowned=True)
    assert [a.name for a in unowned] == ["a1", "a2"]
    assert all(a.state is AgentState.ACTIVE for a in unowned)  # grace period (60s) running
    clock.advance(seconds=61)
    assert all(a.state is AgentState.SUSPENDED for a in tether.registry.list(ADMIN, unowned=True))
    assert tether.registry.get(ADMIN, "b1").state is AgentState.ACTIVE
    with pytest.raises(InvalidRequest, match="no owner"):
        tether.registry.resume(ADMIN, "a1")
    assert len(tether.registry.sweep()) == 2
    events = tether.events.list(type="agent.suspended")
    assert {e.subject for e in events} == {
        "spiffe://tether.local/agent/a1",
        "spiffe://tether.local/agent/a2",
    }
    assert all("grace period" in e.reason for e in events)
    # Adopting the agent clears the flag; the owner can then resume it.
    adopted = tether.registry.set_owner(ADMIN, "a1", "carol@example.com", "adopted")
    assert adopted.owner == "carol@example.com" and adopted.unowned_since is None
    assert tether.registry.resume(ADMIN, "a1").state is AgentState.ACTIVE


def test_owner_sees_and_changes_only_own_agents(tether) -> None:
    tether.registry.register(ADMIN, spec("alices"))
    tether.registry.register(ADMIN, spec("bobs", owner="bob@example.com"))
    assert [a.name for a in tether.registry.list(BOB)] == ["bobs"]
    with pytest.raises(NotFound):
        tether.registry.get(BOB, "alices")
    with pytest.raises(NotFound):
        tether.registry.suspend(BOB, "alices")
    assert tether.registry.get(ADMIN, "alices").state is AgentState.ACTIVE
    with pytest.raises(Forbidden, match="yourself"):
        tether.registry.register(BOB, spec("sneaky", owner="alice@example.com"))
    with pytest.raises(Forbidden):
        tether.registry.offboard_owner(BOB, "alice@example.com")
    refused = tether.events.list(type="access.refused")
    assert [(e.actor, e.detail["op"]) for e in refused] == [
        ("user:bob@example.com", "read"),
        ("user:bob@example.com", "agent.suspended"),
        ("user:bob@example.com", "register"),
        ("user:bob@example.com", "offboard"),
    ]
    # A missing agent is also "not found", and that is no refusal worth recording.
    with pytest.raises(NotFound):
        tether.registry.get(BOB, "ghost")
    assert len(tether.events.list(type="access.refused")) == 4
    mine = tether.registry.register(BOB, spec("mine", owner="bob@example.com"))
    assert mine.created_by == "user:bob@example.com"


def test_rotate_key_replaces_public_key(tether, clock) -> None:
    old = tether.registry.register(ADMIN, spec("x"))
    clock.advance(seconds=5)
    new_key = spec("unused").public_key
    rotated = tether.registry.rotate_key(ADMIN, "x", new_key, "scheduled")
    assert rotated.public_key == new_key != old.public_key
    assert rotated.key_rotated_at == clock.now
    event = tether.events.list(type="agent.key_rotated")[0]
    assert event.detail == {"old_public_key": old.public_key, "new_public_key": new_key}
    with pytest.raises(InvalidRequest, match="Ed25519"):
        tether.registry.rotate_key(ADMIN, "x", "not-a-key")


def test_every_lifecycle_change_is_an_event(tether, clock) -> None:
    tether.registry.register(ADMIN, spec("x"))
    tether.registry.suspend(ADMIN, "x", "why not")
    tether.registry.resume(ADMIN, "x")
    tether.registry.set_owner(ADMIN, "x", "bob@example.com")
    tether.registry.update(ADMIN, "x", purpose="new purpose")
    tether.registry.retire(ADMIN, "x", "done")
    events = tether.events.list(subject="spiffe://tether.local/agent/x")
    assert [e.type for e in events] == [
        "agent.registered",
        "agent.suspended",
        "agent.resumed",
        "agent.owner_changed",
        "agent.updated",
        "agent.retired",
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert events[1].reason == "why not" and events[1].actor == "admin"
    assert events[3].detail == {"from": "alice@example.com", "to": "bob@example.com"}
    assert all(e.at == clock.now for e in events)


def test_refused_change_leaves_no_trace(tether) -> None:
    tether.registry.register(ADMIN, spec("x"))
    tether.registry.retire(ADMIN, "x")
    before = tether.events.list()
    with pytest.raises(IllegalTransition):
        tether.registry.resume(ADMIN, "x")
    assert tether.events.list() == before
    assert tether.registry.get(ADMIN, "x").state is AgentState.RETIRED
