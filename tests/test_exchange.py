"""Delegation by RFC 8693 token exchange, driven by an independent client (PyJWT-built
assertions and a person's IdP token), on both stores."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from helpers.people import delegation_token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm

from tether import AccessRequest, AgentSpec, Caller, GrantSpec, Tether, generate_key_pair
from tether.api import create_app
from tether.errors import InvalidToken
from tether.jose import b64url_encode

ADMIN = Caller.admin()
ISSUER = "http://127.0.0.1:8700"
IDP = "https://idp.example.com"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
GITHUB = f"{ISSUER}/mcp/github"


def spiffe(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


@dataclass
class Org:
    tether: Tether
    client: TestClient
    idp_key: Ed25519PrivateKey
    admin: dict[str, str]
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def agent(self, name: str, *grants: tuple[str, str]) -> None:
        pair = generate_key_pair()
        self.keys[name] = serialization.load_pem_private_key(pair.private_pem, None)  # type: ignore[assignment]
        self.tether.registry.register(
            ADMIN, AgentSpec(name=name, owner="alice@example.com", public_key=pair.public_key)
        )
        for action, resource in grants:
            self.tether.grants.add(ADMIN, GrantSpec(name, action, resource))

    def assertion(self, name: str) -> str:
        now = int(time.time())
        claims = {
            "iss": spiffe(name),
            "sub": spiffe(name),
            "aud": f"{ISSUER}/oauth2/token",
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.keys[name], algorithm="EdDSA")

    def person(self, email: str, ttl: int = 600) -> str:
        return delegation_token(self.idp_key, email, issuer=IDP, tether=ISSUER, ttl=ttl)

    def exchange(self, actor: str, subject: str, kind: str, **form: str) -> Any:
        data = {
            "grant_type": EXCHANGE,
            "client_assertion_type": ASSERTION,
            "client_assertion": self.assertion(actor),
            "subject_token": subject,
            "subject_token_type": kind,
            **form,
        }
        return self.client.post("/oauth2/token", data=data)

    def own_token(self, name: str, resource: str) -> Any:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION,
            "client_assertion": self.assertion(name),
            "resource": resource,
        }
        return self.client.post("/oauth2/token", data=data)

    def active(self, token: str) -> bool:
        answer = self.client.post("/oauth2/introspect", data={"token": token}, headers=self.admin)
        return bool(answer.json()["active"])


@pytest.fixture
def org(make_settings, home) -> Org:
    return make_org(make_settings, home)


def make_org(make_settings: Any, home: Any) -> Org:
    """Alice (trusted IdP), agent a (github/*, may delegate to b) and agent b."""
    idp_key = Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(idp_key.public_key()))
    jwk["kid"] = "idp-1"
    (home / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    settings = make_settings(
        idp=[{"issuer": IDP, "audience": "tether", "jwks_file": str(home / "jwks.json")}],
        resource_servers=[GITHUB],  # a known audience (tokens are only for known ones)
    )
    first, result = Tether.init(settings)
    first.close()
    tether = Tether.open(settings)
    org = Org(
        tether,
        TestClient(create_app(tether)),
        idp_key,
        {"Authorization": f"Bearer {result.admin_token}"},
    )
    tether.grants.add(ADMIN, GrantSpec("user:alice@example.com", "tools/call", "github/*"))
    org.agent("a", ("tools/call", "github/*"), ("delegate", "b"))
    org.agent("b", ("tools/call", "github/create_issue"), ("tools/call", "github/list_issues"))
    return org


def decode(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def two_hops(org: Org) -> tuple[str, str]:
    first = org.exchange("a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b"))
    assert first.status_code == 200, first.text
    hop1 = first.json()["access_token"]
    second = org.exchange("b", hop1, ACCESS, resource=GITHUB)
    assert second.status_code == 200, second.text
    assert second.json()["issued_token_type"] == ACCESS
    return hop1, second.json()["access_token"]


def test_two_hop_chain_user_a_b(org: Org) -> None:
    hop1, hop2 = two_hops(org)
    first, final = decode(hop1), decode(hop2)
    assert first["sub"] == "alice@example.com"
    assert first["aud"] == spiffe("b")
    assert final["sub"] == "alice@example.com"
    assert final["act"] == {"sub": spiffe("b"), "act": {"sub": spiffe("a")}}
    assert final["client_id"] == spiffe("b")
    assert final["aud"] == GITHUB
    assert final["exp"] <= first["exp"]
    # No wider than any link: alice github/*, a github/*, b only two tools.
    assert set(final["scope"].split()) <= {
        "tools/call:github/create_issue",
        "tools/call:github/list_issues",
    }
    assert org.tether.tokens.verify(hop2, GITHUB).chain == (
        "user:alice@example.com",
        spiffe("a"),
        spiffe("b"),
    )
    header = jwt.get_unverified_header(hop2)
    assert header["typ"] == "at+jwt" and header["alg"] == "EdDSA"


def test_the_pdp_applies_the_token_chain_and_scope(org: Org) -> None:
    _, hop2 = two_hops(org)
    body = {
        "subject": {"type": "agent", "id": spiffe("b")},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": "github/create_issue"},
        "context": {"token": hop2, "audience": GITHUB},
    }
    allowed = org.client.post("/access/v1/evaluation", json=body, headers=org.admin).json()
    assert allowed["decision"] is True
    assert allowed["context"]["tether"]["chain"] == [
        "user:alice@example.com",
        spiffe("a"),
        spiffe("b"),
    ]
    body["resource"]["id"] = "github/delete_repo"
    assert (
        org.client.post("/access/v1/evaluation", json=body, headers=org.admin).json()["decision"]
        is False
    )
    body["resource"]["id"] = "github/create_issue"
    body["context"]["token"] = hop2[:-4] + "AAAA"
    before = len(org.tether.events.list(type="decision"))
    forged = org.client.post("/access/v1/evaluation", json=body, headers=org.admin).json()
    assert forged["decision"] is False
    [recorded] = org.tether.events.list(type="decision")[before:]  # a forged token is on record
    assert recorded.decision == "deny"
    assert "does not verify" in recorded.reason
    batch = {**body, "evaluations": [{}, {"context": {"token": hop2, "audience": GITHUB}}]}
    answers = org.client.post("/access/v1/evaluations", json=batch, headers=org.admin).json()
    assert [a["decision"] for a in answers["evaluations"]] == [False, True]
    assert len(org.tether.events.list(type="decision")) == before + 3


def test_bob_cannot_be_carried_further_than_bob(org: Org) -> None:
    answer = org.exchange("a", org.person("bob@example.com"), JWT_TYPE, audience=spiffe("b"))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


def test_a_scope_beyond_a_link_is_refused(org: Org) -> None:
    hop1 = org.exchange(
        "a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b")
    ).json()["access_token"]
    wider = org.exchange("b", hop1, ACCESS, resource=GITHUB, scope="tools/call:github/delete_repo")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


def test_a_hop_without_a_delegate_grant_is_refused(org: Org) -> None:
    org.agent("c", ("tools/call", "github/*"))
    hop1 = org.exchange(
        "a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("c")
    ).json()["access_token"]
    answer = org.exchange("c", hop1, ACCESS, resource=GITHUB)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert "delegate" in answer.json()["error_description"]


def test_a_subject_token_for_another_client_is_refused(org: Org) -> None:
    hop1 = org.exchange(
        "a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b")
    ).json()["access_token"]
    org.agent("c", ("tools/call", "github/*"))
    org.tether.grants.add(ADMIN, GrantSpec("a", "delegate", "c"))
    answer = org.exchange("c", hop1, ACCESS, resource=GITHUB)
    assert answer.status_code == 400
    assert "audience" in answer.json()["error_description"]


def test_depth_over_the_cap_is_refused(org: Org) -> None:
    # a -> b -> c -> d holds four agents (the cap); handing on to e would make five.
    for name, following in (("c", "d"), ("d", "e"), ("e", None)):
        org.agent(
            name, ("tools/call", "github/*"), *([("delegate", following)] if following else [])
        )
    org.tether.grants.add(ADMIN, GrantSpec("b", "delegate", "c"))
    org.tether.grants.add(ADMIN, GrantSpec("b", "tools/call", "github/*"))
    token = org.exchange(
        "a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b")
    ).json()["access_token"]
    for current, following in (("b", "c"), ("c", "d")):
        answer = org.exchange(current, token, ACCESS, audience=spiffe(following))
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
    assert decode(token)["act"]["act"]["act"]["sub"] == spiffe("a")
    over = org.exchange("d", token, ACCESS, audience=spiffe("e"))
    assert over.status_code == 200  # d is the fourth agent: still within the cap
    too_deep = org.exchange("e", over.json()["access_token"], ACCESS, resource=GITHUB)
    assert too_deep.status_code == 400
    assert too_deep.json()["error"] == "invalid_grant"
    assert "over the cap" in too_deep.json()["error_description"]


def test_a_cycle_is_refused(org: Org) -> None:
    org.tether.grants.add(ADMIN, GrantSpec("b", "delegate", "a"))
    hop1 = org.exchange(
        "a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b")
    ).json()["access_token"]
    back = org.exchange("b", hop1, ACCESS, audience=spiffe("a"))
    assert back.status_code == 200
    again = org.exchange("a", back.json()["access_token"], ACCESS, resource=GITHUB)
    assert again.status_code == 400
    assert "cycle" in again.json()["error_description"]


def test_revoked_or_expired_subject_tokens_are_refused(org: Org) -> None:
    hop1, hop2 = two_hops(org)
    assert org.active(hop2)
    revoked = org.client.post("/oauth2/revoke", data={"token": hop1}, headers=org.admin)
    assert revoked.json()["revoked"] == 2  # the exchanged token goes with it
    assert not org.active(hop1)
    assert not org.active(hop2)
    answer = org.exchange("b", hop1, ACCESS, resource=GITHUB)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    expired = org.exchange(
        "a", org.person("alice@example.com", ttl=-120), JWT_TYPE, audience=spiffe("b")
    )
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


def test_tokens_of_a_suspended_agent_stop_working(org: Org) -> None:
    hop1, hop2 = two_hops(org)
    own = org.own_token("b", GITHUB).json()["access_token"]
    org.tether.registry.suspend(ADMIN, "a")
    assert not org.active(hop2)  # a is in its chain
    assert org.active(own)  # b's own token does not pass through a
    answer = org.exchange("b", hop1, ACCESS, resource=GITHUB)
    assert answer.status_code == 400
    org.tether.registry.resume(ADMIN, "a")
    assert org.active(hop2)


def test_exchanged_lifetime_never_outlives_the_subject(org: Org) -> None:
    short = org.person("alice@example.com", ttl=40)
    answer = org.exchange("a", short, JWT_TYPE, audience=spiffe("b"))
    assert answer.status_code == 200
    claims = decode(answer.json()["access_token"])
    assert claims["exp"] <= decode(short)["exp"]
    assert answer.json()["expires_in"] <= 40


SCOPES = ["tools/call:github/create_issue", "tools/call:github/list_issues", "tools/call:github/*"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True), st.integers(30, 900))
def test_every_exchange_stays_within_its_parent(org: Org, wanted: list[str], ttl: int) -> None:
    first = org.exchange(
        "a",
        org.person("alice@example.com", ttl=ttl),
        JWT_TYPE,
        audience=spiffe("b"),
        scope=" ".join(wanted),
    )
    if first.status_code != 200:
        assert first.json()["error"] == "invalid_scope"
        return
    parent = decode(first.json()["access_token"])
    second = org.exchange(
        "b", first.json()["access_token"], ACCESS, resource=GITHUB, scope=" ".join(wanted)
    )
    if second.status_code != 200:
        assert second.json()["error"] == "invalid_scope"
        assert "tools/call:github/*" in wanted  # only the wildcard is beyond b's grants
        return
    child = decode(second.json()["access_token"])
    assert set(child["scope"].split()) <= set(parent["scope"].split())
    assert child["exp"] <= parent["exp"]
    assert child["aud"] == GITHUB and parent["aud"] == spiffe("b")
    assert child["exp"] - child["iat"] <= timedelta(minutes=15).total_seconds()


# ---- regressions from the security review -------------------------------------------


def test_a_login_is_not_delegable_and_a_delegation_token_is_no_login(org: Org) -> None:
    now = int(time.time())
    login = jwt.encode(
        {
            "iss": "https://idp.example.com",
            "aud": "tether",
            "sub": "alice@example.com",
            "email": "alice@example.com",
            "iat": now,
            "exp": now + 600,
            "jti": str(uuid.uuid4()),
        },
        org.idp_key,
        algorithm="EdDSA",
        headers={"kid": "idp-1"},
    )
    assert (
        org.client.get("/v1/agents", headers={"Authorization": f"Bearer {login}"}).status_code
        == 200
    )
    refused = org.exchange("a", login, JWT_TYPE, audience=spiffe("b"))
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    delegation = org.person("alice@example.com")
    as_login = org.client.get("/v1/agents", headers={"Authorization": f"Bearer {delegation}"})
    assert as_login.status_code == 401


def test_a_persons_token_is_exchanged_once(org: Org) -> None:
    person = org.person("alice@example.com")
    assert org.exchange("a", person, JWT_TYPE, audience=spiffe("b")).status_code == 200
    again = org.exchange("a", person, JWT_TYPE, audience=spiffe("b"))
    assert again.status_code == 400
    assert "already exchanged" in again.json()["error_description"]


def test_authzen_needs_the_asking_resource_with_a_token(org: Org) -> None:
    first = org.exchange("a", org.person("alice@example.com"), JWT_TYPE, audience=spiffe("b"))
    handed = first.json()["access_token"]  # aud = agent b
    body = {
        "subject": {"type": "agent", "id": spiffe("a")},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": "github/delete_repo"},
        "context": {"token": handed},
    }
    assert org.client.post("/access/v1/evaluation", json=body, headers=org.admin).status_code == 400
    body["context"]["audience"] = spiffe("b")
    assert org.client.post("/access/v1/evaluation", json=body, headers=org.admin).status_code == 400
    body["context"]["audience"] = GITHUB
    answer = org.client.post("/access/v1/evaluation", json=body, headers=org.admin).json()
    assert answer["decision"] is False  # the token is for agent b, not for github


def test_tokens_never_outlive_their_agents(org: Org) -> None:
    org.agent("brief", ("tools/call", "github/*"))
    short = org.tether.registry.get(ADMIN, "brief")
    answer = org.own_token("brief", GITHUB)
    assert answer.status_code == 200
    claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    assert claims["exp"] <= short.expires_at.timestamp()


def test_tokens_of_a_short_lived_agent_end_with_it(org: Org) -> None:
    from tether import AgentSpec, generate_key_pair

    pair = generate_key_pair()
    from cryptography.hazmat.primitives import serialization

    org.keys["mayfly"] = serialization.load_pem_private_key(pair.private_pem, None)  # type: ignore[assignment]
    org.tether.registry.register(
        ADMIN,
        AgentSpec(
            name="mayfly",
            owner="alice@example.com",
            public_key=pair.public_key,
            expires_in=timedelta(seconds=60),
        ),
    )
    org.tether.grants.add(ADMIN, GrantSpec("mayfly", "tools/call", "github/*"))
    answer = org.own_token("mayfly", GITHUB)
    assert answer.status_code == 200
    assert answer.json()["expires_in"] <= 60


def test_a_non_finite_assertion_exp_is_invalid_client(org: Org) -> None:
    header = b64url_encode(b'{"alg":"EdDSA","typ":"JWT"}')
    me = spiffe("a")
    payload = b64url_encode(
        f'{{"iss":"{me}","sub":"{me}","aud":"{ISSUER}/oauth2/token","exp":1e400,"jti":"x"}}'.encode()
    )
    signature = org.keys["a"].sign(f"{header}.{payload}".encode())
    assertion = f"{header}.{payload}.{b64url_encode(signature)}"
    answer = org.client.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "resource": GITHUB,
        },
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_a_retired_key_stops_verifying_in_a_running_process(make_settings) -> None:
    from conftest import Clock

    from tether import AgentSpec, Tether, generate_key_pair

    clock = Clock()
    settings = make_settings(resource_servers=[GITHUB])
    Tether.init(settings)[0].close()
    tether = Tether.open(settings, clock=clock)
    tether.keys.monotonic = clock.monotonic  # its once-a-second re-read runs on the clock
    tether.registry.register(
        ADMIN,
        AgentSpec(name="bot", owner="alice@example.com", public_key=generate_key_pair().public_key),
    )
    tether.grants.add(ADMIN, GrantSpec("bot", "tools/call", "github/*"))
    agent = tether.registry.get(ADMIN, "bot")
    old_kid, old_key = tether.keys.current()
    tether.tokens.verify(tether.tokens.client_credentials(agent, GITHUB, None).access_token, GITHUB)
    tether.keys.rotate(ADMIN)
    clock.advance(hours=6)  # long past any token the old key signed, and past the
    # once-a-second re-read of the key set
    now = int(clock.now.timestamp())
    forged = jwt.encode(
        {
            "iss": ISSUER,
            "sub": agent.id,
            "client_id": agent.id,
            "aud": GITHUB,
            "iat": now,
            "nbf": now,
            "exp": now + 60,
            "jti": "forged",
            "scope": "tools/call:github/*",
        },
        old_key,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": old_kid},
    )
    with pytest.raises(InvalidToken, match="unknown key"):
        tether.tokens.verify(forged, GITHUB)
    tether.close()


def test_a_time_condition_written_as_a_subscript_is_never_cached(tether, clock) -> None:
    from conftest import spec

    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(
        ADMIN, GrantSpec("helper", "tools/call", "github/x", condition='context["hour"] < 18')
    )
    clock.now = clock.now.replace(hour=17, minute=59)
    request = AccessRequest.of("helper", "tools/call", "github/x")
    assert tether.pdp.decide(request).allowed
    clock.now = clock.now.replace(hour=23)
    late = tether.pdp.decide(request)
    assert not late.allowed
    assert not late.cached


def test_used_ids_are_forgotten_only_once_they_cannot_replay(org: Org) -> None:
    import sqlalchemy as sa

    from tether.store import assertion_jtis

    assertion = org.assertion("a")  # exp = now + 60
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": assertion,
        "resource": GITHUB,
    }
    assert org.client.post("/oauth2/token", data=form).status_code == 200
    assert org.tether.tokens.purge() == 0  # still replayable: kept
    assert org.client.post("/oauth2/token", data=form).json()["error"] == "invalid_client"
    with org.tether.store.write() as conn:  # as if its exp and the leeway had passed
        conn.execute(
            sa.update(assertion_jtis).values(expires_at=org.tether.clock() - timedelta(minutes=5))
        )
    assert org.tether.tokens.purge() >= 1
    with org.tether.store.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(assertion_jtis)).scalar_one() == 0
        )
