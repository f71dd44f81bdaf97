"""Grants on both stores: validation, breadth, conditions, ownership, revocation, expiry,
the state epoch, and the least-privilege reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conftest import ADMIN, Clock, spec

from tether import (
    AccessRequest,
    AgentState,
    Caller,
    Denied,
    Forbidden,
    GrantSpec,
    InvalidRequest,
    NotFound,
    Tether,
)

ALICE = Caller.user("alice@example.com")  # type: ignore[arg-type]
BOB = Caller.user("bob@example.com")  # type: ignore[arg-type]
HELPER = "spiffe://tether.local/agent/helper"


def grant(
    principal: str = "helper", action: str = "tools/call", resource: str = "github/*", **kw: Any
) -> GrantSpec:
    return GrantSpec(principal=principal, action=action, resource=resource, **kw)


def stored_epoch(tether: Tether) -> int:
    """The epoch as the store holds it now (bypassing the cached value)."""
    tether.epoch.invalidate()
    return tether.epoch.current()


@pytest.fixture
def helper(tether: Tether) -> Tether:
    """``tether`` with an active agent ``helper`` owned by alice."""
    tether.registry.register(ADMIN, spec("helper"))
    return tether


# ---- add -----------------------------------------------------------------------------------


def test_add_gives_id_default_expiry_granter_and_reason(helper: Tether, clock: Clock) -> None:
    added = helper.grants.add(ADMIN, grant(reason="files issues for the team"))
    assert added.id.startswith("g_") and len(added.id) == 18
    assert added.principal.key == "agent:helper"
    assert (added.action, added.resource, added.condition) == ("tools/call", "github/*", None)
    assert added.broad is False
    assert added.created_at == clock.now
    assert added.expires_at == clock.now + timedelta(days=30)
    assert added.granted_by == "admin"
    assert added.reason == "files issues for the team"
    assert added.revoked_at is None and added.revoked_by is None
    [listed] = helper.grants.list(ADMIN)
    assert listed.id == added.id
    assert listed.expires_at == added.expires_at
    assert listed.reason == added.reason
    assert [g.id for g in helper.grants.live()] == [added.id]
    other = helper.grants.add(ADMIN, grant(resource="github/create_issue"))
    assert other.id != added.id


def test_agent_principal_may_be_written_as_spiffe_id_or_agent_prefix(helper: Tether) -> None:
    for ref in (HELPER, "agent:helper", "helper"):
        assert helper.grants.add(ADMIN, grant(principal=ref)).principal.key == "agent:helper"
    assert len(helper.grants.list(ADMIN, principal="helper")) == 3
    assert len(helper.grants.list(ADMIN, principal=HELPER)) == 3


def test_expiry_is_capped_by_grant_lifetime_max(helper: Tether, clock: Clock) -> None:
    with pytest.raises(InvalidRequest, match="longer than the maximum grant lifetime 365d"):
        helper.grants.add(ADMIN, grant(expires_in=timedelta(days=365, seconds=1)))
    assert helper.grants.list(ADMIN, include_inactive=True) == []
    longest = helper.grants.add(ADMIN, grant(expires_in=timedelta(days=365)))
    assert longest.expires_at == clock.now + timedelta(days=365)
    short = helper.grants.add(ADMIN, grant(expires_in=timedelta(hours=2)))
    assert short.expires_at == clock.now + timedelta(hours=2)


@pytest.mark.parametrize("state", ["suspended", "expired", "retired"])
def test_grant_to_inactive_agent_is_refused(tether: Tether, clock: Clock, state: str) -> None:
    tether.registry.register(ADMIN, spec("helper", expires_in=timedelta(days=1)))
    if state == "suspended":
        tether.registry.suspend(ADMIN, "helper")
    elif state == "retired":
        tether.registry.retire(ADMIN, "helper")
    else:
        clock.advance(days=1, seconds=1)
    assert tether.registry.get(ADMIN, "helper").state is AgentState(state)
    epoch = stored_epoch(tether)
    with pytest.raises(InvalidRequest, match=f"cannot grant to agent helper: it is {state}"):
        tether.grants.add(ADMIN, grant())
    assert tether.grants.list(ADMIN, include_inactive=True) == []
    assert tether.events.list(type="grant.added") == []
    assert stored_epoch(tether) == epoch


def test_grant_to_unknown_agent_is_not_found(tether: Tether) -> None:
    with pytest.raises(NotFound):
        tether.grants.add(ADMIN, grant(principal="ghost"))
    assert tether.grants.list(ADMIN, include_inactive=True) == []


def test_grant_to_a_person(tether: Tether) -> None:
    added = tether.grants.add(ADMIN, grant(principal="user:Alice@Example.com"))
    assert added.principal.key == "user:alice@example.com"
    assert added.principal.display("tether.local") == "user:alice@example.com"
    assert [g.id for g in tether.grants.list(ADMIN, principal="user:alice@example.com")] == [
        added.id
    ]
    assert tether.grants.list(ADMIN, principal="helper") == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("principal", "user:not-an-email", "invalid email"),
        ("principal", "Bad Name", "invalid agent name"),
        ("principal", "spiffe://elsewhere.example/agent/helper", "trust domain"),
        ("principal", "", "invalid agent name"),
        ("action", "tools/list", "invalid action"),
        ("action", "", "invalid action"),
        ("resource", "github//x", "invalid resource pattern"),
        ("resource", "**/x", "invalid resource pattern"),
        ("resource", 'github/"x', "invalid resource pattern"),
        ("resource", "", "invalid resource pattern"),
        ("reason", "r" * 1001, "reason"),
        ("reason", "a\x00b", "reason"),
    ],
)
def test_invalid_grants_are_refused_and_store_nothing(
    helper: Tether, field: str, value: str, message: str
) -> None:
    kwargs: dict[str, Any] = {
        "principal": "helper",
        "action": "tools/call",
        "resource": "github/*",
        field: value,
    }
    epoch = stored_epoch(helper)
    with pytest.raises(InvalidRequest, match=message):
        helper.grants.add(ADMIN, GrantSpec(**kwargs))
    assert helper.grants.list(ADMIN, include_inactive=True) == []
    assert helper.events.list(type="grant.added") == []
    assert stored_epoch(helper) == epoch


# ---- broad grants --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "resource"),
    [("*", "github/*"), ("tools/call", "*"), ("tools/call", "**"), ("tools/call", "*/x")],
)
def test_broad_grants_need_allow_broad_and_a_reason(
    helper: Tether, action: str, resource: str
) -> None:
    for allow_broad, reason in ((False, ""), (False, "needed"), (True, ""), (True, "   ")):
        with pytest.raises(InvalidRequest, match="broad grant"):
            helper.grants.add(
                ADMIN,
                grant(action=action, resource=resource, allow_broad=allow_broad, reason=reason),
            )
    assert helper.grants.list(ADMIN, include_inactive=True) == []
    added = helper.grants.add(
        ADMIN, grant(action=action, resource=resource, allow_broad=True, reason="incident 42")
    )
    assert added.broad is True
    narrow = helper.grants.add(ADMIN, grant(resource="github/create_issue"))
    assert narrow.broad is False
    assert {g.id: g.broad for g in helper.grants.list(ADMIN)} == {added.id: True, narrow.id: False}
    assert [r.grant.id for r in helper.reports.grants(ADMIN, broad=True)] == [added.id]
    [report] = [r for r in helper.reports.grants(ADMIN) if r.grant.id == added.id]
    assert report.suggestion == "narrow: a broad grant"
    assert report.to_dict("tether.local")["broad"] is True


def test_allow_broad_on_a_narrow_grant_does_not_mark_it_broad(helper: Tether) -> None:
    added = helper.grants.add(ADMIN, grant(allow_broad=True, reason="just in case"))
    assert added.broad is False
    assert helper.reports.grants(ADMIN, broad=True) == []


# ---- conditions ----------------------------------------------------------------------------


def test_valid_condition_is_stored_and_applied(helper: Tether) -> None:
    added = helper.grants.add(
        ADMIN, grant(condition='  context.on_behalf_of == "alice@example.com"  ')
    )
    assert added.condition == 'context.on_behalf_of == "alice@example.com"'
    [listed] = helper.grants.list(ADMIN)
    assert listed.condition == added.condition
    helper.grants.add(ADMIN, grant(principal="user:alice@example.com"))
    helper.grants.add(ADMIN, grant(principal="user:bob@example.com"))
    for_alice = AccessRequest.of(
        "helper", "tools/call", "github/x", on_behalf_of="user:alice@example.com"
    )
    for_bob = AccessRequest.of(
        "helper", "tools/call", "github/x", on_behalf_of="user:bob@example.com"
    )
    assert helper.pdp.decide(for_alice).allowed
    assert not helper.pdp.decide(for_bob).allowed


def test_blank_condition_means_none(helper: Tether) -> None:
    assert helper.grants.add(ADMIN, grant(condition="   ")).condition is None


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("resource.path ==", "invalid condition"),
        ("resource.nope == 1", "invalid condition.*nope"),
        ('resource.path == 1 && principal.owner == "x"', "invalid condition"),
        ("context.anything == 1", "invalid condition"),
        ("true }; permit(principal, action, resource) when { true", "invalid condition"),
        ('true }; @id("x") permit(principal, action, resource) when { true', "invalid condition"),
        ("true }; forbid(principal, action, resource) when { true", "invalid condition"),
        ("true // }", "invalid condition"),
        ("c" * 4001, "condition"),
        ("true\x00", "condition"),
    ],
)
def test_bad_conditions_are_refused_and_store_nothing(
    helper: Tether, condition: str, message: str
) -> None:
    epoch = stored_epoch(helper)
    with pytest.raises(InvalidRequest, match=message):
        helper.grants.add(ADMIN, grant(condition=condition))
    assert helper.grants.list(ADMIN, include_inactive=True) == []
    assert helper.events.list(type="grant.added") == []
    assert stored_epoch(helper) == epoch
    # and the agent still holds nothing
    assert not helper.pdp.decide(AccessRequest.of("helper", "tools/call", "github/x")).allowed


# ---- who may grant, and who sees what -------------------------------------------------------


def test_non_admin_cannot_add_or_revoke_and_is_recorded(helper: Tether) -> None:
    helper.registry.register(ADMIN, spec("bobs", owner="bob@example.com"))
    epoch = stored_epoch(helper)
    with pytest.raises(Forbidden, match="only an admin"):
        helper.grants.add(BOB, grant(principal="bobs"))
    with pytest.raises(Forbidden, match="only an admin"):
        helper.grants.add(BOB, grant(principal="user:bob@example.com"))
    assert helper.grants.list(ADMIN, include_inactive=True) == []
    assert stored_epoch(helper) == epoch
    existing = helper.grants.add(ADMIN, grant(principal="bobs"))
    with pytest.raises(Forbidden, match="only an admin"):
        helper.grants.revoke(BOB, existing.id)
    assert [g.id for g in helper.grants.list(ADMIN)] == [existing.id]
    refused = helper.events.list(type="access.refused")
    assert [(e.actor, e.subject, e.detail["op"]) for e in refused] == [
        ("user:bob@example.com", "spiffe://tether.local/agent/bobs", "grant.add"),
        ("user:bob@example.com", "user:bob@example.com", "grant.add"),
        ("user:bob@example.com", existing.id, "grant.revoke"),
    ]
    assert helper.events.list(type="grant.revoked") == []


def test_an_admin_person_may_grant(helper: Tether) -> None:
    carol = Caller.user("carol@example.com", admin=True)  # type: ignore[arg-type]
    added = helper.grants.add(carol, grant())
    assert added.granted_by == "user:carol@example.com"
    revoked = helper.grants.revoke(carol, added.id)
    assert revoked.revoked_by == "user:carol@example.com"


def test_non_admin_lists_only_own_agents_and_own_user_grants(helper: Tether, clock: Clock) -> None:
    helper.registry.register(ADMIN, spec("bobs", owner="bob@example.com"))
    made = []
    for principal in ("helper", "bobs", "user:bob@example.com", "user:alice@example.com"):
        made.append(helper.grants.add(ADMIN, grant(principal=principal)))
        clock.advance(seconds=1)  # list() orders by creation time
    for_helper, for_bobs, for_bob, for_alice = made
    assert [g.id for g in helper.grants.list(ADMIN)] == [
        for_helper.id,
        for_bobs.id,
        for_bob.id,
        for_alice.id,
    ]
    assert [g.id for g in helper.grants.list(BOB)] == [for_bobs.id, for_bob.id]
    assert [g.id for g in helper.grants.list(ALICE)] == [for_helper.id, for_alice.id]
    assert helper.grants.list(BOB, principal="helper") == []
    carol = Caller.user("carol@example.com")  # type: ignore[arg-type]
    assert helper.grants.list(carol) == []
    assert [r.grant.id for r in helper.reports.grants(BOB)] == [for_bobs.id, for_bob.id]


# ---- revoke, events and the epoch ----------------------------------------------------------


def test_revoke_removes_from_list_but_keeps_the_record(helper: Tether, clock: Clock) -> None:
    kept = helper.grants.add(ADMIN, grant(resource="github/create_issue"))
    gone = helper.grants.add(ADMIN, grant())
    clock.advance(seconds=10)
    revoked = helper.grants.revoke(ADMIN, gone.id, "no longer needed")
    assert revoked.id == gone.id
    assert revoked.revoked_at == clock.now
    assert revoked.revoked_by == "admin"
    assert [g.id for g in helper.grants.list(ADMIN)] == [kept.id]
    assert [g.id for g in helper.grants.live()] == [kept.id]
    everything = {g.id: g for g in helper.grants.list(ADMIN, include_inactive=True)}
    assert set(everything) == {kept.id, gone.id}
    assert everything[gone.id].revoked_at == clock.now
    assert everything[kept.id].revoked_at is None
    with pytest.raises(InvalidRequest, match="already revoked"):
        helper.grants.revoke(ADMIN, gone.id)
    with pytest.raises(NotFound, match="no grant g_doesnotexist"):
        helper.grants.revoke(ADMIN, "g_doesnotexist")
    assert len(helper.events.list(type="grant.revoked")) == 1


def test_revoked_grant_no_longer_allows(helper: Tether) -> None:
    request = AccessRequest.of("helper", "tools/call", "github/create_issue")
    added = helper.grants.add(ADMIN, grant())
    assert helper.pdp.decide(request).allowed
    helper.grants.revoke(ADMIN, added.id)
    decision = helper.pdp.decide(request)
    assert not decision.allowed
    assert "holds no grant" in decision.reasons[0]


def test_add_and_revoke_write_events_and_move_the_epoch(helper: Tether, clock: Clock) -> None:
    start = helper.epoch.current()
    first = helper.grants.add(ADMIN, grant(reason="why"))
    after_first = helper.epoch.current()
    assert after_first > start
    second = helper.grants.add(ADMIN, grant(principal="user:alice@example.com"))
    after_second = helper.epoch.current()
    assert after_second > after_first
    helper.grants.revoke(ADMIN, first.id, "done")
    after_revoke = helper.epoch.current()
    assert after_revoke > after_second
    # a refused revoke does not move it
    with pytest.raises(InvalidRequest):
        helper.grants.revoke(ADMIN, first.id)
    assert stored_epoch(helper) == after_revoke

    added = helper.events.list(type="grant.added")
    assert [(e.actor, e.subject, e.detail["id"]) for e in added] == [
        ("admin", HELPER, first.id),
        ("admin", "user:alice@example.com", second.id),
    ]
    assert added[0].reason == "why"
    assert added[0].detail["resource"] == "github/*"
    assert added[0].detail["expires_at"] == first.expires_at.isoformat()
    [revoked] = helper.events.list(type="grant.revoked")
    assert (revoked.actor, revoked.subject, revoked.reason) == ("admin", HELPER, "done")
    assert revoked.detail == {"grant": first.id}
    assert all(e.at == clock.now for e in [*added, revoked])


# ---- expiry --------------------------------------------------------------------------------


def test_expired_grant_leaves_list_live_and_decisions(helper: Tether, clock: Clock) -> None:
    short = helper.grants.add(ADMIN, grant(expires_in=timedelta(hours=1)))
    request = AccessRequest.of("helper", "tools/call", "github/create_issue")
    assert helper.pdp.decide(request).allowed
    epoch = stored_epoch(helper)
    clock.advance(minutes=59, seconds=59)
    assert [g.id for g in helper.grants.list(ADMIN)] == [short.id]
    assert helper.pdp.decide(request).allowed
    clock.advance(seconds=1)  # exactly at expires_at: no longer live
    assert helper.grants.list(ADMIN) == []
    assert helper.grants.live() == []
    assert [g.id for g in helper.grants.list(ADMIN, include_inactive=True)] == [short.id]
    # No write happened, yet the decision point stops trusting the grant.
    assert stored_epoch(helper) == epoch
    decision = helper.pdp.decide(request)
    assert not decision.allowed
    with pytest.raises(Denied):
        helper.authorize(request)


# ---- reports -------------------------------------------------------------------------------


def test_unused_report_and_last_use(helper: Tether, clock: Clock) -> None:
    used = helper.grants.add(ADMIN, grant(expires_in=timedelta(days=90)))
    idle = helper.grants.add(
        ADMIN, grant(action="resources/read", resource="docs/**", expires_in=timedelta(days=90))
    )
    unused_window = timedelta(days=30)
    assert {r.grant.id for r in helper.reports.grants(ADMIN, unused=unused_window)} == {
        used.id,
        idle.id,
    }
    clock.advance(hours=1)
    used_at = clock.now
    decision = helper.authorize(AccessRequest.of("helper", "tools/call", "github/create_issue"))
    assert decision.grants == (used.id,)
    # a denied decision is no use of anything
    with pytest.raises(Denied):
        helper.authorize(AccessRequest.of("helper", "resources/read", "secrets/x"))
    clock.advance(days=1)
    report = helper.reports.grants(ADMIN, unused=unused_window)
    assert [r.grant.id for r in report] == [idle.id]
    assert report[0].last_used is None
    assert report[0].suggestion == "revoke: unused for 30d"
    by_id = {r.grant.id: r for r in helper.reports.grants(ADMIN)}
    assert by_id[used.id].last_used == used_at
    assert by_id[used.id].suggestion == "keep"
    assert by_id[idle.id].last_used is None
    assert helper.reports.last_uses(used_at - timedelta(seconds=1)) == {used.id: used_at}
    # Once the use falls out of the window, the grant is unused again.
    clock.advance(days=30)
    assert {r.grant.id for r in helper.reports.grants(ADMIN, unused=unused_window)} == {
        used.id,
        idle.id,
    }
    assert [r.grant.id for r in helper.reports.grants(ADMIN, unused=timedelta(days=60))] == [
        idle.id
    ]


def test_expiring_report(helper: Tether, clock: Clock) -> None:
    soon = helper.grants.add(ADMIN, grant(expires_in=timedelta(days=3)))
    helper.grants.add(ADMIN, grant(resource="github/create_issue"))  # default: 30 days
    edge = helper.grants.add(ADMIN, grant(resource="github/x", expires_in=timedelta(days=7)))
    week = timedelta(days=7)
    assert {r.grant.id for r in helper.reports.grants(ADMIN, expiring=week)} == {soon.id, edge.id}
    assert [r.grant.id for r in helper.reports.grants(ADMIN, expiring=timedelta(days=2))] == []
    clock.advance(days=1)
    assert [r.grant.id for r in helper.reports.grants(ADMIN, expiring=timedelta(days=2))] == [
        soon.id
    ]
    clock.advance(days=2)  # soon has expired: it is no longer reported at all
    assert [r.grant.id for r in helper.reports.grants(ADMIN, expiring=week)] == [edge.id]


def test_review_groups_by_owner_with_suggestions(helper: Tether) -> None:
    helper.registry.register(ADMIN, spec("bobs", owner="bob@example.com"))
    helper.registry.register(ADMIN, spec("idle", owner="bob@example.com"))
    used = helper.grants.add(ADMIN, grant())
    idle = helper.grants.add(ADMIN, grant(action="resources/read", resource="docs/**"))
    broad = helper.grants.add(
        ADMIN, grant(principal="bobs", resource="**", allow_broad=True, reason="migration")
    )
    helper.grants.add(ADMIN, grant(principal="user:alice@example.com"))  # people: not reviewed
    helper.authorize(AccessRequest.of("helper", "tools/call", "github/create_issue"))

    review = helper.reports.review(ADMIN)
    assert [o["owner"] for o in review] == ["alice@example.com", "bob@example.com"]
    [alice_helper] = review[0]["agents"]
    assert alice_helper["agent"] == HELPER
    assert alice_helper["state"] == "active"
    suggestions = {g["id"]: g["suggestion"] for g in alice_helper["grants"]}
    assert suggestions == {used.id: "keep", idle.id: "revoke: unused for 30d"}
    last_used = {g["id"]: g["last_used"] for g in alice_helper["grants"]}
    assert last_used[used.id] is not None and last_used[idle.id] is None
    bob_agents = {a["agent"]: a["grants"] for a in review[1]["agents"]}
    assert set(bob_agents) == {
        "spiffe://tether.local/agent/bobs",
        "spiffe://tether.local/agent/idle",
    }
    assert [(g["id"], g["suggestion"]) for g in bob_agents["spiffe://tether.local/agent/bobs"]] == [
        (broad.id, "narrow: a broad grant")
    ]
    assert bob_agents["spiffe://tether.local/agent/idle"] == []
    # An owner sees only their own part; the filter narrows an admin's view.
    assert [o["owner"] for o in helper.reports.review(BOB)] == ["bob@example.com"]
    assert [o["owner"] for o in helper.reports.review(ADMIN, owner="alice@example.com")] == [
        "alice@example.com"
    ]


def test_review_suggests_revoking_grants_of_suspended_agents(helper: Tether) -> None:
    added = helper.grants.add(ADMIN, grant())
    helper.registry.suspend(ADMIN, "helper", "investigating")
    [owner] = helper.reports.review(ADMIN)
    [agent] = owner["agents"]
    assert agent["state"] == "suspended"
    assert [(g["id"], g["suggestion"]) for g in agent["grants"]] == [
        (added.id, "revoke: the agent is suspended")
    ]
