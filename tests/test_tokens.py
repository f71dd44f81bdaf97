"""Agent access tokens end to end, on both stores, with an independent client.

Everything an agent does goes through ``TestClient(create_app(tether))``; client
assertions are built here with PyJWT and the agent's own private key (never with Tether
code), and issued tokens are checked here with PyJWT against the published JWKS.

Covered: the token endpoint (RFC 7523 ``private_key_jwt``, RFC 8707 ``resource``, scope
narrowing), its OAuth refusals, RFC 8414 metadata, ``Tokens.verify`` and RFC 7662
introspection against forged tokens, RFC 7009 revocation, suspension through the state
epoch, signing-key rotation, and that no private key ever leaves in a body or an event.

Clock: Tether checks ``exp``/``nbf``/``iat`` against its own (injected) clock; the ``env``
fixture starts that hand-moved clock at the wall-clock time because the tests' client
assertions carry real times.

authlib is not installed in this environment, so the independent client is PyJWT + httpx
(TestClient) only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from conftest import Clock
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm

from tether import Caller, Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.api import create_app
from tether.errors import InvalidToken
from tether.grants import GrantSpec
from tether.model import Agent
from tether.registry import AgentSpec

ISSUER = "http://127.0.0.1:8700"
TOKEN_ENDPOINT = f"{ISSUER}/oauth2/token"
GITHUB = f"{ISSUER}/mcp/github"
JIRA = f"{ISSUER}/mcp/jira"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
IDP_ISSUER = "https://idp.example.com"
IDP_KID = "idp-1"
ALICE = "alice@example.com"
BOB = "bob@example.com"
ADMIN = Caller.admin()
ERROR_KEYS = {"error", "error_description"}
ACCESS_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"}
ALL_ACCESS_CLAIMS = ACCESS_CLAIMS | {"tether_family"}  # private: its token family's root
DROP = object()  # a claim value meaning "leave this claim out"
# 1500 nested arrays: a small header or payload, but beyond the JSON parser's recursion limit
NESTED = base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).rstrip(b"=").decode()
NESTED_HEADER = f"{NESTED}.e30.AA"
NESTED_PAYLOAD = f"eyJhbGciOiJub25lIn0.{NESTED}.AA"

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ---- helpers independent of Tether ---------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(
    header: dict[str, Any],
    payload: dict[str, Any] | bytes,
    signer: Callable[[bytes], bytes] | None = None,
) -> str:
    """A compact JWS built by hand, so that any header or signature can be forged.

    Serialises as PyJWT does (header keys sorted, no spaces), so re-signing a genuine
    token's header and claims with the genuine key reproduces it exactly."""
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    if not isinstance(payload, bytes):
        payload = json.dumps(payload, separators=(",", ":")).encode()
    signing_input = f"{b64(head)}.{b64(payload)}"
    signature = signer(signing_input.encode()) if signer is not None else b""
    return f"{signing_input}.{b64(signature)}"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw_public(key))}


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    return body


@dataclass(frozen=True)
class AgentKey:
    """A registered agent and the private key only it (and this test) holds."""

    name: str
    id: str
    key: Ed25519PrivateKey
    pem: bytes = field(repr=False)


