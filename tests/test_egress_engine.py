"""The egress proxy's engine through its reverse-proxy route (``/egress/NAME/...``), over
real HTTP, against the API stand-in (a real server on its own parser), on SQLite and
PostgreSQL: every request a recorded decision, the credential injected and never shown,
the agent's token never forwarded, every refusal recorded with the agent as actor."""

from __future__ import annotations

import json

import pytest
from conftest import ADMIN
from helpers.api_standin import StandIn
from helpers.egress_org import SECRET, EgressOrg, api, egress, egress_org  # noqa: F401

from tether.grants import GrantSpec
from tether.upstreams.destinations import DestinationSpec


@pytest.fixture
def org(egress: EgressOrg) -> EgressOrg:  # noqa: F811
    egress.agent("bot", ("GET", "github/repos/acme/**"))
    return egress


def _nothing_of(token: str, api: StandIn) -> None:  # noqa: F811
    """The stand-in never received ``token``: in no header, no target, no body."""
    for seen in api.received:
        assert token not in seen.raw_target
        assert all(token not in value for _, value in seen.headers)
        assert token.encode() not in seen.body


def test_an_agent_reads_what_its_grant_covers_and_nothing_else(org: EgressOrg) -> None:
    token = org.token("bot")
    read = org.call(token, "GET", "github/repos/acme/x?page=2")
    assert read.status_code == 200, read.text
    assert read.json() == {
        "ok": True,
        "method": "GET",
        "path": "/repos/acme/x",
        "query": [["page", "2"]],
    }
    [seen] = org.api.received
    assert seen.header("authorization") == f"Bearer {SECRET}"  # injected
    _nothing_of(token, org.api)

    posted = org.call(token, "POST", "github/repos/acme/x", json={"title": "t"})
    outside = org.call(token, "GET", "github/repos/other/x")
    for refused, method, resource in (
        (posted, "POST", "github/repos/acme/x"),
        (outside, "GET", "github/repos/other/x"),
    ):
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["error"] == "access_denied" and body["reasons"], body
        assert refused.headers["tether-refused"] == "access_denied"
        decision = next(e for e in org.events("decision") if e.seq == body["decision"])
        assert (decision.action, decision.resource, decision.decision) == (method, resource, "deny")
        assert decision.actor == org.tether.registry.get(ADMIN, "bot").id
    assert len(org.api.received) == 1  # neither refused request reached the API


def test_the_agent_never_sees_the_credential_even_when_the_api_echoes_it(org: EgressOrg) -> None:
    org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "github/echo-headers"))
    token = org.token("bot")
    echoed = org.call(token, "GET", "github/echo-headers", headers={"x-note": "hello"})
    assert echoed.status_code == 200, echoed.text
    assert SECRET not in echoed.text
    headers = {k.lower(): v for k, v in echoed.json().items()}
    assert headers["authorization"].startswith("Bearer [redacted:injected-credential:")
    assert headers["x-note"] == "hello"
    assert "proxy-authorization" not in headers and token not in echoed.text
    [result] = org.events("egress.result")
    assert result.detail["redacted"]["types"] == {"injected-credential": 1}
    assert SECRET not in json.dumps(result.detail)


def test_the_decision_is_on_record_before_the_api_is_asked(org: EgressOrg) -> None:
    org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "github/slow"))
    token = org.token("bot")
    with org.in_flight(token, "github/slow?ms=800") as seen:
        decisions = org.events("decision")  # already there, while the request is upstream
    assert seen["answer"].status_code == 200
    assert [(d.action, d.resource, d.decision) for d in decisions] == [
        ("GET", "github/slow", "allow")
    ]
    [result] = org.events("egress.result")
    assert result.detail["decision"] == decisions[0].seq < result.seq
    assert result.detail["status"] == 200 and result.detail["outcome"] == "ok"
    assert result.detail["size"] == len(b'{"slow": true}') and result.detail["sent"] == 0
    assert result.detail["latency_ms"] > 0 and result.action == "GET"


def test_without_a_valid_token_nothing_goes_and_the_refusal_is_recorded(org: EgressOrg) -> None:
    mcp = org.tether.tokens.client_credentials(
        org.tether.registry.get(ADMIN, "bot"), org.issuer, None, None
    ).access_token  # a real token, for another audience
    for token in (None, "not-a-token", mcp):
        answer = org.call(token, "GET", "github/repos/acme/x")
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"] == "invalid_token"
    assert org.api.received == []
    refused = org.events("egress.refused")
    # the token for another audience verified: its agent is named (test_egress_redteam.py)
    bot = org.tether.registry.get(ADMIN, "bot").id
    assert [e.actor for e in refused] == ["anonymous", "anonymous", bot]
    assert all(e.resource == "github/*" for e in refused)


def test_unknown_destination_bad_method_and_bad_target_are_refused_with_the_agent_named(
    org: EgressOrg,
) -> None:
    token = org.token("bot", None)  # for the whole proxy
    bot = org.tether.registry.get(ADMIN, "bot").id
    missing = org.call(token, "GET", "nowhere/x")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_destination"
    traced = org.call(token, "TRACE", "github/repos/acme/x")
    assert traced.status_code == 405 and "GET" in traced.headers["allow"]
    climbed = org.call(token, "GET", "github/repos/acme/%2e%2e/other/x")  # decided as read
    assert climbed.status_code == 403 and "github/repos/other/x" in climbed.text
    for bad in ("github/repos/acme%2Fx", "github/repos/acme/a;b", "github/repos/acme/%c0%ae"):
        refused = org.call(token, "GET", bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"] == "invalid_target"
    carried = org.call(token, "GET", f"github/repos/acme/x?t={token}")
    assert carried.status_code == 400 and "Tether token" in carried.json()["error_description"]
    assert org.api.received == []
    refused = org.events("egress.refused")
    assert len(refused) == 6 and all(e.actor == bot for e in refused)


def test_a_token_for_one_destination_is_refused_at_another(
    org: EgressOrg,
    api: StandIn,  # noqa: F811
) -> None:
    org.tether.destinations.add(ADMIN, DestinationSpec("crm", base=api.url, internal=True))
    org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "crm/**"))
    answer = org.call(org.token("bot", "github"), "GET", "crm/x")
    assert answer.status_code == 401
    assert "not crm" in answer.json()["error_description"]
    assert org.call(org.token("bot", "crm"), "GET", "crm/x").status_code == 200


def test_other_secrets_in_a_textual_answer_are_taken_out_too(org: EgressOrg) -> None:
    org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "github/echo-headers"))
    leaked = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # a GitHub token's shape
    echoed = org.call(org.token("bot"), "GET", "github/echo-headers", headers={"x-note": leaked})
    assert echoed.status_code == 200, echoed.text
    assert leaked not in echoed.text and "[redacted:" in echoed.json()["x-note"]
    [result] = org.events("egress.result")
    types = result.detail["redacted"]["types"]
    assert types.get("injected-credential") == 1 and len(types) == 2, types
    assert leaked not in json.dumps(result.detail)
