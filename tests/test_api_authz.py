"""The admin API's authentication and object-level authorisation, on both stores.

Everything goes through ``TestClient(create_app(tether))``: the admin holds the token
``Tether.init`` made, people come with EdDSA tokens from a configured ``[[idp]]``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from conftest import served
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from helpers.people import person_token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.model import Event

ISSUER = "https://idp.example.com"
ADMIN_GROUP = "security-admins"
TRUST_DOMAIN = "tether.local"
ALICE = "alice@example.com"
BOB = "bob@example.com"
ERROR_KEYS = {"error", "error_description"}

FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def spiffe(name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/agent/{name}"


def agent_path(ref: str) -> str:
    """As :mod:`tether.client` builds it."""
    return "/v1/agents/" + quote(ref, safe="")


def new_public_key() -> str:
    return generate_key_pair().public_key


@dataclass
class Api:
    client: TestClient
    tether: Tether
    admin: dict[str, str]
    idp_key: Ed25519PrivateKey
    names: set[str] = field(default_factory=set)

    def token(self, email: str, /, groups: list[str] | None = None, **claims: Any) -> str:
        return person_token(self.idp_key, email, groups, issuer=ISSUER, **claims)

    def person(
        self, email: str, /, groups: list[str] | None = None, **claims: Any
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(email, groups, **claims)}"}

    def register(
        self, name: str, owner: str | None, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"name": name, "public_key": new_public_key(), **kw}
        if owner is not None:
            body["owner"] = owner
        response: httpx.Response = self.client.post(
            "/v1/agents", json=body, headers=headers or self.admin
        )
        return response

    def admin_get(self, ref: str) -> httpx.Response:
        response: httpx.Response = self.client.get(agent_path(ref), headers=self.admin)
        return response

    def refusals(self) -> list[Event]:
        return self.tether.events.list(type="access.refused")


@pytest.fixture
def api(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Api]:
    with served(make_settings, tmp_path, ISSUER, (ADMIN_GROUP,)) as up:
        yield Api(up.client, up.tether, up.admin, up.idp_key)


@pytest.fixture
def two_owners(api: Api) -> Api:
    for name, owner in (("alice-bot", ALICE), ("bob-bot", BOB)):
        response = api.register(name, owner)
        assert response.status_code == 201, response.text
        assert response.json()["owner"] == owner
    return api


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    return body


# ---- authentication ---------------------------------------------------------------------


def _assert_401(response: httpx.Response) -> None:
    assert_error(response, 401, "invalid_token")
    challenge = response.headers.get("WWW-Authenticate")
    assert challenge is not None
    assert challenge.startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/agents"),
        ("POST", "/v1/agents"),
        ("GET", "/v1/agents/alice-bot"),
        ("PATCH", "/v1/agents/alice-bot"),
        ("DELETE", "/v1/agents/alice-bot"),
        ("POST", "/v1/agents/alice-bot/rotate-key"),
        ("POST", "/v1/owners/alice@example.com/offboard"),
    ],
)
def test_no_authorization_header_is_401(two_owners: Api, method: str, path: str) -> None:
    api = two_owners
    body = {"name": "sneaky", "owner": ALICE, "public_key": new_public_key()}
    response = api.client.request(method, path, json=body if method != "GET" else None)
    _assert_401(response)
    # nothing happened
    agent = api.admin_get("alice-bot").json()
    assert agent["state"] == "active"
    assert agent["owner"] == ALICE
    assert api.admin_get("sneaky").status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer tta_not-the-admin-token",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImJvYkBleGFtcGxlLmNvbSJ9.",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "garbage",
    ],
)
def test_a_garbage_bearer_is_401(two_owners: Api, authorization: str) -> None:
    response = two_owners.client.get("/v1/agents", headers={"Authorization": authorization})
    _assert_401(response)


def test_the_admin_token_with_another_scheme_is_401(two_owners: Api) -> None:
    token = two_owners.admin["Authorization"].removeprefix("Bearer ")
    response = two_owners.client.get("/v1/agents", headers={"Authorization": f"Basic {token}"})
    _assert_401(response)


def test_a_token_from_an_unconfigured_issuer_is_401(two_owners: Api) -> None:
    # signed by the very key the JWKS trusts, but naming another issuer
    headers = two_owners.person(BOB, iss="https://unknown-idp.example.com")
    _assert_401(two_owners.client.get("/v1/agents", headers=headers))


def test_a_token_signed_by_an_unknown_key_is_401(two_owners: Api) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": "tether",
            "email": BOB,
            "exp": int(time.time()) + 300,
            "groups": [ADMIN_GROUP],
        },
        stranger,
        algorithm="EdDSA",
        headers={"kid": "idp-1"},
    )
    response = two_owners.client.get(
        agent_path("alice-bot"), headers={"Authorization": f"Bearer {token}"}
    )
    _assert_401(response)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-api"},
        {"exp": 1000},
        {"email": "not-an-email"},
    ],
    ids=["wrong-audience", "expired", "bad-email"],
)
def test_a_flawed_token_from_the_configured_issuer_is_401(
    two_owners: Api, claims: dict[str, Any]
) -> None:
    headers = two_owners.person(BOB, **claims)
    _assert_401(two_owners.client.get("/v1/agents", headers=headers))


def test_the_control_token_is_accepted(two_owners: Api) -> None:
    response = two_owners.client.get("/v1/agents", headers=two_owners.person(BOB))
    assert response.status_code == 200, response.text


def test_an_unhashable_alg_header_is_401_not_500(api: Api) -> None:
    def seg(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{seg({'alg': ['EdDSA'], 'kid': 'idp-1'})}.{seg({'iss': ISSUER})}.c2ln"
    response = api.client.get("/v1/agents", headers={"Authorization": f"Bearer {token}"})
    _assert_401(response)


# ---- object-level authorisation: someone else's agent is "not found" ---------------------


def _attempts(ref: str) -> list[tuple[str, str, dict[str, Any] | None, str]]:
    """(method, path, json, refused op) for every way to touch one agent."""
    path = agent_path(ref)
    return [
        ("GET", path, None, "read"),
        ("PATCH", path, {"purpose": "pwned"}, "agent.updated"),
        ("PATCH", path, {"labels": {"team": "bob"}}, "agent.updated"),
        ("PATCH", path, {"owner": BOB}, "agent.owner_changed"),
        ("PATCH", path, {"state": "suspended"}, "agent.suspended"),
        ("DELETE", path, None, "agent.retired"),
        ("POST", path + "/rotate-key", {"public_key": new_public_key()}, "agent.key_rotated"),
    ]


@pytest.mark.parametrize("ref", ["alice-bot", spiffe("alice-bot")], ids=["name", "spiffe-id"])
def test_bob_gets_404_for_alices_agent_and_each_refusal_is_recorded(
    two_owners: Api, ref: str
) -> None:
    api = two_owners
    bob = api.person(BOB)
    before = api.admin_get("alice-bot").json()
    alice_id = spiffe("alice-bot")

    for method, path, body, op in _attempts(ref):
        seen = len(api.refusals())
        response = api.client.request(method, path, json=body, headers=bob)
        assert_error(response, 404, "not_found")
        new = api.refusals()[seen:]
        assert len(new) == 1, (method, path, new)
        assert new[0].actor == f"user:{BOB}"
        assert new[0].subject == alice_id
        assert new[0].detail == {"op": op}

    # alice's agent is exactly as it was, and no change event names it but its registration
    assert api.admin_get("alice-bot").json() == before
    changes = [e.type for e in api.tether.events.list(subject=alice_id)]
    assert changes == ["agent.registered"] + ["access.refused"] * len(_attempts(ref))


@pytest.mark.parametrize("ref", ["alice-bot", spiffe("alice-bot")], ids=["name", "spiffe-id"])
def test_the_admin_reaches_alices_agent(two_owners: Api, ref: str) -> None:
    api = two_owners
    response = api.client.get(agent_path(ref), headers=api.admin)
    assert response.status_code == 200
    assert response.json()["id"] == spiffe("alice-bot")
    assert response.json()["owner"] == ALICE

    patched = api.client.patch(agent_path(ref), json={"purpose": "triage"}, headers=api.admin)
    assert patched.status_code == 200
    assert patched.json()["purpose"] == "triage"

    retired = api.client.delete(agent_path(ref), params={"reason": "done"}, headers=api.admin)
    assert retired.status_code == 200
    assert retired.json()["state"] == "retired"
    assert api.refusals() == []


@pytest.mark.parametrize("ref", ["alice-bot", spiffe("alice-bot")], ids=["name", "spiffe-id"])
def test_bobs_404_is_indistinguishable_from_a_missing_agent(two_owners: Api, ref: str) -> None:
    api = two_owners
    bob = api.person(BOB)
    ghost = ref.replace("alice-bot", "ghost-bot")
    for (method, path, body, _), (_, ghost_path, ghost_body, _) in zip(
        _attempts(ref), _attempts(ghost), strict=True
    ):
        hidden = api.client.request(method, path, json=body, headers=bob)
        missing = api.client.request(method, ghost_path, json=ghost_body, headers=bob)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.headers["content-type"] == missing.headers["content-type"]
        hidden_body, missing_body = hidden.json(), missing.json()
        assert set(hidden_body) == set(missing_body) == ERROR_KEYS
        assert hidden_body["error"] == missing_body["error"] == "not_found"
        # the same words, naming the agent asked for
        assert "alice-bot" in hidden_body["error_description"]
        assert (
            hidden_body["error_description"].replace("alice-bot", "ghost-bot")
            == (missing_body["error_description"])
        )
    # a missing agent records no refusal; only alice's existing agent did
    assert {e.subject for e in api.refusals()} == {spiffe("alice-bot")}


def test_bob_lists_only_his_agents(two_owners: Api) -> None:
    api = two_owners
    assert api.register("bob-bot-2", BOB).status_code == 201
    assert api.register("alice-bot-2", ALICE).status_code == 201
    bob = api.person(BOB)

    def names(params: dict[str, str] | None = None, headers: dict[str, str] = bob) -> list[str]:
        response = api.client.get("/v1/agents", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [a["name"] for a in response.json()["agents"]]

    assert names() == ["bob-bot", "bob-bot-2"]
    assert names({"owner": ALICE}) == []
    assert names({"unowned": "true"}) == []
    assert names({"state": "active"}) == ["bob-bot", "bob-bot-2"]
    assert names(headers=api.admin) == ["alice-bot", "alice-bot-2", "bob-bot", "bob-bot-2"]
    # a person with no agents sees none
    assert names(headers=api.person("carol@example.com")) == []


def test_bob_suspends_and_resumes_his_own_agent(two_owners: Api) -> None:
    api = two_owners
    bob = api.person("Bob@Example.com")  # the email is normalised before ownership checks
    path = agent_path(spiffe("bob-bot"))

    suspended = api.client.patch(path, json={"state": "suspended", "reason": "pause"}, headers=bob)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["state"] == "suspended"
    assert api.admin_get("bob-bot").json()["state"] == "suspended"

    resumed = api.client.patch(agent_path("bob-bot"), json={"state": "active"}, headers=bob)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "active"

    events = api.tether.events.list(subject=spiffe("bob-bot"))
    assert [(e.type, e.actor) for e in events] == [
        ("agent.registered", "admin"),
        ("agent.suspended", f"user:{BOB}"),
        ("agent.resumed", f"user:{BOB}"),
    ]
    assert api.refusals() == []


def test_bob_cannot_register_an_agent_for_alice(two_owners: Api) -> None:
    api = two_owners
    response = api.register("for-alice", ALICE, headers=api.person(BOB))
    assert_error(response, 403, "access_denied")
    assert_error(api.admin_get("for-alice"), 404, "not_found")
    assert "for-alice" not in [
        a["name"] for a in api.client.get("/v1/agents", headers=api.admin).json()["agents"]
    ]
    refusals = api.refusals()
    assert len(refusals) == 1
    assert refusals[0].actor == f"user:{BOB}"
    assert refusals[0].subject == spiffe("for-alice")
    assert refusals[0].detail == {"op": "register"}
    assert api.tether.events.list(type="agent.registered", subject=spiffe("for-alice")) == []


def test_bob_registers_an_agent_for_himself(two_owners: Api) -> None:
    api = two_owners
    response = api.register("bobs-own", "BOB@example.com", headers=api.person(BOB))
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent["owner"] == BOB
    assert agent["created_by"] == f"user:{BOB}"
    assert agent["id"] == spiffe("bobs-own")
    assert api.client.get(agent_path("bobs-own"), headers=api.person(BOB)).status_code == 200
    # and alice cannot see it
    assert_error(
        api.client.get(agent_path("bobs-own"), headers=api.person(ALICE)), 404, "not_found"
    )


def test_bob_cannot_spawn_a_child_of_alices_agent(two_owners: Api) -> None:
    api = two_owners
    response = api.register("child", BOB, headers=api.person(BOB), parent=spiffe("alice-bot"))
    assert_error(response, 404, "not_found")
    assert_error(api.admin_get("child"), 404, "not_found")
    assert [(e.actor, e.subject) for e in api.refusals()] == [(f"user:{BOB}", spiffe("alice-bot"))]


def test_bob_without_an_owner_is_refused(two_owners: Api) -> None:
    response = two_owners.register("ownerless", None, headers=two_owners.person(BOB))
    assert_error(response, 400, "invalid_request")
    assert_error(two_owners.admin_get("ownerless"), 404, "not_found")


def test_a_member_of_an_admin_group_acts_as_admin(two_owners: Api) -> None:
    api = two_owners
    carol = api.person("carol@example.com", groups=["engineering", ADMIN_GROUP])
    shown = api.client.get(agent_path("alice-bot"), headers=carol)
    assert shown.status_code == 200, shown.text
    assert shown.json()["owner"] == ALICE
    listed = api.client.get("/v1/agents", headers=carol).json()["agents"]
    assert [a["name"] for a in listed] == ["alice-bot", "bob-bot"]

    suspended = api.client.patch(
        agent_path("alice-bot"), json={"state": "suspended"}, headers=carol
    )
    assert suspended.status_code == 200
    last = api.tether.events.list(subject=spiffe("alice-bot"))[-1]
    assert (last.type, last.actor) == ("agent.suspended", "user:carol@example.com")
    assert api.refusals() == []


@pytest.mark.parametrize("groups", [["engineering"], [], None, [ADMIN_GROUP.upper()]])
def test_other_groups_do_not_make_an_admin(two_owners: Api, groups: list[str] | None) -> None:
    dave = two_owners.person("dave@example.com", groups=groups)
    assert_error(two_owners.client.get(agent_path("alice-bot"), headers=dave), 404, "not_found")


def test_bob_cannot_offboard_an_owner_but_the_admin_can(two_owners: Api) -> None:
    api = two_owners
    path = f"/v1/owners/{quote(ALICE, safe='')}/offboard"
    refused = api.client.post(path, json={"reason": "left"}, headers=api.person(BOB))
    assert_error(refused, 403, "access_denied")
    assert api.admin_get("alice-bot").json()["owner"] == ALICE
    assert api.admin_get("alice-bot").json()["unowned"] is False
    assert api.tether.events.list(type="agent.unowned") == []
    assert [(e.actor, e.subject, e.detail) for e in api.refusals()] == [
        (f"user:{BOB}", f"user:{ALICE}", {"op": "offboard"})
    ]

    done = api.client.post(path, json={"reason": "left"}, headers=api.admin)
    assert done.status_code == 200, done.text
    assert done.json()["owner"] == ALICE
    assert [(a["name"], a["owner"], a["unowned"]) for a in done.json()["agents"]] == [
        ("alice-bot", None, True)
    ]
    assert api.admin_get("alice-bot").json()["owner"] is None
    assert api.admin_get("bob-bot").json()["owner"] == BOB


# ---- bad input is 4xx with a JSON error, never 500 ------------------------------------------


def _register_body(**overrides: Any) -> dict[str, Any]:
    body = {"name": "good-name", "owner": ALICE, "public_key": new_public_key()}
    body.update(overrides)
    return body


def test_a_broken_json_body_is_400(api: Api) -> None:
    for raw in (b'{"name": ', b"not json at all", b"\xff\xfe", b""):
        response = api.client.post(
            "/v1/agents",
            content=raw,
            headers={**api.admin, "Content-Type": "application/json"},
        )
        assert_error(response, 400, "invalid_request")
    assert api.client.get("/v1/agents", headers=api.admin).json() == {"agents": []}


@pytest.mark.parametrize("body", [[], "name", 42, None, {}], ids=repr)
def test_a_body_that_is_not_a_registration_is_400(api: Api, body: Any) -> None:
    response = api.client.post(
        "/v1/agents",
        content=json.dumps(body),
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "invalid_request")


def test_unknown_fields_are_400(two_owners: Api) -> None:
    api = two_owners
    response = api.client.post("/v1/agents", json=_register_body(admin=True), headers=api.admin)
    body = assert_error(response, 400, "invalid_request")
    assert "admin" in body["error_description"]
    assert_error(api.admin_get("good-name"), 404, "not_found")
    patched = api.client.patch(
        agent_path("alice-bot"), json={"state": "active", "created_by": "x"}, headers=api.admin
    )
    assert_error(patched, 400, "invalid_request")


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "..",
        "a..b",
        "../etc",
        "/abs",
        "x/../y",
        "UPPER",
        "",
        "-lead",
        ".dot",
        "x" * 64,
        "sp ace",
        "spiffe://tether.local/agent/x",
    ],
)
def test_bad_names_are_400(api: Api, name: str) -> None:
    response = api.client.post("/v1/agents", json=_register_body(name=name), headers=api.admin)
    assert_error(response, 400, "invalid_request")
    assert api.client.get("/v1/agents", headers=api.admin).json() == {"agents": []}


@pytest.mark.parametrize("expires", ["banana", "0s", "-1d", "1.5d", "400d", "99999d", "", 90])
def test_bad_expires_is_400(api: Api, expires: Any) -> None:
    response = api.client.post(
        "/v1/agents", json=_register_body(expires=expires), headers=api.admin
    )
    assert_error(response, 400, "invalid_request")
    assert api.client.get("/v1/agents", headers=api.admin).json() == {"agents": []}


@pytest.mark.parametrize(
    "overrides",
    [
        {"owner": "not-an-email"},
        {"owner": "   "},
        {"public_key": "not-a-key"},
        {"public_key": "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"},
        {"kind": "robot"},
        {"labels": {"Bad Key": "v"}},
        {"labels": {"k": "v" * 300}},
        {"purpose": "p" * 1001},
        {"parent": "spiffe://other.domain/agent/x"},
    ],
    ids=repr,
)
def test_other_bad_registrations_are_400(api: Api, overrides: dict[str, Any]) -> None:
    response = api.client.post("/v1/agents", json=_register_body(**overrides), headers=api.admin)
    assert_error(response, 400, "invalid_request")


def test_conflicts_are_409(two_owners: Api) -> None:
    api = two_owners
    assert_error(api.register("alice-bot", ALICE), 409, "conflict")
    taken = api.admin_get("alice-bot").json()["public_key"]
    response = api.client.post(
        "/v1/agents", json=_register_body(name="copycat", public_key=taken), headers=api.admin
    )
    assert_error(response, 409, "conflict")


@pytest.mark.parametrize(
    ("method", "json_body"),
    [
        ("GET", None),
        ("PATCH", {"purpose": "x"}),
        ("DELETE", None),
    ],
)
def test_an_unknown_agent_is_404(api: Api, method: str, json_body: Any) -> None:
    for ref in ("no-such-agent", spiffe("no-such-agent")):
        response = api.client.request(method, agent_path(ref), json=json_body, headers=api.admin)
        assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"state": "killed"},
        {"state": "expired"},
        {"state": "retired"},
        {"state": 1},
        {},
        {"reason": "only a reason"},
        {"state": "suspended", "purpose": "x"},
        {"owner": BOB, "purpose": "x"},
        {"owner": "nope"},
        {"labels": ["not", "a", "dict"]},
    ],
    ids=repr,
)
def test_bad_patches_are_400(two_owners: Api, body: dict[str, Any]) -> None:
    api = two_owners
    before = api.admin_get("alice-bot").json()
    response = api.client.patch(agent_path("alice-bot"), json=body, headers=api.admin)
    assert_error(response, 400, "invalid_request")
    assert api.admin_get("alice-bot").json() == before


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/v1/agents", {"state": "banana"}),
        ("GET", "/v1/agents", {"owner": "not-an-email"}),
        ("GET", "/v1/agents", {"unowned": "maybe"}),
        ("GET", agent_path("spiffe://evil.example/agent/alice-bot"), None),
        ("GET", "/v1/agents/UPPER", None),
        ("POST", "/v1/owners/not-an-email/offboard", None),
    ],
)
def test_bad_queries_and_refs_are_400(
    two_owners: Api, method: str, path: str, params: dict[str, str] | None
) -> None:
    response = two_owners.client.request(method, path, params=params, headers=two_owners.admin)
    assert_error(response, 400, "invalid_request")


def test_bad_rotate_key_is_400(two_owners: Api) -> None:
    api = two_owners
    path = agent_path("alice-bot") + "/rotate-key"
    assert_error(
        api.client.post(path, json={"public_key": "x"}, headers=api.admin), 400, "invalid_request"
    )
    assert_error(api.client.post(path, json={}, headers=api.admin), 400, "invalid_request")


def test_a_wrong_method_is_405_with_a_json_error(api: Api) -> None:
    assert_error(
        api.client.put("/v1/agents", json={}, headers=api.admin), 405, "method_not_allowed"
    )


@pytest.fixture
def on_postgres(db_url: str) -> bool:
    return db_url.startswith("postgresql")


@pytest.mark.parametrize(
    "where",
    ["register.purpose", "patch.purpose", "patch.reason", "delete.reason"],
)
def test_a_nul_character_in_free_text_is_not_a_server_error(two_owners: Api, where: str) -> None:
    api = two_owners
    path = agent_path("alice-bot")
    before = api.client.get(path, headers=api.admin).json()
    if where == "register.purpose":
        response = api.register("nul-bot", ALICE, purpose="a\x00b")
    elif where == "patch.purpose":
        response = api.client.patch(path, json={"purpose": "a\x00b"}, headers=api.admin)
    elif where == "patch.reason":
        response = api.client.patch(
            path, json={"state": "suspended", "reason": "a\x00b"}, headers=api.admin
        )
    else:
        response = api.client.delete(path, params={"reason": "a\x00b"}, headers=api.admin)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert set(response.json()) == ERROR_KEYS
    assert api.client.get(path, headers=api.admin).json() == before


# ---- fuzzing POST /v1/agents ----------------------------------------------------------------

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")

_json_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
# any text that can travel as JSON (no lone surrogates); NUL included
_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
_any_json = st.recursive(
    _json_scalar | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _check_response(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code == 201 or 400 <= response.status_code < 500, response.text
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code == 201:
        assert body["id"] == spiffe(body["name"])
    else:
        assert set(body) == ERROR_KEYS
        assert isinstance(body["error"], str)
        assert isinstance(body["error_description"], str)


@FUZZ
@given(body=_any_json)
def test_fuzz_any_json_body_is_never_5xx(api: Api, body: Any) -> None:
    response = api.client.post(
        "/v1/agents",
        content=json.dumps(body),
        headers={**api.admin, "Content-Type": "application/json"},
    )
    _check_response(response)


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "name": _any_json | st.from_regex(_NAME, fullmatch=True),
            "owner": _any_json | st.sampled_from([ALICE, BOB, "ALICE@EXAMPLE.COM"]),
            "kind": _any_json | st.sampled_from(["chatbot", "mcp-server", "other"]),
            "purpose": _any_json,
            "parent": _any_json | st.just("alice-bot"),
            "labels": _any_json | st.dictionaries(_text, _text, max_size=3),
            "expires": _any_json | st.from_regex(r"[0-9]{1,4}[smhd]", fullmatch=True),
            "surprise": _any_json,
        },
    ),
    with_key=st.booleans(),
    as_bob=st.booleans(),
)
def test_fuzz_registration_fields_are_never_5xx(
    two_owners: Api, fields: dict[str, Any], with_key: bool, as_bob: bool
) -> None:
    api = two_owners
    body = dict(fields)
    if with_key:
        body["public_key"] = new_public_key()
    headers = api.person(BOB) if as_bob else api.admin
    response = api.client.post("/v1/agents", json=body, headers=headers)
    _check_response(response)
    if response.status_code == 201:
        agent = response.json()
        assert _NAME.fullmatch(agent["name"])
        assert ".." not in agent["name"]
        assert not as_bob or agent["owner"] == BOB
        assert api.admin_get(agent["name"]).status_code == 200


@FUZZ
@given(name=st.text(max_size=70))
def test_fuzz_names_are_accepted_exactly_when_valid(api: Api, name: str) -> None:
    response = api.client.post("/v1/agents", json=_register_body(name=name), headers=api.admin)
    _check_response(response)
    valid = _NAME.fullmatch(name) is not None and ".." not in name
    if not valid:
        assert response.status_code == 400
    elif name in api.names:
        assert response.status_code == 409
    else:
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name
        api.names.add(name)