@dataclass
class Env:
    tether: Tether
    settings: Settings
    client: TestClient
    admin: dict[str, str]
    clock: Clock
    home: Path
    idp_key: Ed25519PrivateKey
    bodies: list[str] = field(default_factory=list)
    agents: list[AgentKey] = field(default_factory=list)

    # -- HTTP, every body kept for the leak check ---------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response: httpx.Response = self.client.request(method, path, **kw)
        self.bodies.append(response.text)
        return response

    def post_form(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.request("POST", path, data=form, headers=headers)

    # -- agents -----------------------------------------------------------------------

    def agent(
        self,
        name: str,
        owner: str = ALICE,
        grants: tuple[str, ...] = ("tools/call:github/*",),
    ) -> AgentKey:
        pair = generate_key_pair()
        registered = self.tether.registry.register(
            ADMIN, AgentSpec(name=name, owner=owner, public_key=pair.public_key)
        )
        for entry in grants:
            action, _, resource = entry.partition(":")
            self.tether.grants.add(
                ADMIN, GrantSpec(principal=registered.id, action=action, resource=resource)
            )
        key = serialization.load_pem_private_key(pair.private_pem, None)
        assert isinstance(key, Ed25519PrivateKey)
        agent = AgentKey(name, registered.id, key, pair.private_pem)
        self.agents.append(agent)
        return agent

    def registered(self, agent: AgentKey) -> Agent:
        return self.tether.registry.get(ADMIN, agent.id)

    # -- the independent client -------------------------------------------------------

    def assertion(
        self,
        agent: AgentKey,
        *,
        key: Ed25519PrivateKey | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """An RFC 7523 client assertion, signed with PyJWT."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": agent.id,
            "sub": agent.id,
            "aud": TOKEN_ENDPOINT,
            "exp": now + 60,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        for name in ("exp", "iat", "nbf"):  # "now-120", "now+3600": relative to this moment
            if isinstance(claims.get(name), str) and claims[name].startswith("now"):
                claims[name] = now + int(claims[name][3:])
        claims = {k: v for k, v in claims.items() if v is not DROP}
        return jwt.encode(claims, key or agent.key, algorithm="EdDSA", headers=headers)

    def client_auth(self, agent: AgentKey, **overrides: Any) -> dict[str, str]:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(agent, **overrides),
        }

    def token_form(
        self,
        agent: AgentKey,
        resource: str | None = GITHUB,
        scope: str | None = None,
        **extra: str,
    ) -> dict[str, str]:
        form = {"grant_type": "client_credentials", **self.client_auth(agent)}
        if resource is not None:
            form["resource"] = resource
        if scope is not None:
            form["scope"] = scope
        form.update(extra)
        return form

    def post_token(self, form: dict[str, str]) -> httpx.Response:
        return self.post_form("/oauth2/token", form)

    def issue(self, agent: AgentKey, resource: str = GITHUB, scope: str | None = None) -> str:
        response = self.post_token(self.token_form(agent, resource, scope))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def introspect(self, token: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.post_form("/oauth2/introspect", {"token": token}, headers or self.admin)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body: dict[str, Any] = response.json()
        return body

    def jwks(self) -> dict[str, Any]:
        response = self.request("GET", "/.well-known/jwks.json")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def decode(self, token: str, audience: str) -> dict[str, Any]:
        """Verify ``token`` as a resource server would: PyJWT and the published JWKS."""
        kid = jwt.get_unverified_header(token)["kid"]
        [jwk] = [k for k in self.jwks()["keys"] if k["kid"] == kid]
        claims: dict[str, Any] = jwt.decode(
            token,
            jwt.PyJWK(jwk),
            algorithms=["EdDSA"],
            audience=audience,
            issuer=ISSUER,
            options={"require": sorted(ACCESS_CLAIMS - {"scope"})},
        )
        return claims

    def issued_count(self) -> int:
        return len(self.tether.events.list(type="token.issued"))

    # -- other parties ----------------------------------------------------------------

    def signing_key(self, kid: str) -> Ed25519PrivateKey:
        """Tether's own private signing key, read from TETHER_HOME (to forge precisely)."""
        key = serialization.load_pem_private_key(
            (self.home / "signing" / f"{kid}.pem").read_bytes(), None
        )
        assert isinstance(key, Ed25519PrivateKey)
        return key

    def person_token(self, email: str = ALICE) -> str:
        """A token from the trusted IdP, as the admin API accepts it for a person."""
        now = int(time.time())
        claims = {"iss": IDP_ISSUER, "aud": "tether", "sub": email, "email": email}
        claims |= {"iat": now, "exp": now + 300}
        return jwt.encode(claims, self.idp_key, algorithm="EdDSA", headers={"kid": IDP_KID})


@pytest.fixture
def env(
    tmp_path: Path, home: Path, make_settings: Callable[..., Settings], clock: Clock
) -> Iterator[Env]:
    idp_key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    jwk["kid"] = IDP_KID
    jwks = tmp_path / "idp-jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    settings_ = make_settings(
        idp=[{"issuer": IDP_ISSUER, "audience": "tether", "jwks_file": str(jwks)}],
        resource_servers=[GITHUB, JIRA],  # known audiences (tokens are only for known ones)
    )
    assert settings_.issuer == ISSUER
    first, result = Tether.init(settings_)
    first.close()
    assert result.admin_token
    clock.now = datetime.now(UTC)  # assertions built by the tests carry real times
    with Tether.open(settings_, clock=clock) as tether:
        client = TestClient(create_app(tether), raise_server_exceptions=False)
        yield Env(
            tether,
            settings_,
            client,
            {"Authorization": f"Bearer {result.admin_token}"},
            clock,
            home,
            idp_key,
        )
        client.close()


# ---- issuing ------------------------------------------------------------------------------


def test_client_credentials_issues_an_rfc9068_token(env: Env) -> None:
    bot = env.agent("gh-bot", grants=("tools/call:github/*",))
    before = env.issued_count()
    response = env.post_token(env.token_form(bot, GITHUB))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "tools/call:github/*"
    token = body["access_token"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"] in {k["kid"] for k in env.jwks()["keys"]}

    claims = env.decode(token, GITHUB)
    assert set(claims) == ALL_ACCESS_CLAIMS
    assert claims["tether_family"] == claims["jti"]  # a client_credentials token is a root
    assert claims["iss"] == ISSUER
    assert claims["sub"] == claims["client_id"] == bot.id
    assert claims["aud"] == GITHUB
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 60
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert claims["scope"] == body["scope"]
    assert env.issued_count() == before + 1

    # the same token through Tether's verifier and introspection
    verified = env.tether.tokens.verify(token, GITHUB)
    assert verified.claims == claims
    assert verified.chain == (bot.id,)
    assert verified.scope == ("tools/call:github/*",)
    assert env.introspect(token) == {"active": True, "token_type": "Bearer", **claims}


def test_omitted_scope_is_the_grants_that_fit_the_audience(env: Env) -> None:
    bot = env.agent(
        "multi-bot",
        grants=(
            "tools/call:github/create_issue",
            "resources/read:github/*",
            "tools/call:jira/*",
            "tools/call:githubber/x",  # first segment differs: not a github grant
        ),
    )
    github = env.decode(env.issue(bot, GITHUB), GITHUB)
    assert github["scope"] == "resources/read:github/* tools/call:github/create_issue"
    jira = env.decode(env.issue(bot, JIRA), JIRA)
    assert jira["scope"] == "tools/call:jira/*"


def test_requested_scope_inside_the_grants_is_granted_as_asked(env: Env) -> None:
    bot = env.agent("jira-bot", grants=("tools/call:jira/*", "resources/read:jira/**"))
    response = env.post_token(env.token_form(bot, JIRA, "tools/call:jira/x"))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "tools/call:jira/x"
    assert env.decode(response.json()["access_token"], JIRA)["scope"] == "tools/call:jira/x"

    wide = "resources/read:jira/a/b tools/call:jira/y tools/call:jira/x"
    response = env.post_token(env.token_form(bot, JIRA, wide))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == " ".join(sorted(wide.split()))


def test_metadata(env: Env) -> None:
    response = env.request("GET", "/.well-known/oauth-authorization-server")
    assert response.status_code == 200, response.text
    meta = response.json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == TOKEN_ENDPOINT
    assert meta["introspection_endpoint"] == f"{ISSUER}/oauth2/introspect"
    assert meta["revocation_endpoint"] == f"{ISSUER}/oauth2/revoke"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert "client_credentials" in meta["grant_types_supported"]
    assert meta["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert meta["token_endpoint_auth_signing_alg_values_supported"] == ["EdDSA"]
    keys = env.jwks()["keys"]
    assert keys
    for key in keys:
        assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == (
            "OKP",
            "Ed25519",
            "EdDSA",
            "sig",
        )


# ---- refusals: the right OAuth error, nothing issued ----------------------------------


def _json_body(env: Env, bot: AgentKey) -> httpx.Response:
    return env.request("POST", "/oauth2/token", json=env.token_form(bot))


def _duplicate(env: Env, bot: AgentKey) -> httpx.Response:
    pairs = [*env.token_form(bot).items(), ("resource", JIRA)]
    return env.request(
        "POST",
        "/oauth2/token",
        content=urlencode(pairs).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def _form(**change: Any) -> Callable[[Env, AgentKey], httpx.Response]:
    """A token request whose form or assertion differs from a good one by ``change``."""

    def run(env: Env, bot: AgentKey) -> httpx.Response:
        assertion_overrides = {k[2:]: v for k, v in change.items() if k.startswith("a_")}
        form = env.token_form(bot)
        form["client_assertion"] = env.assertion(bot, **assertion_overrides)
        for key, value in change.items():
            if key.startswith("a_"):
                continue
            if value is DROP:
                form.pop(key, None)
            else:
                form[key] = value
        return env.post_token(form)

    return run


def _suspended(env: Env, bot: AgentKey) -> httpx.Response:
    env.tether.registry.suspend(ADMIN, bot.id, "test")
    return env.post_token(env.token_form(bot))


def _unowned(env: Env, bot: AgentKey) -> httpx.Response:
    [agent] = env.tether.registry.offboard_owner(ADMIN, BOB, "left")
    assert agent.owner is None
    return env.post_token(env.token_form(bot))


def _other_key(env: Env, bot: AgentKey) -> httpx.Response:
    form = env.token_form(bot)
    form["client_assertion"] = env.assertion(bot, key=Ed25519PrivateKey.generate())
    return env.post_token(form)


def _other_agents_key(env: Env, bot: AgentKey) -> httpx.Response:
    other = env.agent("other-bot")
    form = env.token_form(bot)
    form["client_assertion"] = env.assertion(bot, key=other.key)
    return env.post_token(form)


def _unknown_agent(env: Env, bot: AgentKey) -> httpx.Response:
    ghost = AgentKey("ghost", "spiffe://tether.local/agent/ghost", bot.key, b"")
    return env.post_token(env.token_form(ghost))


def _hs256_assertion(env: Env, bot: AgentKey) -> httpx.Response:
    """Key confusion: HMAC keyed with the agent's registered public key."""
    registered = unb64(env.registered(bot).public_key)
    now = int(time.time())
    claims = {"iss": bot.id, "sub": bot.id, "aud": TOKEN_ENDPOINT, "exp": now + 60}
    claims |= {"jti": str(uuid.uuid4())}
    forged = compact(
        {"alg": "HS256", "typ": "JWT"},
        claims,
        lambda m: hmac.new(registered, m, hashlib.sha256).digest(),
    )
    form = env.token_form(bot)
    form["client_assertion"] = forged
    return env.post_token(form)


def _none_assertion(env: Env, bot: AgentKey) -> httpx.Response:
    now = int(time.time())
    claims = {"iss": bot.id, "sub": bot.id, "aud": TOKEN_ENDPOINT, "exp": now + 60}
    claims |= {"jti": str(uuid.uuid4())}
    form = env.token_form(bot)
    form["client_assertion"] = compact({"alg": "none"}, claims)
    return env.post_token(form)


REFUSALS: dict[str, tuple[int, str, Callable[[Env, AgentKey], httpx.Response]]] = {
    "scope beyond grants": (400, "invalid_scope", _form(scope="tools/call:github/**")),
    "scope with another action": (400, "invalid_scope", _form(scope="resources/read:github/x")),
    "scope on another server": (400, "invalid_scope", _form(scope="tools/call:slack/x")),
    "agent suspended": (400, "unauthorized_client", _suspended),
    "agent unowned": (400, "unauthorized_client", _unowned),
    "signed by another key": (401, "invalid_client", _other_key),
    "signed by another agent's key": (401, "invalid_client", _other_agents_key),
    "wrong aud": (401, "invalid_client", _form(a_aud="https://elsewhere.example/token")),
    "aud missing": (401, "invalid_client", _form(a_aud=DROP)),
    "expired assertion": (401, "invalid_client", _form(a_exp="now-120")),
    "exp one hour ahead": (401, "invalid_client", _form(a_exp="now+3600")),
    "exp missing": (401, "invalid_client", _form(a_exp=DROP)),
    "jti missing": (401, "invalid_client", _form(a_jti=DROP)),
    "iss != sub": (401, "invalid_client", _form(a_sub="spiffe://tether.local/agent/other-bot")),
    "unknown agent": (401, "invalid_client", _unknown_agent),
    "HS256 keyed with the agent's public key": (401, "invalid_client", _hs256_assertion),
    "alg none": (401, "invalid_client", _none_assertion),
    "no client_assertion_type": (401, "invalid_client", _form(client_assertion_type=DROP)),
    "no client_assertion": (401, "invalid_client", _form(client_assertion=DROP)),
    "missing resource": (400, "invalid_target", _form(resource=DROP)),
    "resource with a space": (400, "invalid_target", _form(resource=f"{GITHUB} {JIRA}")),
    "unsupported grant_type": (400, "unsupported_grant_type", _form(grant_type="password")),
    "JSON body": (400, "invalid_request", _json_body),
    "duplicate parameter": (400, "invalid_request", _duplicate),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_token_request_is_refused(env: Env, case: str) -> None:
    status, error, run = REFUSALS[case]
    bot = env.agent("gh-bot", owner=BOB)
    before = env.issued_count()
    response = run(env, bot)
    assert_error(response, status, error)
    assert "access_token" not in response.text
    assert env.issued_count() == before
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_replayed_assertion_is_refused(env: Env) -> None:
    bot = env.agent("gh-bot")
    form = env.token_form(bot)
    assert env.post_token(form).status_code == 200
    before = env.issued_count()
    for _ in range(2):
        assert_error(env.post_token(form), 401, "invalid_client")
    # the same jti with a fresh signature and exp is a replay too
    again = env.token_form(bot)
    jti = jwt.decode(form["client_assertion"], options={"verify_signature": False})["jti"]
    again["client_assertion"] = env.assertion(bot, jti=jti, exp=int(time.time()) + 90)
    assert_error(env.post_token(again), 401, "invalid_client")
    assert env.issued_count() == before
    # a fresh jti works
    assert env.post_token(env.token_form(bot)).status_code == 200


def test_the_assertion_may_name_the_issuer_as_audience(env: Env) -> None:
    bot = env.agent("gh-bot")
    form = env.token_form(bot)
    form["client_assertion"] = env.assertion(bot, aud=ISSUER)
    assert env.post_token(form).status_code == 200


# ---- verification and introspection against forged tokens ------------------------------


@dataclass
class Forge:
    env: Env
    good: str
    other: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def header(self) -> dict[str, Any]:
        return dict(jwt.get_unverified_header(self.good))

    @property
    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(self.good, options={"verify_signature": False})
        return claims

    @property
    def tether_key(self) -> Ed25519PrivateKey:
        return self.env.signing_key(self.header["kid"])

    @property
    def tether_jwk(self) -> dict[str, Any]:
        [jwk] = [k for k in self.env.jwks()["keys"] if k["kid"] == self.header["kid"]]
        return jwk

    def resign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """Signed with Tether's genuine key: only the changed field can be refused."""
        return compact(header, claims, self.tether_key.sign)


def _hmac_with(secret: Callable[[Forge], bytes]) -> Callable[[Forge], str]:
    def forge(f: Forge) -> str:
        return compact(
            {**f.header, "alg": "HS256"},
            f.claims,
            lambda m: hmac.new(secret(f), m, hashlib.sha256).digest(),
        )

    return forge


def _changed_payload(f: Forge) -> str:
    head, _, signature = f.good.split(".")
    claims = {**f.claims, "scope": "tools/call:github/** tools/call:jira/**"}
    return f"{head}.{b64(json.dumps(claims, separators=(',', ':')).encode())}.{signature}"


def _idp_person_token(f: Forge) -> str:
    token = f.env.person_token()
    # the IdP is trusted for people: the admin API accepts this very token
    response = f.env.request("GET", "/v1/agents", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return token


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg none": lambda f: compact({**f.header, "alg": "none"}, f.claims),
    "alg none, keeping the signature": lambda f: (
        compact({**f.header, "alg": "none"}, f.claims) + f.good.rsplit(".", 1)[1]
    ),
    "HS256 keyed with Tether's public key bytes": _hmac_with(lambda f: unb64(f.tether_jwk["x"])),
    "HS256 keyed with the JWK x string": _hmac_with(lambda f: f.tether_jwk["x"].encode()),
    "HS256 keyed with the JWK JSON": _hmac_with(
        lambda f: json.dumps(f.tether_jwk, separators=(",", ":")).encode()
    ),
    "changed payload, old signature": _changed_payload,
    "unknown kid": lambda f: compact(
        {**f.header, "kid": "not-a-tether-key"}, f.claims, f.other.sign
    ),
    "another key under Tether's kid": lambda f: compact(f.header, f.claims, f.other.sign),
    "jku header, another key": lambda f: compact(
        {**f.header, "kid": "attacker", "jku": "https://attacker.example/jwks.json"},
        f.claims,
        f.other.sign,
    ),
    "jku header under Tether's kid": lambda f: compact(
        {**f.header, "jku": "https://attacker.example/jwks.json"}, f.claims, f.other.sign
    ),
    "jwk header, another key": lambda f: compact(
        {**f.header, "kid": "attacker", "jwk": public_jwk(f.other)}, f.claims, f.other.sign
    ),
    "jwk header under Tether's kid": lambda f: compact(
        {**f.header, "jwk": public_jwk(f.other)}, f.claims, f.other.sign
    ),
    "x5u header": lambda f: compact(
        {**f.header, "x5u": "https://attacker.example/cert.pem"}, f.claims, f.other.sign
    ),
    "crit header (genuine key)": lambda f: f.resign({**f.header, "crit": ["exp"]}, f.claims),
    "signed by the trusted IdP key": lambda f: compact(
        {**f.header, "kid": IDP_KID}, f.claims, f.env.idp_key.sign
    ),
    "signed by the trusted IdP key under Tether's kid": lambda f: compact(
        f.header, f.claims, f.env.idp_key.sign
    ),
    "a person's IdP token": _idp_person_token,
    "typ JWT (genuine key)": lambda f: f.resign({**f.header, "typ": "JWT"}, f.claims),
    "no typ (genuine key)": lambda f: f.resign(
        {k: v for k, v in f.header.items() if k != "typ"}, f.claims
    ),
    "two audiences (genuine key)": lambda f: f.resign(
        f.header, {**f.claims, "aud": [GITHUB, JIRA]}
    ),
    "audience as a list of one (genuine key)": lambda f: f.resign(
        f.header, {**f.claims, "aud": [GITHUB]}
    ),
    "another issuer (genuine key)": lambda f: f.resign(f.header, {**f.claims, "iss": IDP_ISSUER}),
    "no client_id (genuine key)": lambda f: f.resign(
        f.header, {k: v for k, v in f.claims.items() if k != "client_id"}
    ),
    "expired an hour ago (genuine key)": lambda f: f.resign(
        f.header, {**f.claims, "exp": int(time.time()) - 3600}
    ),
    "not valid for an hour (genuine key)": lambda f: f.resign(
        f.header, {**f.claims, "nbf": int(time.time()) + 3600}
    ),
    "a ghost in the act chain (genuine key)": lambda f: f.resign(
        f.header, {**f.claims, "act": {"sub": "spiffe://tether.local/agent/ghost"}}
    ),
}


def test_the_forger_reproduces_a_genuine_token(env: Env) -> None:
    """Control: re-signing unchanged header and claims with Tether's key gives the very
    token Tether issued, so each forgery below differs from a good token only as named."""
    good = env.issue(env.agent("gh-bot"))
    forge = Forge(env, good)
    assert forge.resign(forge.header, forge.claims) == good


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_a_forged_token_is_refused(env: Env, case: str) -> None:
    bot = env.agent("gh-bot")
    good = env.issue(bot)
    forged = FORGERIES[case](Forge(env, good))
    assert forged != good
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(forged, GITHUB)
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(forged, None)
    assert env.introspect(forged) == {"active": False}
    # the genuine token is untouched by the attempt
    assert env.tether.tokens.verify(good, GITHUB).claims["sub"] == bot.id
    assert env.introspect(good)["active"] is True


def test_a_token_for_another_audience_is_refused(env: Env) -> None:
    bot = env.agent("gh-bot", grants=("tools/call:github/*", "tools/call:jira/*"))
    token = env.issue(bot, GITHUB)
    assert env.tether.tokens.verify(token, GITHUB).claims["aud"] == GITHUB
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, JIRA)
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, ISSUER)
    with pytest.raises(jwt.InvalidAudienceError):
        env.decode(token, JIRA)  # and a resource server using the JWKS agrees


def test_expiry_within_and_beyond_the_leeway(env: Env) -> None:
    """Issued under a clock set back, checked now: 10 s past exp is inside the 30 s leeway,
    40 s past is not (and neither is an hour)."""
    agent = env.registered(env.agent("gh-bot"))
    now = env.clock.now
    tokens = {}
    for late in (10, 40, 3600):
        env.clock.now = now - timedelta(seconds=300 + late)
        tokens[late] = env.tether.tokens.client_credentials(agent, GITHUB, None).access_token
    env.clock.now = now
    assert env.tether.tokens.verify(tokens[10], GITHUB).claims["aud"] == GITHUB
    for late in (40, 3600):
        with pytest.raises(InvalidToken):
            env.tether.tokens.verify(tokens[late], GITHUB)
        assert env.introspect(tokens[late]) == {"active": False}


def test_a_token_expired_on_tethers_clock_is_refused(env: Env) -> None:
    token = env.issue(env.agent("gh-bot"))
    assert env.introspect(token)["active"] is True
    env.clock.advance(seconds=300 + 30 + 1)
    assert env.introspect(token) == {"active": False}
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, GITHUB)


def test_a_fresh_token_verifies_on_the_clock_it_was_issued_on(tether: Tether) -> None:
    agent = tether.registry.register(
        ADMIN, AgentSpec(name="gh-bot", owner=ALICE, public_key=generate_key_pair().public_key)
    )
    tether.grants.add(
        ADMIN, GrantSpec(principal=agent.id, action="tools/call", resource="github/*")
    )
    from tether.upstreams.servers import UpstreamSpec

    tether.upstreams.add(ADMIN, UpstreamSpec("github", url="http://127.0.0.1:9/mcp"))
    token = tether.tokens.client_credentials(agent, GITHUB, None).access_token
    assert tether.tokens.verify(token, GITHUB).claims["sub"] == agent.id


@FUZZ
@given(garbage=st.text())
def test_garbage_is_invalid_token_only(env: Env, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(garbage, None)
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(garbage, GITHUB)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@FUZZ
@given(
    extra=st.dictionaries(st.text(max_size=6), _JSON, max_size=3),
    payload=st.binary(max_size=80) | _JSON.map(lambda v: json.dumps(v).encode()),
    signature=st.binary(max_size=80),
)
def test_structured_garbage_past_the_header_rules_is_invalid_token_only(
    env: Env, extra: dict[str, Any], payload: bytes, signature: bytes
) -> None:
    """Headers Tether's header rules accept (EdDSA, a real kid, at+jwt) over any payload
    and signature: only InvalidToken, from verify and from introspection."""
    kid = env.jwks()["keys"][0]["kid"]
    header = {**extra, "alg": "EdDSA", "kid": kid, "typ": "at+jwt"}
    token = compact(header, payload, lambda _: signature)
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, None)
    response = env.post_form("/oauth2/introspect", {"token": token}, env.admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"active": False}


def test_introspection_needs_authentication(env: Env) -> None:
    token = env.issue(env.agent("gh-bot"))
    assert_error(env.post_form("/oauth2/introspect", {"token": token}), 401, "invalid_client")
    bad = {"Authorization": "Bearer tta_not-the-admin-token"}
    assert_error(env.post_form("/oauth2/introspect", {"token": token}, bad), 401, "invalid_token")
    assert_error(env.post_form("/oauth2/introspect", {}, env.admin), 400, "invalid_request")


# ---- revocation ---------------------------------------------------------------------------


def test_the_admin_revokes_a_token(env: Env) -> None:
    bot = env.agent("gh-bot")
    token, other = env.issue(bot), env.issue(bot)
    assert env.tether.tokens.verify(token, GITHUB)  # cached as good
    response = env.post_form("/oauth2/revoke", {"token": token}, env.admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 1}
    assert env.introspect(token) == {"active": False}
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, GITHUB)
    assert env.introspect(other)["active"] is True  # only that token
    [event] = env.tether.events.list(type="token.revoked")
    assert event.actor == "admin"
    assert event.subject == bot.id


def test_an_agent_revokes_its_own_token(env: Env) -> None:
    bot = env.agent("gh-bot")
    token = env.issue(bot)
    response = env.post_form("/oauth2/revoke", {"token": token, **env.client_auth(bot)})
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 1}
    assert env.introspect(token) == {"active": False}
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, None)


