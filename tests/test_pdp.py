"""The decision point: the delegation rule, reasons, caching, and failing closed."""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path

import cedarpy
import pytest
from conftest import ADMIN, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import (
    AccessRequest,
    Denied,
    GrantSpec,
    InvalidRequest,
    Settings,
    StoreUnavailable,
    Tether,
)
from tether.permissions import pattern_matches

ALICE = "user:alice@example.com"
BOB = "user:bob@example.com"
HELPER = "spiffe://tether.local/agent/helper"
NO_DELETES = (
    '@id("no-deletes") forbid(principal, action == Action::"tools/call", resource) '
    'when { resource.path like "*delete*" };'
)


@pytest.fixture
def org(tether: Tether) -> Tether:
    """helper may create issues; alice may call any github tool."""
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "github/create_issue"))
    tether.grants.add(ADMIN, GrantSpec(ALICE, "tools/call", "github/*"))
    return tether


def ask(tether: Tether, resource: str = "github/create_issue", **kw):
    return tether.pdp.decide(AccessRequest.of("helper", "tools/call", resource, **kw))


def test_delegation_rule_from_the_issue(org: Tether) -> None:
    allowed = ask(org, on_behalf_of=ALICE)
    assert allowed.allowed
    assert allowed.chain == (ALICE, HELPER)
    assert len(allowed.grants) == 2

    bob = ask(org, on_behalf_of=BOB)
    assert not bob.allowed
    assert any(BOB in r and "no grant" in r for r in bob.reasons)
    assert not any(HELPER in r for r in bob.reasons)

    delete = ask(org, "github/delete_repo", on_behalf_of=ALICE)
    assert not delete.allowed
    assert [r for r in delete.reasons if "no grant" in r] == [
        f"{HELPER} holds no grant for tools/call on github/delete_repo"
    ]


def test_library_authorize_raises_on_deny_and_records_every_decision(org: Tether) -> None:
    decision = org.authorize(AccessRequest.of("helper", "tools/call", "github/create_issue"))
    assert decision.allowed
    with pytest.raises(Denied) as denied:
        org.authorize(AccessRequest.of("helper", "tools/call", "github/delete_repo"))
    assert any("helper" in r for r in denied.value.reasons)
    assert denied.value.exit_code == 3 and denied.value.status_code == 403
    recorded = org.events.list(type="decision")
    assert [e.decision for e in recorded] == ["allow", "deny"]
    assert recorded[1].chain == (HELPER,)
    assert recorded[1].reasons == denied.value.reasons


def test_guardrail_beats_grants_and_is_named(org: Tether) -> None:
    org.grants.add(ADMIN, GrantSpec("helper", "tools/call", "github/delete_repo"))
    assert ask(org, "github/delete_repo", on_behalf_of=ALICE).allowed
    org.guardrails.add(ADMIN, NO_DELETES, "no-deletes.cedar")
    denied = ask(org, "github/delete_repo", on_behalf_of=ALICE)
    assert not denied.allowed
    assert denied.policies == ("no-deletes",)
    assert any("no-deletes" in r for r in denied.reasons)


def test_grant_expiry_ends_an_allow_even_when_cached(org: Tether, clock) -> None:
    org.grants.add(
        ADMIN, GrantSpec("helper", "tools/call", "jira/create", expires_in=timedelta(seconds=1))
    )
    assert ask(org, "jira/create").allowed
    assert ask(org, "jira/create").cached
    clock.advance(seconds=1)
    after = ask(org, "jira/create")
    assert not after.allowed
    assert not after.cached


def test_suspended_and_unowned_agents_are_denied(org: Tether, clock) -> None:
    assert ask(org).allowed
    org.registry.suspend(ADMIN, "helper")
    suspended = ask(org)
    assert not suspended.allowed
    assert suspended.policies == ("tether-not-active",)
    org.registry.resume(ADMIN, "helper")
    assert ask(org).allowed
    org.registry.offboard_owner(ADMIN, "alice@example.com")
    unowned = ask(org)
    assert not unowned.allowed
    assert "tether-unowned" in unowned.policies


