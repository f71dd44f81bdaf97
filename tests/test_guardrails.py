"""Guardrails on both stores: whole-file validation, reserved and fresh ids, removal,
who may change them, and how they override grants in decisions."""

from __future__ import annotations

import contextlib

import cedarpy
import pytest
from conftest import ADMIN, Clock, spec

from tether import (
    AccessRequest,
    Caller,
    Conflict,
    Decision,
    Denied,
    Forbidden,
    GrantSpec,
    InvalidRequest,
    NotFound,
    Tether,
)

BOB = Caller.user("bob@example.com")  # type: ignore[arg-type]
BUILTINS = ["tether-not-active", "tether-unowned", "tether-trifecta"]  # trifecta: deny (default)
NO_DELETES = (
    '@id("no-deletes") forbid(principal, action == Action::"tools/call", resource) '
    'when { resource.path like "*delete*" };'
)
NO_ADMIN_PATHS = (
    '@id("no-admin") forbid(principal, action, resource) when { resource.path like "admin/*" };'
)
ONLY_OFFICE_HOURS = (
    '@id("office-hours") forbid(principal, action, resource) '
    "unless { context.hour >= 8 && context.hour < 18 };"
)
DELETE_REPO = AccessRequest.of(
    "helper", "tools/call", "github/delete_repo", on_behalf_of="user:alice@example.com"
)
CREATE_ISSUE = AccessRequest.of(
    "helper", "tools/call", "github/create_issue", on_behalf_of="user:alice@example.com"
)


def ids(tether: Tether) -> list[str]:
    return [rail.id for rail in tether.guardrails.list()]


def stored_epoch(tether: Tether) -> int:
    """The epoch as the store holds it now (bypassing the cached value)."""
    tether.epoch.invalidate()
    return tether.epoch.current()


def same(a: Decision, b: Decision) -> bool:
    return (a.allowed, a.reasons, a.policies, a.grants, a.epoch) == (
        b.allowed,
        b.reasons,
        b.policies,
        b.grants,
        b.epoch,
    )


@pytest.fixture
def granted(tether: Tether) -> Tether:
    """helper (alice's agent) and alice herself may call any github tool."""
    tether.registry.register(ADMIN, spec("helper"))
    for principal in ("helper", "user:alice@example.com"):
        tether.grants.add(ADMIN, GrantSpec(principal, "tools/call", "github/*"))
    return tether


# ---- add and list --------------------------------------------------------------------------


def test_builtins_are_listed_first_and_marked(tether: Tether) -> None:
    rails = tether.guardrails.list()
    assert [r.id for r in rails] == BUILTINS
    assert all(r.builtin and r.source == "built-in" and r.added_at is None for r in rails)
    assert all("forbid" in r.text for r in rails)


def test_add_stores_lists_and_records(tether: Tether, clock: Clock) -> None:
    epoch = tether.epoch.current()
    [added] = tether.guardrails.add(ADMIN, NO_DELETES, "f.cedar")
    assert added.id == "no-deletes"
    assert (added.source, added.added_by, added.added_at) == ("f.cedar", "admin", clock.now)
    assert added.builtin is False
    assert 'like "*delete*"' in added.text and added.text.lstrip().startswith('@id("no-deletes")')
    # what is stored is one Cedar policy carrying its own @id
    assert len(cedarpy.PolicySet.from_str(added.text)) == 1
    rails = tether.guardrails.list()
    assert [r.id for r in rails] == [*BUILTINS, "no-deletes"]
    assert rails[-1] == added
    assert [r.builtin for r in rails] == [True, True, True, False]
    assert tether.epoch.current() > epoch
    [event] = tether.events.list(type="policy.added")
    assert (event.actor, event.subject) == ("admin", "policy:no-deletes")
    assert event.detail == {"text": added.text, "source": "f.cedar"}


def test_a_file_of_several_policies_is_split_by_id(tether: Tether, clock: Clock) -> None:
    added = tether.guardrails.add(ADMIN, NO_DELETES + "\n// a comment\n" + NO_ADMIN_PATHS)
    assert [r.id for r in added] == ["no-deletes", "no-admin"]
    assert "admin/*" not in added[0].text and "delete" not in added[1].text
    assert set(ids(tether)) == {*BUILTINS, "no-deletes", "no-admin"}
    assert [e.subject for e in tether.events.list(type="policy.added")] == [
        "policy:no-deletes",
        "policy:no-admin",
    ]


# ---- refusals: nothing changes --------------------------------------------------------------