def test_another_agent_may_not_revoke_a_token(env: Env) -> None:
    bot, other = env.agent("gh-bot"), env.agent("other-bot")
    token = env.issue(bot)
    response = env.post_form("/oauth2/revoke", {"token": token, **env.client_auth(other)})
    assert_error(response, 401, "invalid_client")
    person = {"Authorization": f"Bearer {env.person_token(ALICE)}"}  # the owner, not admin
    assert_error(env.post_form("/oauth2/revoke", {"token": token}, person), 403, "access_denied")
    assert_error(env.post_form("/oauth2/revoke", {"token": token}), 401, "invalid_client")
    assert env.introspect(token)["active"] is True
    assert env.tether.events.list(type="token.revoked") == []


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.",
        "x" * 5000,
        NESTED_HEADER,
        NESTED_PAYLOAD,
    ],
)
def test_revoking_garbage_is_200(env: Env, garbage: str) -> None:
    bot = env.agent("gh-bot")
    for auth in ({"headers": env.admin}, {"form": env.client_auth(bot)}):
        form = {"token": garbage, **auth.get("form", {})}
        response = env.post_form("/oauth2/revoke", form, auth.get("headers"))
        assert response.status_code == 200, response.text
        assert response.json() == {"revoked": 0}


# ---- the state epoch: suspension --------------------------------------------------------