def test_grant_to_agent_does_not_leak_to_others(org: Tether) -> None:
    org.registry.register(ADMIN, spec("other"))
    decision = org.pdp.decide(AccessRequest.of("other", "tools/call", "github/create_issue"))
    assert not decision.allowed


def test_unknown_principals_cycles_and_depth(org: Tether) -> None:
    ghost = org.pdp.decide(AccessRequest.of("ghost", "tools/call", "github/create_issue"))
    assert not ghost.allowed
    assert any("not a registered agent" in r for r in ghost.reasons)
    with pytest.raises(InvalidRequest, match="cycle"):
        org.pdp.decide(
            AccessRequest.of("helper", "tools/call", "github/x", chain=["helper", "a", "helper"])
        )
    for name in ("a1", "a2", "a3", "a4"):
        org.registry.register(ADMIN, spec(name))
    deep = org.pdp.decide(
        AccessRequest.of("helper", "tools/call", "github/x", chain=["a1", "a2", "a3", "a4"])
    )
    assert not deep.allowed
    assert any("deeper than the cap" in r for r in deep.reasons)
    with pytest.raises(InvalidRequest):
        org.pdp.decide(AccessRequest.of("helper", "tools/call", "../etc/passwd"))
    with pytest.raises(InvalidRequest):
        org.pdp.decide(AccessRequest.of("helper", "rm -rf", "github/x"))
    with pytest.raises(InvalidRequest, match="set by Tether"):
        org.pdp.decide(
            AccessRequest.of("helper", "tools/call", "github/x", context={"chain_depth": 0})
        )


def test_token_scope_narrows(org: Tether) -> None:
    inside = ask(org, scope=["tools/call:github/*"])
    assert inside.allowed
    outside = ask(org, scope=["tools/call:jira/*"])
    assert not outside.allowed
    assert any("outside the token's scope" in r for r in outside.reasons)


def test_hits_are_cached_and_changes_invalidate(org: Tether) -> None:
    first = ask(org, on_behalf_of=ALICE)
    second = ask(org, on_behalf_of=ALICE)
    assert not first.cached and second.cached
    assert second.allowed and second.epoch == first.epoch
    [grant] = [g for g in org.grants.list(ADMIN) if g.principal.id == "helper"]
    org.grants.revoke(ADMIN, grant.id)
    third = ask(org, on_behalf_of=ALICE)
    assert not third.allowed and third.epoch > first.epoch


# ---- fail closed: every fault on the way is a deny ---------------------------------------


def test_store_error_while_compiling_is_a_deny(org: Tether, monkeypatch) -> None:
    org.grants.add(ADMIN, GrantSpec("helper", "tools/call", "jira/create"))  # new epoch

    def broken(*_a, **_k):
        raise StoreUnavailable("the store is unavailable")

    monkeypatch.setattr(org.grants, "live", broken)
    decision = ask(org, "jira/create")
    assert not decision.allowed
    assert any("decision failed" in r for r in decision.reasons)


def test_epoch_read_error_is_a_deny(org: Tether, monkeypatch) -> None:
    assert ask(org).allowed

    def broken():
        raise StoreUnavailable("the store is unavailable")

    monkeypatch.setattr(org.epoch, "current", broken)
    assert not ask(org).allowed


def test_cedar_engine_error_is_a_deny(org: Tether, monkeypatch) -> None:
    def broken(*_a, **_k):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", broken)
    decision = ask(org, "github/something_new")
    assert not decision.allowed
    assert any("engine exploded" in r for r in decision.reasons)


def test_policy_evaluation_error_is_a_deny(org: Tether) -> None:
    # The guardrail overflows at run time: Cedar skips an erroring forbid, which
    # would fail open; Tether denies on any evaluation error.
    org.guardrails.add(
        ADMIN,
        '@id("overflow") forbid(principal, action, resource) '
        "when { context.time * 1000000000000 > 0 };",
    )
    decision = ask(org)
    assert not decision.allowed
    assert any("evaluation error" in r for r in decision.reasons)


