"""Regressions for issue 13, items 3, 6, 15 and 18 (decisions, groups, audiences, jti),
through the token endpoint, the AuthZEN face and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from conftest import Cli, Clock, initialised, with_dev_idp
from cryptography.hazmat.primitives import serialization
from helpers.people import delegation_token
from test_exchange import (
    ACCESS,
    ADMIN,
    GITHUB,
    IDP,
    ISSUER,
    JWT_TYPE,
    Org,
    decode,
    make_org,
    spiffe,
)

from tether import AccessRequest, AgentSpec, GrantSpec, Tether, generate_key_pair
from tether.errors import InvalidClient
from tether.tokens import ASSERTION_TYPE
from tether.upstreams.servers import UpstreamSpec


@pytest.fixture
def org(make_settings: Any, home: Any) -> Org:
    """Alice (trusted IdP), agent a (github/*, may delegate to b) and agent b."""
    return make_org(make_settings, home)


def person(org: Org, email: str, **extra: Any) -> str:
    """A person's delegation token from the test IdP, with extra claims."""
    return delegation_token(org.idp_key, email, issuer=IDP, tether=ISSUER, **extra)


def delegate_decisions(org: Org) -> list[Any]:
    return [e for e in org.tether.events.list(type="decision") if e.action == "delegate"]


# ---- item 3: every hop is a decision, with guardrails, conditions and may_act --------


def test_item_03_a_guardrail_forbidding_the_delegation_refuses_the_hop(org: Org) -> None:
    org.tether.guardrails.add(
        ADMIN,
        '@id("no-hand-off-to-b")\n'
        'forbid (principal, action == Action::"delegate", resource)\n'
        f'when {{ resource.path == "{spiffe("b")}" }};\n',
    )
    first = org.exchange("a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b"))
    assert first.status_code == 200, first.text  # alice hands her task to a: allowed
    refused = org.exchange("b", first.json()["access_token"], ACCESS, resource=GITHUB)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert "no-hand-off-to-b" in refused.json()["error_description"]
    allowed, denied = delegate_decisions(org)  # both hops are decisions on record
    assert allowed.decision == "allow" and allowed.resource == spiffe("a")
    assert tuple(allowed.chain) == ("user:alice@example.com",)
    assert denied.decision == "deny" and denied.resource == spiffe("b")
    assert tuple(denied.chain) == ("user:alice@example.com", spiffe("a"))
    assert "no-hand-off-to-b" in denied.reason
    # tether authorize asks the same question and gets the same answer
    same = org.tether.pdp.decide(
        AccessRequest.of(
            spiffe("a"), "delegate", spiffe("b"), on_behalf_of="user:alice@example.com"
        )
    )
    assert not same.allowed and same.policies == ("no-hand-off-to-b",)


def test_item_03_a_false_when_condition_refuses_the_hop(org: Org) -> None:
    org.agent("c", ("tools/call", "github/*"))
    org.tether.grants.add(
        ADMIN,
        GrantSpec("a", "delegate", "c", condition='context.on_behalf_of == "bob@example.com"'),
    )
    first = org.exchange("a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("c"))
    assert first.status_code == 200, first.text
    refused = org.exchange("c", first.json()["access_token"], ACCESS, resource=GITHUB)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert "holds no grant for delegate" in refused.json()["error_description"]
    assert delegate_decisions(org)[-1].decision == "deny"
    # the grant's pattern alone still matches: the unconditioned hop to b goes through
    hop1 = org.exchange("a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b"))
    hop2 = org.exchange("b", hop1.json()["access_token"], ACCESS, resource=GITHUB)
    assert hop2.status_code == 200, hop2.text
    assert delegate_decisions(org)[-1].decision == "allow"


def test_item_03_may_act_names_the_only_agent_that_may_exchange(org: Org) -> None:
    for_b = person(org, "alice@example.com", may_act={"sub": spiffe("b")})
    refused = org.exchange("a", for_b, JWT_TYPE, audience=spiffe("b"))
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert "may_act" in refused.json()["error_description"]
    [denied] = delegate_decisions(org)
    assert denied.decision == "deny" and "may_act" in denied.reason
    for_a = person(org, "alice@example.com", may_act={"client_id": spiffe("a"), "iss": ISSUER})
    assert org.exchange("a", for_a, JWT_TYPE, audience=spiffe("b")).status_code == 200
    other_issuer = person(org, "alice@example.com", may_act={"sub": spiffe("a"), "iss": IDP})
    assert org.exchange("a", other_issuer, JWT_TYPE, audience=spiffe("b")).status_code == 400
    malformed = person(org, "alice@example.com", may_act=spiffe("a"))
    assert org.exchange("a", malformed, JWT_TYPE, audience=spiffe("b")).status_code == 400


# ---- item 6: the person's groups reach Cedar, through delegated tokens ---------------


def _evaluate(org: Org, token: str) -> dict[str, Any]:
    body = {
        "subject": {"type": "agent", "id": spiffe("b")},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": "github/create_issue"},
        "context": {"token": token, "audience": GITHUB},
    }
    answer = org.client.post("/access/v1/evaluation", json=body, headers=org.admin)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _chain_for(org: Org, groups: list[str]) -> str:
    subject = person(org, "alice@example.com", groups=groups)
    hop1 = org.exchange("a", subject, JWT_TYPE, audience=spiffe("b"))
    assert hop1.status_code == 200, hop1.text
    assert decode(hop1.json()["access_token"]).get("groups", []) == sorted(set(groups))
    hop2 = org.exchange("b", hop1.json()["access_token"], ACCESS, resource=GITHUB)
    assert hop2.status_code == 200, hop2.text
    return str(hop2.json()["access_token"])


def test_item_06_idp_groups_reach_guardrails_and_key_the_cache(org: Org) -> None:
    org.tether.guardrails.add(
        ADMIN,
        '@id("no-contractors")\n'
        'forbid (principal, action == Action::"tools/call", resource)\n'
        'when { principal has groups && principal.groups.contains("contractors") };\n'
        '@id("no-interns-hand-off")\n'
        'forbid (principal, action == Action::"delegate", resource)\n'
        'when { principal has groups && principal.groups.contains("interns") };\n',
    )
    staff = _chain_for(org, ["staff"])
    contractor = _chain_for(org, ["contractors", "staff"])
    assert decode(contractor)["groups"] == ["contractors", "staff"]  # carried to the end
    # the same person and chain, asked in turn: no answer is served for the other groups
    for _ in range(2):
        assert _evaluate(org, staff)["decision"] is True
        denied = _evaluate(org, contractor)
        assert denied["decision"] is False
        assert "no-contractors" in " ".join(denied["context"]["tether"]["reasons"])
    # the person's own hop sees the groups too
    intern = person(org, "alice@example.com", groups=["interns"])
    refused = org.exchange("a", intern, JWT_TYPE, audience=spiffe("b"))
    assert refused.status_code == 400
    assert "no-interns-hand-off" in refused.json()["error_description"]
    # a groups claim Tether cannot read is refused, never read as "no groups"
    odd = person(org, "alice@example.com", groups="contractors")
    assert org.exchange("a", odd, JWT_TYPE, audience=spiffe("b")).status_code == 400


def test_item_06_groups_are_part_of_the_decision_cache_key(org: Org) -> None:
    org.tether.guardrails.add(
        ADMIN,
        '@id("no-contractors")\nforbid (principal, action, resource)\n'
        'when { principal has groups && principal.groups.contains("contractors") };\n',
    )
    ask = {"on_behalf_of": "user:alice@example.com", "chain": [spiffe("a")]}
    plain = AccessRequest.of(spiffe("b"), "tools/call", "github/create_issue", **ask)
    member = AccessRequest.of(
        spiffe("b"), "tools/call", "github/create_issue", groups=["contractors"], **ask
    )
    assert org.tether.pdp.decide(plain).allowed
    assert org.tether.pdp.decide(plain).cached
    assert not org.tether.pdp.decide(member).allowed
    assert not org.tether.pdp.decide(member).allowed
    assert org.tether.pdp.decide(plain).allowed


# ---- item 15: tokens only for audiences Tether knows --------------------------------


def test_item_15_unknown_audiences_are_invalid_target(org: Org) -> None:
    for unknown in ("https://evil.example/api", f"{ISSUER}/mcp/nope", spiffe("ghost"), "x"):
        answer = org.own_token("a", unknown)
        assert answer.status_code == 400, unknown
        assert answer.json()["error"] == "invalid_target", unknown
        handed = org.exchange("a", org.person("alice@example.com"), JWT_TYPE, audience=unknown)
        assert handed.json()["error"] == "invalid_target", unknown
    assert org.own_token("a", ISSUER).status_code == 200  # Tether itself
    assert org.own_token("a", GITHUB).status_code == 200  # a configured resource server
    assert org.own_token("a", spiffe("b")).status_code == 200  # a hand-off to an active agent
    org.tether.upstreams.add(ADMIN, UpstreamSpec("files", url="http://127.0.0.1:9/mcp"))
    org.tether.grants.add(ADMIN, GrantSpec("a", "tools/call", "files/*"))
    assert org.own_token("a", f"{ISSUER}/mcp/files").status_code == 200  # a gateway server
    org.tether.registry.suspend(ADMIN, "b")
    assert org.own_token("a", spiffe("b")).json()["error"] == "invalid_target"


def test_item_15_the_cli_refuses_an_unknown_audience(cli_env, capsys) -> None:
    cli = initialised(Cli(capsys))
    assert cli("agent", "register", "worker", "--owner", "alice@example.com")[0] == 0
    assert cli("grant", "add", "worker", "--action", "tools/call", "--resource", "jira/*")[0] == 0
    code, out, err = cli("token", "issue", "worker", "--audience", "https://evil.example/api")
    assert code == 3, (out, err)
    assert "unknown audience" in err and "Traceback" not in err
    code, out, err = cli("token", "issue", "worker", "--audience", f"{ISSUER}/mcp/jira")
    assert code == 3 and "no gateway server" in err


# ---- item 18: a used assertion jti is kept until its exact exp plus the leeway -------


def test_item_18_a_jti_is_kept_until_its_exact_exp_plus_leeway(
    tether: Tether, clock: Clock
) -> None:
    pair = generate_key_pair()
    key = serialization.load_pem_private_key(pair.private_pem, None)
    agent = tether.registry.register(
        ADMIN, AgentSpec(name="bot", owner="alice@example.com", public_key=pair.public_key)
    )
    exp = clock.now.timestamp() + 60.75  # a fractional exp: no rounding may shorten it
    claims = {"iss": agent.id, "sub": agent.id, "aud": tether.tokens.token_endpoint}
    assertion = jwt.encode(
        {**claims, "exp": exp, "jti": "once"},
        key,  # type: ignore[arg-type]
        algorithm="EdDSA",
    )
    assert tether.tokens.authenticate_client(ASSERTION_TYPE, assertion).id == agent.id
    leeway = tether.settings.token_leeway.total_seconds()
    for before_the_end in (1.0, 0.25):  # exp + leeway - 1s, and closer still
        clock.now = datetime.fromtimestamp(exp + leeway - before_the_end, UTC)
        tether.tokens.purge()
        with pytest.raises(InvalidClient, match="replayed"):
            tether.tokens.authenticate_client(ASSERTION_TYPE, assertion)
    clock.now = datetime.fromtimestamp(exp + leeway + 1, UTC)
    assert tether.tokens.purge() == 1  # now it can no longer be replayed: forgotten
    with pytest.raises(InvalidClient, match="expired"):
        tether.tokens.authenticate_client(ASSERTION_TYPE, assertion)


def test_item_06_groups_from_the_cli_dev_idp_reach_the_hop(cli_env, capsys, tmp_path) -> None:
    cli = with_dev_idp(cli_env, capsys)
    for name in ("planner", "worker"):
        assert cli("agent", "register", name, "--owner", "alice@example.com")[0] == 0
    for args in (
        ("user:alice@example.com", "--action", "tools/call", "--resource", "jira/*"),
        ("planner", "--action", "tools/call", "--resource", "jira/*"),
        ("planner", "--action", "delegate", "--resource", "worker"),
    ):
        assert cli("grant", "add", *args)[0] == 0
    rail = tmp_path / "interns.cedar"
    rail.write_text(
        '@id("no-interns-hand-off")\n'
        'forbid (principal, action == Action::"delegate", resource)\n'
        'when { principal has groups && principal.groups.contains("interns") };\n'
    )
    assert cli("policy", "add", str(rail))[0] == 0
    worker = spiffe("worker")
    for groups, expected in ((["staff"], 0), (["interns", "staff"], 3)):
        code, token, _ = cli("dev", "user-token", "alice@example.com", *_flags("--group", groups))
        assert code == 0
        token = token.strip()
        assert decode(token)["groups"] == groups
        argv = ("--subject-token", token, "--actor", "planner", "--audience", worker)
        code, out, err = cli("token", "exchange", *argv)
        assert code == expected, (out, err)
    assert "no-interns-hand-off" in err


def _flags(flag: str, values: list[str]) -> list[str]:
    return [part for value in values for part in (flag, value)]


def test_item_06_a_persons_groups_reach_a_direct_decision(cli_env, capsys, tmp_path) -> None:
    cli = initialised(Cli(capsys))
    assert cli("agent", "register", "helper", "--owner", "alice@example.com")[0] == 0
    for principal in ("helper", "user:alice@example.com"):
        grant = ("--action", "tools/call", "--resource", "github/*")
        assert cli("grant", "add", principal, *grant)[0] == 0
    rail = tmp_path / "contractors.cedar"
    rail.write_text(
        '@id("no-contractors")\nforbid (principal, action, resource)\n'
        'when { principal has groups && principal.groups.contains("contractors") };\n'
    )
    assert cli("policy", "add", str(rail))[0] == 0
    ask = ("--action", "tools/call", "--resource", "github/create_issue")
    alice = "user:alice@example.com"
    for who in (("--principal", alice), ("--principal", "helper", "--on-behalf-of", alice)):
        assert cli("authorize", *who, *ask, "--group", "staff")[0] == 0
        code, out, _ = cli("authorize", *who, *ask, "--group", "contractors")
        assert code == 3 and "no-contractors" in out
        assert cli("authorize", *who, *ask, "--group", "staff")[0] == 0  # no cache leak
    code, _, err = cli("authorize", "--principal", "helper", *ask, "--group", "staff")
    assert code == 2 and "person" in err  # groups belong to a person