def test_suspension_deactivates_a_token_and_resume_restores_it(env: Env) -> None:
    bot = env.agent("gh-bot")
    token = env.issue(bot)
    assert env.tether.tokens.verify(token, GITHUB)  # now cached
    epoch = env.tether.epoch.current()
    env.tether.registry.suspend(ADMIN, bot.id, "incident")
    assert env.tether.epoch.current() > epoch
    assert env.introspect(token) == {"active": False}
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(token, GITHUB)
    env.tether.registry.resume(ADMIN, bot.id, "resolved")
    assert env.introspect(token)["active"] is True
    assert env.tether.tokens.verify(token, GITHUB).claims["sub"] == bot.id


def test_an_owner_offboarded_deactivates_the_agents_token(env: Env) -> None:
    bot = env.agent("gh-bot", owner=BOB)
    token = env.issue(bot)
    assert env.introspect(token)["active"] is True
    env.tether.registry.offboard_owner(ADMIN, BOB, "left")
    assert env.introspect(token) == {"active": False}
    env.tether.registry.set_owner(ADMIN, bot.id, ALICE, "new owner")
    assert env.introspect(token)["active"] is True


# ---- signing-key rotation ---------------------------------------------------------------


def test_key_rotation(env: Env) -> None:
    bot = env.agent("gh-bot")
    old = env.issue(bot)
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = env.tether.keys.rotate(ADMIN)
    assert new_kid != old_kid

    assert env.tether.tokens.verify(old, GITHUB).claims["sub"] == bot.id
    assert env.introspect(old)["active"] is True
    assert env.decode(old, GITHUB)["sub"] == bot.id

    new = env.issue(bot)
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert env.tether.tokens.verify(new, GITHUB).claims["sub"] == bot.id
    assert env.decode(new, GITHUB)["sub"] == bot.id

    assert {k["kid"] for k in env.jwks()["keys"]} == {old_kid, new_kid}
    signing = env.home / "signing"
    files = sorted(signing.glob("*.pem"))
    assert {f.stem for f in files} == {old_kid, new_kid}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(signing.stat().st_mode) == 0o700
    [event] = env.tether.events.list(type="keys.rotated", subject=f"kid:{new_kid}")
    assert event.actor == "admin"