def test_failed_decision_record_is_a_deny(org: Tether, monkeypatch) -> None:
    def broken(*_a, **_k):
        raise StoreUnavailable("the store is unavailable")

    monkeypatch.setattr(org.events, "record", broken)
    with pytest.raises(Denied, match="could not be written"):
        org.authorize(AccessRequest.of("helper", "tools/call", "github/create_issue"))


def test_other_process_sees_changes_within_the_staleness_bound(make_settings) -> None:
    settings = make_settings(decision_staleness_ms=200)
    first, _ = Tether.init(settings)
    second = Tether.open(settings)  # its own engine, cache and epoch: another process
    first.registry.register(ADMIN, spec("helper"))
    first.grants.add(ADMIN, GrantSpec("helper", "tools/call", "github/create_issue"))
    time.sleep(0.25)
    assert ask(second).allowed
    first.registry.suspend(ADMIN, "helper")
    deadline = time.monotonic() + 2
    while ask(second).allowed:
        assert time.monotonic() < deadline, "the other instance kept allowing"
        time.sleep(0.02)
    first.close()
    second.close()


# ---- properties -----------------------------------------------------------------------

AGENTS = ("a0", "a1", "a2")
ACTIONS = ("tools/call", "resources/read")
PATTERNS = ("github/*", "github/create_issue", "github/**", "fs/read_*", "fs/**", "jira/x")
RESOURCES = ("github/create_issue", "github/delete_repo", "github/a/b", "fs/read_doc", "jira/x")
HOLDERS = (*AGENTS, ALICE)
GUARDS = (
    'forbid(principal, action == Action::"tools/call", resource) when { resource.path like "*delete*" };',
    "forbid(principal is Agent, action, resource) when { context.chain_depth > 1 };",
    'forbid(principal, action, resource) when { resource.path like "fs/*" };',
    "forbid(principal, action, resource);",
)


@pytest.fixture(scope="module")
def lab():
    with tempfile.TemporaryDirectory() as tmp:
        tether, _ = Tether.init(Settings.load(Path(tmp)))
        for name in AGENTS:
            tether.registry.register(ADMIN, spec(name))
        yield tether
        tether.close()


grant_sets = st.lists(
    st.tuples(st.sampled_from(HOLDERS), st.sampled_from(ACTIONS), st.sampled_from(PATTERNS)),
    max_size=8,
    unique=True,
)
requests = st.tuples(
    st.lists(st.sampled_from(AGENTS), min_size=1, max_size=3, unique=True),
    st.booleans(),
    st.sampled_from(ACTIONS),
    st.sampled_from(RESOURCES),
)


def _reset(tether: Tether, grant_set) -> None:
    for grant in tether.grants.list(ADMIN):
        tether.grants.revoke(ADMIN, grant.id)
    for holder, action, pattern in grant_set:
        tether.grants.add(ADMIN, GrantSpec(holder, action, pattern))


def _request(req) -> AccessRequest:
    chain, for_alice, action, resource = req
    return AccessRequest.of(
        chain[-1], action, resource, chain=chain[:-1], on_behalf_of=ALICE if for_alice else None
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(grant_sets, requests)
def test_allow_iff_every_identity_holds_a_matching_grant(lab: Tether, grant_set, req) -> None:
    _reset(lab, grant_set)
    chain, for_alice, action, resource = req
    identities = [*([ALICE] if for_alice else []), *chain]
    held = all(
        any(h == who and a == action and pattern_matches(p, resource) for h, a, p in grant_set)
        for who in identities
    )
    decision = lab.pdp.decide(_request(req))
    assert decision.allowed == held, (decision.reasons, grant_set, req)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(grant_sets, requests, st.sampled_from(GUARDS))
def test_a_guardrail_never_turns_a_deny_into_an_allow(lab: Tether, grant_set, req, guard) -> None:
    _reset(lab, grant_set)
    before = lab.pdp.decide(_request(req))
    lab.guardrails.add(ADMIN, f'@id("g") {guard}')
    try:
        after = lab.pdp.decide(_request(req))
    finally:
        lab.guardrails.remove(ADMIN, "g")
    if not before.allowed:
        assert not after.allowed
    assert lab.pdp.decide(_request(req)).allowed == before.allowed
