"""The decision point's guard inputs (issue 17): resource labels, the session's labels and
the trifecta guardrail in its three modes, approval holds (grants and ``@approval``
guardrails), reasons that name earlier events, and a cache that arguments and sessions
key only when a policy reads them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, spec

from tether import AccessRequest, GrantSpec, InvalidRequest, Settings, Tether
from tether.policy.pdp import DecisionPoint

ALICE = "user:alice@example.com"
HELPER = "spiffe://tether.local/agent/helper"
TRIFECTA_SESSION = {
    "sensitive": {"seq": 12, "resource": "fs/read_text_file"},
    "untrusted": {"seq": 14, "resource": "web/fetch"},
}


NO_ETC = (
    '@id("no-etc") forbid (principal, action, resource) '
    'when { context.args has path && context.args.path like "/etc/*" };'
)


class Labels:
    """A label source: fixed labels per resource, counting its snapshots."""

    def __init__(self, labels: dict[str, frozenset[str]]) -> None:
        self.labels = labels
        self.snapshots = 0

    def snapshot(self) -> Labels:
        self.snapshots += 1
        return self

    def of(self, action: str, resource: str) -> frozenset[str]:
        return self.labels.get(resource, frozenset())


LABELS = {
    "web/post": frozenset({"egress"}),
    "web/fetch": frozenset({"untrusted"}),
    "fs/read_text_file": frozenset({"sensitive"}),
}


def _open(tmp_path: Path, **guard: Any) -> Tether:
    settings = Settings.load(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'tether.db'}", guard=guard or None
    )
    first, _ = Tether.init(settings)
    first.close()
    tether = Tether.open(settings)
    tether.registry.register(ADMIN, spec("helper"))
    for resource in ("web/*", "fs/*"):
        tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", resource))
    return tether


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Tether, DecisionPoint, Labels]]]:
    opened: list[Tether] = []

    def make(**guard: Any) -> tuple[Tether, DecisionPoint, Labels]:
        tether = _open(tmp_path / str(len(opened)), **guard)
        opened.append(tether)
        labels = Labels(dict(LABELS))
        pdp = DecisionPoint(
            tether.services, tether.registry, tether.grants, tether.guardrails, labels=labels
        )
        return tether, pdp, labels

    yield make
    for tether in opened:
        tether.close()


def ask(pdp: DecisionPoint, resource: str = "web/post", **kw: Any):
    return pdp.decide(AccessRequest.of("helper", "tools/call", resource, **kw))


# ---- labels --------------------------------------------------------------------------


def test_resource_labels_reach_cedar_and_the_decision(make) -> None:
    tether, pdp, labels = make()
    labels.labels["fs/delete"] = frozenset({"destructive", "sensitive"})
    tether.guardrails.add(
        ADMIN,
        '@id("no-destruction") forbid (principal, action, resource) '
        'when { resource.labels.contains("destructive") };',
    )
    denied = ask(pdp, "fs/delete")
    assert not denied.allowed and denied.policies == ("no-destruction",)
    assert denied.labels == ("destructive", "sensitive")
    allowed = ask(pdp, "web/post")
    assert allowed.allowed and allowed.labels == ("egress",)
    assert ask(pdp, "fs/other").labels == ()


def test_the_label_source_is_read_once_per_state(make) -> None:
    tether, pdp, labels = make()
    for resource in ("web/post", "web/fetch", "fs/x", "web/post"):
        ask(pdp, resource)
    assert labels.snapshots == 1
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "git/*"))  # the epoch moves
    ask(pdp)
    assert labels.snapshots == 2


def test_a_failing_label_source_is_a_deny(make) -> None:
    _, pdp, labels = make()

    def broken() -> Labels:
        raise RuntimeError("labels unreadable")

    labels.snapshot = broken  # type: ignore[method-assign]
    decision = ask(pdp)
    assert not decision.allowed
    assert "labels unreadable" in decision.reasons[0]


# ---- the trifecta --------------------------------------------------------------------


def test_trifecta_deny_names_the_earlier_events(make) -> None:
    _, pdp, _ = make()
    denied = ask(pdp, session=TRIFECTA_SESSION)
    assert not denied.allowed and denied.approval is None
    assert denied.policies == ("tether-trifecta",)
    assert denied.reasons == (
        f"{HELPER} forbidden by policy tether-trifecta: the work read sensitive data "
        "(event 12, fs/read_text_file) and took in untrusted content (event 14, web/fetch); "
        "egress tool web/post refused",
    )
    assert json.loads(denied.session) == TRIFECTA_SESSION
    assert denied.labels == ("egress",)
    # one label short, or a tool that sends nothing out: allowed
    assert ask(pdp, session={"sensitive": TRIFECTA_SESSION["sensitive"]}).allowed
    assert ask(pdp, "fs/write_file", session=TRIFECTA_SESSION).allowed
    assert ask(pdp).allowed


def test_trifecta_in_a_delegated_chain_refuses_every_identity(make) -> None:
    tether, pdp, _ = make()
    tether.grants.add(ADMIN, GrantSpec(ALICE, "tools/call", "web/*"))
    denied = ask(pdp, on_behalf_of=ALICE, session=TRIFECTA_SESSION)
    assert not denied.allowed
    assert denied.chain == (ALICE, HELPER)
    assert all("(event 12, fs/read_text_file)" in r for r in denied.reasons)


def test_trifecta_approval_holds_then_the_approval_lets_it_through(make) -> None:
    _, pdp, _ = make(trifecta="approval")
    held = ask(pdp, session=TRIFECTA_SESSION)
    assert not held.allowed and held.approval == "owner"
    assert held.policies == ("tether-trifecta",)
    [reason] = held.reasons
    assert reason.startswith(
        f"{HELPER} held for approval by the agent's owner: policy tether-trifecta requires "
        "approval: the work read sensitive data (event 12, fs/read_text_file)"
    )
    assert held.grants  # the grants that will allow it once approved
    approved = ask(pdp, session=TRIFECTA_SESSION, approval="apr_123")
    assert approved.allowed and approved.approval is None
    assert approved.reasons[0] == "allowed with approval apr_123"
    # an approval changes nothing where nothing was held
    assert ask(pdp, approval="apr_123").reasons == ask(pdp).reasons


def test_trifecta_off_is_absent_but_its_id_stays_reserved(make) -> None:
    tether, pdp, _ = make(trifecta="off")
    assert ask(pdp, session=TRIFECTA_SESSION).allowed
    assert "tether-trifecta" not in [r.id for r in tether.guardrails.list()]
    with pytest.raises(InvalidRequest, match="reserved"):
        tether.guardrails.add(ADMIN, '@id("tether-trifecta") forbid (principal, action, resource);')
    with pytest.raises(InvalidRequest, match="trifecta"):
        tether.guardrails.remove(ADMIN, "tether-trifecta")


def test_a_custom_session_rule_names_every_label_and_event(make) -> None:
    tether, pdp, _ = make(trifecta="off")
    tether.guardrails.add(
        ADMIN,
        '@id("no-post-after-destroy") forbid (principal, action, resource) '
        'when { context.session.labels.contains("destructive") && '
        'resource.labels.contains("egress") };',
    )
    session = {"destructive": {"seq": 3, "resource": "fs/delete"}, "plain": {"seq": 5}}
    denied = ask(pdp, session=session)
    assert denied.reasons == (
        f"{HELPER} forbidden by policy no-post-after-destroy: the work made a destructive "
        "change (event 3, fs/delete) and touched plain data (event 5)",
    )


# ---- approval holds ------------------------------------------------------------------


def _approval_grants(tether: Tether) -> None:
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "pay/transfer", approval="owner"))


def test_a_grant_that_needs_approval_holds_the_call(make) -> None:
    tether, pdp, _ = make()
    _approval_grants(tether)
    held = ask(pdp, "pay/transfer")
    assert not held.allowed and held.approval == "owner"
    [grant] = held.grants
    assert held.reasons == (
        f"{HELPER} held for approval by the agent's owner: grant {grant} requires approval",
    )
    approved = ask(pdp, "pay/transfer", approval="apr_9")
    assert approved.allowed and approved.grants == (grant,)
    assert "apr_9" in approved.reasons[0]
    # another grant that needs no approval: allowed outright
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "pay/*"))
    assert ask(pdp, "pay/transfer").allowed


def test_the_strongest_role_is_asked_and_any_other_refusal_is_a_plain_deny(make) -> None:
    tether, pdp, _ = make()
    _approval_grants(tether)
    tether.grants.add(ADMIN, GrantSpec(ALICE, "tools/call", "pay/transfer", approval="admin"))
    held = ask(pdp, "pay/transfer", on_behalf_of=ALICE)
    assert not held.allowed and held.approval == "admin"
    assert len(held.reasons) == 2
    # bob holds no grant: a hold for the agent does not make it a held call
    denied = ask(pdp, "pay/transfer", on_behalf_of="user:bob@example.com")
    assert not denied.allowed and denied.approval is None
    assert (
        ask(pdp, "pay/transfer", on_behalf_of="user:bob@example.com", approval="a").allowed is False
    )


def test_an_approval_guardrail_holds_only_what_grants_allow(make) -> None:
    tether, pdp, _ = make()
    tether.guardrails.add(
        ADMIN,
        '@id("big-posts") @approval("admin") forbid (principal, action, resource) '
        'when { resource.path == "web/post" || resource.path == "mail/send" };',
    )
    held = ask(pdp)
    assert not held.allowed and held.approval == "admin"
    assert held.policies == ("big-posts",)
    assert held.reasons == (
        f"{HELPER} held for approval by an admin: policy big-posts requires approval",
    )
    assert ask(pdp, approval="apr_1").allowed
    # no grant for mail/send: the guardrail's hold is not what stands in the way
    refused = ask(pdp, "mail/send")
    assert not refused.allowed and refused.approval is None
    assert ask(pdp, "mail/send", approval="apr_1").allowed is False
    # with a plain forbid beside it, a plain deny
    tether.guardrails.add(
        ADMIN,
        '@id("no-web") forbid (principal, action, resource) when { resource.path == "web/post" };',
    )
    both = ask(pdp, approval="apr_1")
    assert not both.allowed and both.approval is None


@pytest.mark.parametrize("value", ['"nobody"', '"Owner"', '""'])
def test_an_approval_annotation_must_name_owner_or_admin(make, value: str) -> None:
    tether, _, _ = make()
    with pytest.raises(InvalidRequest, match="@approval"):
        tether.guardrails.add(
            ADMIN, f'@id("x") @approval({value}) forbid (principal, action, resource);'
        )


# ---- the cache -----------------------------------------------------------------------


def test_unread_args_and_session_do_not_key_the_cache(make) -> None:
    _, pdp, _ = make(trifecta="off")
    first = ask(pdp, args={"path": "/a"})
    assert first.allowed and not first.cached
    second = ask(pdp, args={"path": "/b"}, session=TRIFECTA_SESSION)
    assert second.cached
    assert second.args_digest and second.args_digest != first.args_digest
    assert second.session == ""  # no policy read it


def test_args_key_the_cache_when_a_policy_reads_them(make) -> None:
    tether, pdp, _ = make()
    tether.guardrails.add(ADMIN, NO_ETC)
    assert ask(pdp, args={"path": "/srv/a"}).allowed
    assert ask(pdp, args={"path": "/srv/a"}).cached
    etc = ask(pdp, args={"path": "/etc/passwd"})
    assert not etc.allowed and not etc.cached
    assert ask(pdp, args={"path": "/srv/b"}).cached is False
    big = {"path": "/srv/a", "blob": "x" * 5000}
    assert ask(pdp, args=big).allowed
    assert ask(pdp, args=big).cached is False  # large arguments are never cached


def test_the_session_keys_the_cache_by_its_labels_not_its_events(make) -> None:
    _, pdp, _ = make()
    one = {"sensitive": {"seq": 1, "resource": "fs/a"}}
    two = {"sensitive": {"seq": 2, "resource": "fs/b"}}
    assert ask(pdp, session=one).allowed
    again = ask(pdp, session=two)
    assert again.allowed and again.cached
    assert json.loads(again.session) == two  # this request's events, not the cached ones
    denied = ask(pdp, session=TRIFECTA_SESSION)
    assert "(event 12," in denied.reasons[0]
    later = {**TRIFECTA_SESSION, "untrusted": {"seq": 40, "resource": "web/fetch"}}
    assert "(event 40, web/fetch)" in ask(pdp, session=later).reasons[0]


def test_undecidable_args_are_a_deny_only_when_read(make) -> None:
    tether, pdp, _ = make()
    hostile = {"path": {"__entity": {"type": "Agent", "id": "helper"}}}
    assert ask(pdp, args=hostile).allowed  # no policy reads the arguments
    tether.guardrails.add(ADMIN, NO_ETC)
    denied = ask(pdp, args=hostile)
    assert not denied.allowed
    assert denied.reasons == (
        "the call's arguments cannot be decided on: args.path: key '__entity' is a Cedar "
        "JSON escape",
    )


def test_a_listing_shows_what_an_approval_could_let_through(make) -> None:
    tether, pdp, _ = make()
    _approval_grants(tether)
    assert pdp.could_allow(AccessRequest.of("helper", "tools/call", "pay/transfer"))
    assert pdp.could_allow(AccessRequest.of("helper", "tools/call", "web/post"))
    assert not pdp.could_allow(AccessRequest.of("helper", "tools/call", "mail/send"))


def test_a_malformed_session_is_a_deny_not_an_error(make) -> None:
    _, pdp, _ = make()
    request = AccessRequest("helper", "tools/call", "web/post", session="[1]")
    decision = pdp.decide(request)
    assert not decision.allowed and "session" in decision.reasons[0]


def test_a_hold_that_cannot_be_checked_against_the_grants_is_a_plain_deny(make) -> None:
    tether, pdp, _ = make()
    tether.guardrails.add(
        ADMIN, '@id("hold-all") @approval("owner") forbid (principal, action, resource);'
    )
    assert ask(pdp).approval == "owner"
    state = pdp._state[0]  # as if the state had lost its policies without the holds
    state.unheld = None
    state._chains.clear()
    state.decisions.clear()
    decision = ask(pdp, approval="apr_1")
    assert not decision.allowed and decision.approval is None


def test_an_earlier_agents_owner_hold_is_not_the_acting_agents_owners_to_lift(make) -> None:
    """Red team: alice's agent ``helper`` needs her approval to pay. It hands the task to
    mallory's agent ``runner`` (which may pay freely): the call is held for "the agent's
    owner", and the gateway's approval names the *acting* agent (runner), whose owner is
    mallory. So the hold that protects alice must be an admin's to lift, not mallory's."""
    tether, pdp, _ = make()
    _approval_grants(tether)
    tether.registry.register(ADMIN, spec("runner", owner="mallory@example.com"))
    runner = "spiffe://tether.local/agent/runner"
    tether.grants.add(ADMIN, GrantSpec("helper", "delegate", runner))
    tether.grants.add(ADMIN, GrantSpec("runner", "tools/call", "pay/*"))
    held = pdp.decide(AccessRequest.of("runner", "tools/call", "pay/transfer", chain=[HELPER]))
    assert not held.allowed
    assert held.approval == "admin"
    assert "an admin" in held.reasons[0]
    # an agent of the same owner down the chain: its owner may still decide
    tether.registry.register(ADMIN, spec("sibling"))
    sibling = "spiffe://tether.local/agent/sibling"
    tether.grants.add(ADMIN, GrantSpec("helper", "delegate", sibling))
    tether.grants.add(ADMIN, GrantSpec("sibling", "tools/call", "pay/*"))
    same = pdp.decide(AccessRequest.of("sibling", "tools/call", "pay/transfer", chain=[HELPER]))
    assert not same.allowed and same.approval == "owner"