def test_rotation_over_http_needs_the_admin(env: Env) -> None:
    assert_error(env.request("POST", "/v1/keys/rotate"), 401, "invalid_token")
    person = {"Authorization": f"Bearer {env.person_token(ALICE)}"}
    assert_error(env.request("POST", "/v1/keys/rotate", headers=person), 403, "access_denied")
    response = env.request("POST", "/v1/keys/rotate", headers=env.admin)
    assert response.status_code == 200, response.text
    assert response.json()["kid"] in {k["kid"] for k in response.json()["jwks"]["keys"]}


def test_another_process_signs_with_the_rotated_key(env: Env) -> None:
    agent = env.registered(env.agent("gh-bot"))
    with Tether.open(env.settings, clock=env.clock) as other:
        other.keys.monotonic = env.clock.monotonic  # its 1 s refresh runs on the clock
        first = other.tokens.client_credentials(agent, GITHUB, None).access_token
        old_kid = jwt.get_unverified_header(first)["kid"]
        new_kid = env.tether.keys.rotate(ADMIN)
        assert new_kid != old_kid
        env.clock.advance(seconds=1.1)  # beyond the key set's 1 s refresh
        later = other.tokens.client_credentials(agent, GITHUB, None).access_token
        assert jwt.get_unverified_header(later)["kid"] == new_kid


