"""What decides an API call through the egress proxy, end to end over real HTTP against
the API stand-in, on SQLite and PostgreSQL: the whole delegation chain, rules on
``context.http`` (grant conditions and guardrails), data-flow labels (the trifecta),
budgets and approvals. A refused request never reaches the API."""

from __future__ import annotations

import pytest
from conftest import ADMIN
from helpers.api_standin import StandIn
from helpers.egress_org import SECRET, EgressOrg, api, egress, egress_org  # noqa: F401

from tether.grants import GrantSpec
from tether.upstreams.destinations import DestinationSpec


@pytest.fixture
def org(egress: EgressOrg) -> EgressOrg:  # noqa: F811
    return egress


def test_a_delegated_call_needs_the_person_and_every_agent_to_hold_the_grant(
    org: EgressOrg,
) -> None:
    read = ("GET", "github/repos/acme/**")
    org.tether.grants.add(ADMIN, GrantSpec("user:alice@example.com", *read))
    a = org.agent("a", read)
    b = org.agent("b", read)
    org.tether.grants.add(ADMIN, GrantSpec("a", "delegate", "b"))
    hop1 = org.exchanged("a", org.person("alice@example.com"), b, access=False)
    hop2 = org.exchanged("b", hop1, f"{org.issuer}/egress/github", access=True)
    assert org.call(hop2, "GET", "github/repos/acme/x").status_code == 200

    [grant] = [g for g in org.tether.grants.list(ADMIN, principal="a") if g.action == "GET"]
    org.tether.grants.revoke(ADMIN, grant.id)  # A, between the person and B, loses it
    refused = org.call(hop2, "GET", "github/repos/acme/x")
    assert refused.status_code == 403, refused.text
    assert any(a in reason for reason in refused.json()["reasons"]), refused.json()
    assert len(org.api.received) == 1
    [allowed, denied] = org.events("decision")[-2:]
    assert allowed.chain == denied.chain == ("user:alice@example.com", a, b)


def test_a_grant_condition_reads_the_query_and_a_repeated_name_is_not_decided(
    org: EgressOrg,
) -> None:
    org.agent("bot")
    org.tether.grants.add(
        ADMIN,
        GrantSpec(
            "bot",
            "GET",
            "github/repos/acme/**",
            condition='context.http.query.per_page == "10"',
        ),
    )
    token = org.token("bot")
    assert org.call(token, "GET", "github/repos/acme/x?per_page=10").status_code == 200
    assert org.call(token, "GET", "github/repos/acme/x?per_page=100").status_code == 403
    assert org.call(token, "GET", "github/repos/acme/x").status_code == 403  # absent: no
    twice = org.call(token, "GET", "github/repos/acme/x?per_page=10&per_page=100")
    assert twice.status_code == 403, twice.text
    assert "sent more than once" in twice.json()["error_description"]
    assert [r.raw_target for r in org.api.received] == ["/repos/acme/x?per_page=10"]
    refused = org.events("egress.refused")
    assert [e.resource for e in refused] == ["github/repos/acme/x"]


def test_a_guardrail_forbids_a_body_value_whatever_the_body_claims_to_be(
    org: EgressOrg,
) -> None:
    org.agent("bot", ("POST", "github/payments"))
    org.tether.guardrails.add(
        ADMIN,
        '@id("no-big-payments")\nforbid (principal, action, resource) when {\n'
        "  context.http has body && context.http.body has amount &&\n"
        "  context.http.body.amount > 1000\n};\n",
    )
    token = org.token("bot")
    small = org.call(token, "POST", "github/payments", json={"amount": 10})
    assert small.status_code == 200, small.text
    big = org.call(token, "POST", "github/payments", json={"amount": 5000})
    assert big.status_code == 403 and "no-big-payments" in big.text
    plain = {"content-type": "text/plain"}  # a lenient API parses it all the same
    hidden = org.call(token, "POST", "github/payments", content=b'{"amount": 5000}', headers=plain)
    assert hidden.status_code == 403, hidden.text
    for trick in (b'{"amount": 1, "amount": 5000}', b'{"amount": NaN}', b'{"amount": 5000'):
        tricked = org.call(token, "POST", "github/payments", content=trick)
        assert tricked.status_code == 403, (trick, tricked.text)
        assert "cannot be decided on" in tricked.json()["error_description"]
    assert len(org.api.received) == 1


def test_the_trifecta_stops_a_call_out_after_sensitive_untrusted_data(
    org: EgressOrg,
    api: StandIn,  # noqa: F811
) -> None:
    spec = DestinationSpec("crm", base=api.url, internal=True, labels=["sensitive", "untrusted"])
    org.tether.destinations.add(ADMIN, spec)
    org.agent("bot", ("GET", "crm/**"), ("POST", "github/gists"))
    crm = org.call(org.token("bot", "crm"), "GET", "crm/customers")
    assert crm.status_code == 200, crm.text
    out = org.call(org.token("bot", "github"), "POST", "github/gists", json={"x": 1})
    assert out.status_code == 403, out.text  # github is unlabelled: untrusted, egress
    assert "tether-trifecta" in out.text
    assert [r.path for r in org.api.received] == ["/customers"]


def test_a_budget_runs_out_and_the_next_call_is_refused(org: EgressOrg) -> None:
    org.agent("bot")
    org.tether.grants.add(
        ADMIN, GrantSpec("bot", "GET", "github/repos/acme/**", limits=("calls=2/1d",))
    )
    token = org.token("bot")
    assert [org.call(token, "GET", "github/repos/acme/x").status_code for _ in range(3)] == [
        200,
        200,
        403,
    ]
    last = org.call(token, "GET", "github/repos/acme/x").json()
    assert "budget exhausted" in last["error_description"]
    assert len(org.api.received) == 2


def test_a_held_call_waits_for_its_approval_and_goes_once(org: EgressOrg) -> None:
    org.agent("bot")
    org.tether.grants.add(
        ADMIN, GrantSpec("bot", "POST", "github/repos/acme/issues", approval="owner")
    )
    token = org.token("bot")
    body = {"title": "hello"}
    held = org.call(token, "POST", "github/repos/acme/issues", json=body)
    assert held.status_code == 403 and held.json()["error"] == "approval_required", held.text
    approval = held.json()["approval"]
    assert held.headers["tether-approval"] == approval
    assert org.api.received == []
    org.tether.approvals.approve(ADMIN, approval)
    other = org.call(token, "POST", "github/repos/acme/issues", json={"title": "other"})
    assert other.status_code == 403  # another body is another request: not approved
    went = org.call(token, "POST", "github/repos/acme/issues", json=body)
    assert went.status_code == 200, went.text
    again = org.call(token, "POST", "github/repos/acme/issues", json=body)
    assert again.status_code == 403  # used once
    assert [r.body for r in org.api.received] == [b'{"title":"hello"}']