TEMPLATE = '@id("t") permit(principal == ?principal, action, resource);'
BAD_FILES = [
    pytest.param(
        '@id("x") forbid(principal, action, resource) when { resource.path like };',
        "Cedar could not parse",
        id="syntax",
    ),
    pytest.param(
        '@id("x") forbid(principal, action, resource) when { resource.nope == 1 };',
        "does not validate against Tether's schema.*nope",
        id="schema-attribute",
    ),
    pytest.param(
        '@id("x") forbid(principal, action == Action::"tools/delete", resource);',
        "does not validate",
        id="schema-action",
    ),
    pytest.param(
        '@id("x") forbid(principal, action, resource) when { context.whatever == 1 };',
        "does not validate",
        id="schema-context",
    ),
    pytest.param(
        'forbid(principal, action, resource) when { resource.path like "*x*" };',
        r'needs an @id\("..."\)',
        id="no-id",
    ),
    pytest.param(
        '@id("has space") forbid(principal, action, resource);', "needs an @id", id="bad-id"
    ),
    pytest.param('@id("") forbid(principal, action, resource);', "needs an @id", id="empty-id"),
    pytest.param(
        '@id("dup") forbid(principal, action, resource);\n'
        '@id("dup") forbid(principal, action, resource) when { resource.depth > 3 };',
        "'dup' appears twice",
        id="duplicate-id",
    ),
    pytest.param('@id("tether-x") forbid(principal, action, resource);', "reserved", id="tether-"),
    pytest.param(
        '@id("tether-unowned") forbid(principal, action, resource);', "reserved", id="builtin-id"
    ),
    pytest.param('@id("grant:x") forbid(principal, action, resource);', "reserved", id="grant:"),
    pytest.param(
        '@id("grant:g_0123456789abcdef") forbid(principal, action, resource);',
        "reserved",
        id="grant-impersonation",
    ),
    pytest.param(TEMPLATE, "templates are not supported", id="template"),
    pytest.param("", "a policy file must be Cedar text", id="empty"),
    pytest.param("  \n\t ", "a policy file must be Cedar text", id="blank"),
    pytest.param("// only a comment\n", "holds no policy", id="no-policy"),
    pytest.param(NO_DELETES + "\x00", "a policy file must be Cedar text", id="nul"),
    pytest.param(NO_DELETES + " " * 64_001, "a policy file must be Cedar text", id="too-long"),
    pytest.param(
        NO_DELETES + "\n" + NO_ADMIN_PATHS + "\nforbid(principal, action, resource);",
        "needs an @id",
        id="two-good-one-bad-no-id",
    ),
    pytest.param(
        NO_DELETES
        + "\n"
        + NO_ADMIN_PATHS
        + '\n@id("x") forbid(principal, action, resource) when { resource.nope };',
        "does not validate",
        id="two-good-one-bad-schema",
    ),
    pytest.param(
        NO_DELETES
        + "\n"
        + NO_ADMIN_PATHS
        + '\n@id("tether-y") forbid(principal, action, resource);',
        "reserved",
        id="two-good-one-bad-reserved",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_files_are_refused_and_nothing_changes(
    granted: Tether, text: str, message: str
) -> None:
    before = granted.pdp.decide(DELETE_REPO)
    assert before.allowed
    epoch = stored_epoch(granted)
    events = granted.events.list()
    with pytest.raises(InvalidRequest, match=message):
        granted.guardrails.add(ADMIN, text, "bad.cedar")
    assert ids(granted) == BUILTINS
    assert stored_epoch(granted) == epoch
    assert granted.events.list() == events
    assert same(granted.pdp.decide(DELETE_REPO), before)


def test_syntax_error_carries_cedars_message(tether: Tether) -> None:
    text = '@id("x") forbid(principal, action, resource) when { resource.path like };'
    with pytest.raises(ValueError) as cedar:  # what Cedar itself says
        cedarpy.policies_to_json_str(text)
    with pytest.raises(InvalidRequest) as refused:
        tether.guardrails.add(ADMIN, text)
    assert str(cedar.value) and str(cedar.value) in str(refused.value)


def test_existing_id_is_a_conflict_and_nothing_changes(granted: Tether) -> None:
    granted.guardrails.add(ADMIN, NO_DELETES, "first.cedar")
    before = granted.pdp.decide(CREATE_ISSUE)
    assert before.allowed
    epoch = stored_epoch(granted)
    rails = granted.guardrails.list()
    with pytest.raises(Conflict, match="'no-deletes' exists"):
        granted.guardrails.add(ADMIN, NO_DELETES.replace("*delete*", "*create*"), "second.cedar")
    # one fresh and one taken id: the fresh one is not added either
    with pytest.raises(Conflict, match="'no-deletes' exists"):
        granted.guardrails.add(ADMIN, NO_ADMIN_PATHS + "\n" + NO_DELETES)
    assert granted.guardrails.list() == rails
    assert granted.guardrails.list()[-1].source == "first.cedar"
    assert stored_epoch(granted) == epoch
    assert len(granted.events.list(type="policy.added")) == 1
    assert same(granted.pdp.decide(CREATE_ISSUE), before)


# ---- remove --------------------------------------------------------------------------------


def test_remove(tether: Tether) -> None:
    [added] = tether.guardrails.add(ADMIN, NO_DELETES, "f.cedar")
    epoch = tether.epoch.current()
    removed = tether.guardrails.remove(ADMIN, "no-deletes", "too strict")
    assert (removed.id, removed.text, removed.source) == (added.id, added.text, "f.cedar")
    assert ids(tether) == BUILTINS
    assert tether.epoch.current() > epoch
    [event] = tether.events.list(type="policy.removed")
    assert (event.actor, event.subject, event.reason) == (
        "admin",
        "policy:no-deletes",
        "too strict",
    )
    assert event.detail == {"text": added.text}
    with pytest.raises(NotFound, match="no policy no-deletes"):
        tether.guardrails.remove(ADMIN, "no-deletes")
    # the id is free again
    assert [r.id for r in tether.guardrails.add(ADMIN, NO_DELETES)] == ["no-deletes"]


def test_unknown_and_builtin_ids_cannot_be_removed(tether: Tether) -> None:
    epoch = stored_epoch(tether)
    with pytest.raises(NotFound):
        tether.guardrails.remove(ADMIN, "ghost")
    for builtin in BUILTINS:
        with pytest.raises(InvalidRequest, match="built-in"):
            tether.guardrails.remove(ADMIN, builtin)
    assert ids(tether) == BUILTINS
    assert stored_epoch(tether) == epoch
    assert tether.events.list(type="policy.removed") == []


def test_non_admin_cannot_add_or_remove_and_is_recorded(granted: Tether) -> None:
    with pytest.raises(Forbidden, match="only an admin"):
        granted.guardrails.add(BOB, NO_DELETES)
    assert ids(granted) == BUILTINS
    granted.guardrails.add(ADMIN, NO_DELETES)
    epoch = stored_epoch(granted)
    with pytest.raises(Forbidden, match="only an admin"):
        granted.guardrails.remove(BOB, "no-deletes")
    assert ids(granted) == [*BUILTINS, "no-deletes"]
    assert stored_epoch(granted) == epoch
    assert not granted.pdp.decide(DELETE_REPO).allowed
    refused = granted.events.list(type="access.refused")
    assert [(e.actor, e.detail["op"]) for e in refused] == [
        ("user:bob@example.com", "policy.add"),
        ("user:bob@example.com", "policy.remove"),
    ]
    # (add names the ids it was given, remove names "policy:<id>")
    assert refused[0].subject.endswith("no-deletes")
    assert refused[1].subject == "policy:no-deletes"
    assert granted.events.list(type="policy.removed") == []


# ---- decisions follow the guardrails --------------------------------------------------------


def test_guardrail_overrides_grants_until_removed(granted: Tether) -> None:
    allowed = granted.pdp.decide(DELETE_REPO)
    assert allowed.allowed
    assert allowed.chain == ("user:alice@example.com", "spiffe://tether.local/agent/helper")
    assert allowed.policies == ()

    granted.guardrails.add(ADMIN, NO_DELETES, "f.cedar")
    denied = granted.pdp.decide(DELETE_REPO)
    assert not denied.allowed
    assert denied.policies == ("no-deletes",)
    assert denied.grants == ()
    assert denied.reasons
    assert all("forbidden by policy no-deletes" in reason for reason in denied.reasons)
    assert denied.epoch > allowed.epoch
    # the guardrail is targeted: other tools stay allowed
    assert granted.pdp.decide(CREATE_ISSUE).allowed
    # authorize records the deny with the policy that caused it
    with pytest.raises(Denied, match="no-deletes"):
        granted.authorize(DELETE_REPO)
    [event] = granted.events.list(type="decision")
    assert event.decision == "deny" and event.detail["policies"] == ["no-deletes"]

    granted.guardrails.remove(ADMIN, "no-deletes")
    again = granted.pdp.decide(DELETE_REPO)
    assert again.allowed
    assert again.policies == ()
    assert again.epoch > denied.epoch


def test_guardrail_applies_to_the_agent_acting_alone(granted: Tether) -> None:
    alone = AccessRequest.of("helper", "tools/call", "github/delete_repo")
    assert granted.pdp.decide(alone).allowed
    granted.guardrails.add(ADMIN, NO_DELETES)
    decision = granted.pdp.decide(alone)
    assert not decision.allowed
    assert decision.policies == ("no-deletes",)
    assert decision.reasons == (
        "spiffe://tether.local/agent/helper forbidden by policy no-deletes",
    )


def test_time_sensitive_guardrail_follows_the_clock(granted: Tether, clock: Clock) -> None:
    granted.guardrails.add(ADMIN, ONLY_OFFICE_HOURS)
    assert clock.now.hour == 12
    assert granted.pdp.decide(CREATE_ISSUE).allowed
    clock.advance(hours=8)  # 20:00 UTC, no write in between
    late = granted.pdp.decide(CREATE_ISSUE)
    assert not late.allowed and late.policies == ("office-hours",)
    assert not late.cached


def test_a_permit_guardrail_cannot_allow_without_a_grant(tether: Tether) -> None:
    """No grant, no access: a guardrail may forbid, never give a permission. Either the
    file is refused, or the decision point does not count its permit as a grant."""
    tether.registry.register(ADMIN, spec("helper"))
    with contextlib.suppress(InvalidRequest):
        tether.guardrails.add(ADMIN, '@id("allow-all") permit(principal, action, resource);')
    decision = tether.pdp.decide(AccessRequest.of("helper", "tools/call", "anything/at/all"))
    assert not decision.allowed
    assert decision.grants == ()
    assert not any("allowed by" in reason for reason in decision.reasons)