# ---- no secret leaves ---------------------------------------------------------------------


def _secret_forms(pem: bytes) -> list[str]:
    """Every way a private key could show up: the PEM, its base64 body, the raw seed."""
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, Ed25519PrivateKey)
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
    return [pem.decode(), body, b64(seed), base64.b64encode(seed).decode(), seed.hex()]


def test_no_private_key_in_any_response_or_event(env: Env) -> None:
    bot = env.agent("gh-bot")
    token = env.issue(bot)
    env.introspect(token)
    env.request("GET", "/.well-known/oauth-authorization-server")
    env.jwks()
    env.request("POST", "/v1/keys/rotate", headers=env.admin)
    token = env.issue(bot)
    env.post_form("/oauth2/revoke", {"token": token, **env.client_auth(bot)})
    env.post_token(env.token_form(bot, scope="tools/call:jira/x"))  # an error
    env.post_token(env.token_form(bot, resource=None))  # another
    env.request("GET", f"/v1/agents/{bot.name}", headers=env.admin)
    env.request("GET", "/v1/agents", headers=env.admin)

    secrets_ = [
        form
        for pem in [
            *(p.read_bytes() for p in (env.home / "signing").glob("*.pem")),
            *(a.pem for a in env.agents),
        ]
        for form in _secret_forms(pem)
    ]
    assert len(secrets_) >= 3 * 5
    assert len(env.bodies) >= 11
    events = [json.dumps(e.to_dict(), default=str) for e in env.tether.events.list()]
    assert any(e for e in events if "token.issued" in e)
    for text in env.bodies + events:
        for secret in secrets_:
            assert secret not in text


# ---- robustness bugs, pinned --------------------------------------------------------------


@pytest.mark.parametrize("where", ["verify", "introspect", "token endpoint"])
def test_a_deeply_nested_header_is_refused_cleanly(env: Env, where: str) -> None:
    nested = NESTED_HEADER
    if where == "verify":
        with pytest.raises(InvalidToken):
            env.tether.tokens.verify(nested, None)
    elif where == "introspect":
        assert env.introspect(nested) == {"active": False}
    else:
        form = env.token_form(env.agent("gh-bot"))
        form["client_assertion"] = nested
        assert_error(env.post_token(form), 401, "invalid_client")


def test_a_lone_surrogate_in_a_token_is_invalid_token(env: Env) -> None:
    good = env.issue(env.agent("gh-bot"))
    with pytest.raises(InvalidToken):
        env.tether.tokens.verify(good + "\udc80", None)


@pytest.mark.parametrize("exp", [10**12, 10**20])
def test_an_assertion_exp_far_in_the_future_is_invalid_client(env: Env, exp: int) -> None:
    bot = env.agent("gh-bot")
    form = env.token_form(bot)
    form["client_assertion"] = env.assertion(bot, exp=exp)
    assert_error(env.post_token(form), 401, "invalid_client")


def test_a_malformed_scope_is_invalid_scope(env: Env) -> None:
    bot = env.agent("gh-bot")
    assert_error(env.post_token(env.token_form(bot, scope="garbage")), 400, "invalid_scope")
