"""The AuthZEN 1.0 decision endpoints, on both stores.

Everything goes through ``TestClient(create_app(tether))`` with the admin token ``Tether.init``
made (people come with EdDSA tokens from a configured ``[[idp]]``). The set-up is the
least-privilege scenario: agent ``helper`` (owner alice) may ``tools/call``
``github/create_issue``; alice herself may ``tools/call`` ``github/*``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import served
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from helpers.people import person_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.errors import StoreUnavailable
from tether.model import Event

ISSUER = "https://idp.example.com"
ADMIN_GROUP = "security-admins"
ALICE = "user:alice@example.com"
BOB = "user:bob@example.com"
HELPER = "spiffe://tether.local/agent/helper"
ERROR_KEYS = {"error", "error_description"}
ONE = "/access/v1/evaluation"
MANY = "/access/v1/evaluations"

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def spiffe(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


def ask(
    resource: str = "github/create_issue",
    subject: str = "helper",
    *,
    kind: str = "agent",
    action: str = "tools/call",
    on_behalf_of: str | None = ALICE,
    **context: Any,
) -> dict[str, Any]:
    """An AuthZEN evaluation request."""
    if on_behalf_of is not None:
        context["on_behalf_of"] = on_behalf_of
    return {
        "subject": {"type": kind, "id": subject},
        "action": {"name": action},
        "resource": {"type": "mcp_tool", "id": resource},
        "context": context,
    }


@dataclass
class Pdp:
    client: TestClient
    tether: Tether
    admin: dict[str, str]
    idp_key: Ed25519PrivateKey
    grants: dict[str, str]  # "helper" / "alice" -> grant id

    def person(self, email: str, groups: list[str] | None = None) -> dict[str, str]:
        return person_header(self.idp_key, email, groups, issuer=ISSUER)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        response: httpx.Response = self.client.post(
            path, json=body, headers=self.admin if headers is None else headers
        )
        return response

    def one(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(ONE, body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def many(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.post(MANY, body)
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"evaluations"}, response.text
        answers: list[dict[str, Any]] = response.json()["evaluations"]
        return answers

    def register(self, name: str, owner: str = "alice@example.com") -> None:
        body = {"name": name, "owner": owner, "public_key": generate_key_pair().public_key}
        response = self.post("/v1/agents", body)
        assert response.status_code == 201, response.text

    def grant(self, principal: str, resource: str, action: str = "tools/call") -> str:
        body = {"principal": principal, "action": action, "resource": resource}
        response = self.post("/v1/grants", body)
        assert response.status_code == 201, response.text
        grant_id: str = response.json()["id"]
        return grant_id

    def decisions(self) -> list[Event]:
        return self.tether.events.list(type="decision")


@pytest.fixture
def pdp(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Pdp]:
    with served(make_settings, tmp_path, ISSUER, (ADMIN_GROUP,)) as up:
        pdp = Pdp(up.client, up.tether, up.admin, up.idp_key, {})
        pdp.register("helper")
        pdp.grants["helper"] = pdp.grant("helper", "github/create_issue")
        pdp.grants["alice"] = pdp.grant(ALICE, "github/*")
        yield pdp


def tether_of(answer: dict[str, Any]) -> dict[str, Any]:
    assert set(answer) == {"decision", "context"}, answer
    assert isinstance(answer["decision"], bool)
    detail: dict[str, Any] = answer["context"]["tether"]
    assert detail["allowed"] is answer["decision"]
    assert detail["decision"] == ("allow" if answer["decision"] else "deny")
    assert answer["context"]["reason_admin"] == {"en": "; ".join(detail["reasons"])}
    return detail


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == error
    assert body["error_description"]
    return body


# ---- single evaluations ---------------------------------------------------------------------


def test_helper_for_alice_is_allowed_by_both_grants(pdp: Pdp) -> None:
    answer = pdp.one(ask())
    assert answer["decision"] is True
    detail = tether_of(answer)
    assert detail["chain"] == [ALICE, HELPER]
    assert detail["action"] == "tools/call"
    assert detail["resource"] == "github/create_issue"
    assert sorted(detail["grants"]) == sorted(pdp.grants.values())
    assert detail["policies"] == []
    assert any(HELPER in r and pdp.grants["helper"] in r for r in detail["reasons"])
    assert any(ALICE in r and pdp.grants["alice"] in r for r in detail["reasons"])


def test_helper_for_bob_is_denied_naming_bob(pdp: Pdp) -> None:
    answer = pdp.one(ask(on_behalf_of=BOB))
    assert answer["decision"] is False
    detail = tether_of(answer)
    assert detail["chain"] == [BOB, HELPER]
    assert detail["grants"] == []
    assert detail["reasons"], detail
    assert all(BOB in r for r in detail["reasons"]), detail["reasons"]
    assert "holds no grant" in detail["reasons"][0]


def test_on_behalf_of_without_the_user_prefix_means_the_same_person(pdp: Pdp) -> None:
    assert pdp.one(ask(on_behalf_of="alice@example.com"))["decision"] is True
    denied = tether_of(pdp.one(ask(on_behalf_of="bob@example.com")))
    assert denied["allowed"] is False and denied["chain"][0] == BOB


def test_helper_on_delete_repo_is_denied_naming_helper(pdp: Pdp) -> None:
    answer = pdp.one(ask("github/delete_repo"))
    assert answer["decision"] is False
    detail = tether_of(answer)
    # alice may (github/*), helper may not: only helper is named
    assert detail["reasons"] == [f"{HELPER} holds no grant for tools/call on github/delete_repo"]


def test_a_person_acting_alone_uses_their_own_grants(pdp: Pdp) -> None:
    alice = ask("github/delete_repo", "alice@example.com", kind="user", on_behalf_of=None)
    assert tether_of(pdp.one(alice))["chain"] == [ALICE]
    assert pdp.one(alice)["decision"] is True
    bob = ask("github/create_issue", "bob@example.com", kind="user", on_behalf_of=None)
    assert pdp.one(bob)["decision"] is False
    # a person acts only for themselves
    response = pdp.post(ONE, ask(subject="alice@example.com", kind="user", on_behalf_of=BOB))
    assert_error(response, 400, "invalid_request")


def test_the_agent_id_may_be_a_spiffe_id(pdp: Pdp) -> None:
    assert pdp.one(ask(subject=HELPER))["decision"] is True


def test_a_chain_is_honoured_each_agent_needs_a_grant(pdp: Pdp) -> None:
    pdp.register("planner")
    body = ask(chain=["planner"])
    denied = tether_of(pdp.one(body))
    assert denied["allowed"] is False
    assert denied["chain"] == [ALICE, spiffe("planner"), HELPER]
    assert denied["reasons"] == [
        f"{spiffe('planner')} holds no grant for tools/call on github/create_issue"
    ]

    planner_grant = pdp.grant("planner", "github/create_issue")
    allowed = tether_of(pdp.one(body))
    assert allowed["allowed"] is True
    assert planner_grant in allowed["grants"]
    # the acting agent may close the chain: the same request
    same = tether_of(pdp.one(ask(chain=["planner", "helper"])))
    assert same["allowed"] is True and same["chain"] == allowed["chain"]
    # ... and bob through the same chain is still denied, naming only bob
    bob = tether_of(pdp.one(ask(on_behalf_of=BOB, chain=["planner"])))
    assert bob["allowed"] is False and all(BOB in r for r in bob["reasons"])


def test_a_chain_through_an_unknown_agent_is_denied(pdp: Pdp) -> None:
    detail = tether_of(pdp.one(ask(chain=["ghost"])))
    assert detail["allowed"] is False
    assert detail["reasons"] == [f"{spiffe('ghost')} is not a registered agent"]


def test_a_chain_deeper_than_the_cap_is_denied(pdp: Pdp) -> None:
    names = [f"hop{i}" for i in range(4)]
    for name in names:
        pdp.register(name)
        pdp.grant(name, "github/create_issue")
    at_cap = tether_of(pdp.one(ask(chain=names[1:])))  # 3 + helper = 4 agents
    assert at_cap["allowed"] is True
    too_deep = tether_of(pdp.one(ask(chain=names)))  # 5 agents
    assert too_deep["allowed"] is False
    assert "deeper than the cap" in too_deep["reasons"][0]


@pytest.mark.parametrize(
    ("context", "needle"),
    [
        ({"chain": ["helper", "planner"]}, "cycle"),  # helper appears twice
        ({"chain": [ALICE]}, "agents"),  # people go in on_behalf_of
        ({"chain": "planner"}, "context.chain"),
        ({"chain": [1, 2]}, "context.chain"),
        ({"on_behalf_of": 42}, "on_behalf_of"),
        ({"on_behalf_of": "not-an-email"}, "email"),
        ({"on_behalf_of": "helper"}, "email"),
        ({"chain_depth": 0}, "chain_depth"),
        ({"time": 0}, "time"),
        ({"token": "eyJ..."}, "token"),
    ],
    ids=repr,
)
def test_a_malformed_context_is_400(pdp: Pdp, context: dict[str, Any], needle: str) -> None:
    pdp.register("planner")
    body = ask()
    body["context"].update(context)
    seen = len(pdp.decisions())
    error = assert_error(pdp.post(ONE, body), 400, "invalid_request")
    assert needle in error["error_description"], error
    assert len(pdp.decisions()) == seen  # nothing decided, nothing recorded


def test_extra_context_reaches_cedar(pdp: Pdp) -> None:
    body = ask(ticket="T-1", urgent=True, count=3, tags=["a", "b"], meta={"k": "v"})
    assert pdp.one(body)["decision"] is True


# ---- batches ----------------------------------------------------------------------------


def _resource(i: int) -> str:
    return "github/create_issue" if i % 2 == 0 else f"github/other_{i}"


def test_a_batch_of_100_is_answered_in_request_order(pdp: Pdp) -> None:
    seen = len(pdp.decisions())
    body = {
        "subject": {"type": "agent", "id": "helper"},
        "action": {"name": "tools/call"},
        "context": {"on_behalf_of": ALICE},
        "evaluations": [{"resource": {"type": "mcp_tool", "id": _resource(i)}} for i in range(100)],
    }
    answers = pdp.many(body)
    assert len(answers) == 100
    for i, answer in enumerate(answers):
        detail = tether_of(answer)
        assert detail["resource"] == _resource(i), (i, detail)
        assert answer["decision"] is (i % 2 == 0), (i, detail)
        assert detail["chain"] == [ALICE, HELPER]
        if i % 2:
            assert detail["reasons"] == [
                f"{HELPER} holds no grant for tools/call on {_resource(i)}"
            ]
    recorded = pdp.decisions()[seen:]
    assert len(recorded) == 100
    assert [e.resource for e in recorded] == [_resource(i) for i in range(100)]
    assert [e.decision == "allow" for e in recorded] == [i % 2 == 0 for i in range(100)]


def test_items_override_the_top_level_defaults(pdp: Pdp) -> None:
    body = {
        "subject": {"type": "agent", "id": "helper"},
        "action": {"name": "tools/call"},
        "resource": {"type": "mcp_tool", "id": "github/create_issue"},
        "context": {"on_behalf_of": ALICE},
        "evaluations": [
            {},  # every default
            {"context": {"on_behalf_of": BOB}},  # replaces the default context
            {"resource": {"id": "github/delete_repo"}},
            {"action": {"name": "resources/read"}},
            {"subject": {"type": "user", "id": "alice@example.com"}, "context": {}},
            {"subject": {"type": "user", "id": "bob@example.com"}, "context": {}},
        ],
    }
    got = [tether_of(a) for a in pdp.many(body)]
    assert [(d["allowed"], d["chain"], d["action"], d["resource"]) for d in got] == [
        (True, [ALICE, HELPER], "tools/call", "github/create_issue"),
        (False, [BOB, HELPER], "tools/call", "github/create_issue"),
        (False, [ALICE, HELPER], "tools/call", "github/delete_repo"),
        (False, [ALICE, HELPER], "resources/read", "github/create_issue"),
        (True, [ALICE], "tools/call", "github/create_issue"),
        (False, [BOB], "tools/call", "github/create_issue"),
    ]


def test_a_batch_without_evaluations_is_one_evaluation(pdp: Pdp) -> None:
    response = pdp.post(MANY, ask())
    assert response.status_code == 200, response.text
    assert tether_of(response.json())["allowed"] is True
    response = pdp.post(MANY, {**ask(on_behalf_of=BOB), "evaluations": []})
    assert tether_of(response.json())["allowed"] is False
    assert_error(pdp.post(MANY, {"evaluations": []}), 400, "invalid_request")


def _batch(resources: list[str], semantic: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": {"type": "agent", "id": "helper"},
        "action": {"name": "tools/call"},
        "context": {"on_behalf_of": ALICE},
        "evaluations": [{"resource": {"id": r}} for r in resources],
    }
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic}
    return body


OK, NO, BAD = "github/create_issue", "github/delete_repo", "a//b"


@pytest.mark.parametrize(
    ("semantic", "resources", "expected"),
    [
        ("execute_all", [OK, NO, OK, NO], [True, False, True, False]),
        ("deny_on_first_deny", [OK, OK, NO, OK, NO], [True, True, False]),
        ("deny_on_first_deny", [OK, OK, OK], [True, True, True]),
        ("deny_on_first_deny", [NO, OK], [False]),
        ("deny_on_first_deny", [OK, BAD, OK], [True, None]),
        ("permit_on_first_permit", [NO, NO, OK, NO, OK], [False, False, True]),
        ("permit_on_first_permit", [NO, NO], [False, False]),
        ("permit_on_first_permit", [OK, NO], [True]),
        ("permit_on_first_permit", [BAD, NO, OK, OK], [None, False, True]),
    ],
)
def test_evaluation_semantics_stop_where_they_should(
    pdp: Pdp, semantic: str, resources: list[str], expected: list[bool | None]
) -> None:
    seen = len(pdp.decisions())
    answers = pdp.many(_batch(resources, semantic))
    got: list[bool | None] = []
    for resource, answer in zip(resources, answers, strict=False):
        if "error" in answer["context"]:
            assert answer["decision"] is False
            got.append(None)
        else:
            assert tether_of(answer)["resource"] == resource
            got.append(answer["decision"])
    assert got == expected
    # only what was evaluated is recorded
    assert len(pdp.decisions()) - seen == sum(1 for g in expected if g is not None)


def test_an_unknown_semantic_is_400(pdp: Pdp) -> None:
    assert_error(pdp.post(MANY, _batch([OK], "majority")), 400, "invalid_request")


def test_a_malformed_item_is_answered_in_place_and_the_others_still_are(pdp: Pdp) -> None:
    seen = len(pdp.decisions())
    body = {
        "subject": {"type": "agent", "id": "helper"},
        "action": {"name": "tools/call"},
        "context": {"on_behalf_of": ALICE},
        "evaluations": [
            {"resource": {"id": OK}},
            {"resource": {"id": "a//b"}},
            {"resource": {"id": "../x"}, "context": {"on_behalf_of": BOB}},
            {"resource": {"id": OK}, "action": {"name": "tools/explode"}},
            {"resource": {"id": NO}},
            {"resource": {"id": OK}, "context": {"on_behalf_of": ALICE, "token": "t"}},
            {},  # no resource at all
            {"resource": {"id": OK}, "subject": {"type": "agent", "id": "Not A Name"}},
            {"resource": {"id": OK}, "context": {"on_behalf_of": BOB}},
        ],
    }
    answers = pdp.many(body)
    assert len(answers) == 9
    errors = {i for i, a in enumerate(answers) if "error" in a["context"]}
    assert errors == {1, 2, 3, 5, 6, 7}
    for i in errors:
        assert answers[i]["decision"] is False
        assert set(answers[i]["context"]) == {"error"}
        error = answers[i]["context"]["error"]
        assert set(error) == ERROR_KEYS and error["error"] == "invalid_request"
        assert error["error_description"]
    assert "tools/explode" in answers[3]["context"]["error"]["error_description"]
    assert [(tether_of(answers[i])["resource"], answers[i]["decision"]) for i in (0, 4, 8)] == [
        (OK, True),
        (NO, False),
        (OK, False),
    ]
    assert len(pdp.decisions()) - seen == 3


def test_a_structurally_broken_item_fails_the_whole_batch(pdp: Pdp) -> None:
    # a shape the wire format forbids (not a value Tether rejects) is a transport error
    body = _batch([OK, OK])
    body["evaluations"][1]["subject"] = "helper"
    assert_error(pdp.post(MANY, body), 400, "invalid_request")
    body["evaluations"][1] = {"resource": {"id": OK}, "surprise": 1}
    assert_error(pdp.post(MANY, body), 400, "invalid_request")


def test_the_batch_cap_is_1000(pdp: Pdp) -> None:
    seen = len(pdp.decisions())
    resources = [_resource(i) for i in range(1000)]
    answers = pdp.many(_batch(resources))
    assert [tether_of(a)["resource"] for a in answers] == resources
    assert [a["decision"] for a in answers] == [i % 2 == 0 for i in range(1000)]
    assert len(pdp.decisions()) - seen == 1000
    for semantic in ("execute_all", "deny_on_first_deny", "permit_on_first_permit"):
        error = assert_error(pdp.post(MANY, _batch([OK] * 1001, semantic)), 400, "invalid_request")
        assert "1000" in error["error_description"]
    assert len(pdp.decisions()) - seen == 1000  # the refused batches decided nothing


# ---- the decision record ------------------------------------------------------------------


def test_every_decision_is_recorded_with_its_reasons(pdp: Pdp) -> None:
    seen = len(pdp.decisions())
    requests = [ask(), ask(on_behalf_of=BOB), ask("github/delete_repo"), ask()]
    answers = [pdp.one(body) for body in requests]
    recorded = pdp.decisions()
    assert len(recorded) == seen + 4
    for answer, event in zip(answers, recorded[seen:], strict=True):
        detail = tether_of(answer)
        assert event.type == "decision"
        assert event.actor == HELPER
        assert event.subject == HELPER
        assert (event.action, event.resource) == ("tools/call", detail["resource"])
        assert event.decision == ("allow" if answer["decision"] else "deny")
        assert list(event.chain) == detail["chain"]
        assert list(event.reasons) == detail["reasons"]
        assert event.reason == "; ".join(detail["reasons"])
    # the repeated request came from the cache, and was recorded all the same
    assert recorded[-1].detail["cached"] is True
    assert recorded[seen].detail["cached"] is False


def test_decisions_show_up_as_grant_use(pdp: Pdp) -> None:
    response = pdp.client.get("/v1/grants", params={"unused": "30d"}, headers=pdp.admin)
    assert {g["id"] for g in response.json()["grants"]} == set(pdp.grants.values())
    pdp.one(ask())
    response = pdp.client.get("/v1/grants", params={"unused": "30d"}, headers=pdp.admin)
    assert response.json()["grants"] == []


# ---- authentication and errors -------------------------------------------------------------


@pytest.mark.parametrize("path", [ONE, MANY])
def test_no_token_is_401(pdp: Pdp, path: str) -> None:
    seen = len(pdp.decisions())
    response = pdp.client.post(path, json=ask())
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    garbage = pdp.post(path, ask(), headers={"Authorization": "Bearer tta_nope"})
    assert_error(garbage, 401, "invalid_token")
    assert len(pdp.decisions()) == seen


@pytest.mark.parametrize("path", [ONE, MANY])
def test_a_person_who_is_not_an_admin_is_403(pdp: Pdp, path: str) -> None:
    seen = len(pdp.decisions())
    for groups in (None, ["engineering"]):
        response = pdp.post(path, ask(), headers=pdp.person("alice@example.com", groups))
        assert_error(response, 403, "access_denied")
    assert len(pdp.decisions()) == seen


def test_a_member_of_an_admin_group_may_ask(pdp: Pdp) -> None:
    response = pdp.post(ONE, ask(), headers=pdp.person("carol@example.com", [ADMIN_GROUP]))
    assert response.status_code == 200, response.text
    assert response.json()["decision"] is True


@pytest.mark.parametrize("path", [ONE, MANY])
@pytest.mark.parametrize("raw", [b'{"subject": ', b"not json", b"\xff\xfe", b""])
def test_malformed_json_is_400(pdp: Pdp, path: str, raw: bytes) -> None:
    response = pdp.client.post(
        path, content=raw, headers={**pdp.admin, "Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_request")


def _without(key: str) -> dict[str, Any]:
    body = ask()
    del body[key]
    return body


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = ask()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize("path", [ONE, MANY])
@pytest.mark.parametrize(
    "body",
    [
        _without("subject"),
        _without("action"),
        _without("resource"),
        {},
        [],
        "evaluate",
        None,
        _with(("action", "name"), "tools/explode"),
        _with(("action", "name"), "*"),
        _with(("action", "name"), ""),
        _with(("resource", "id"), "a//b"),
        _with(("resource", "id"), "../x"),
        _with(("resource", "id"), "github/../x"),
        _with(("resource", "id"), "/github"),
        _with(("resource", "id"), "github/*"),
        _with(("resource", "id"), ""),
        _with(("resource", "id"), "x" * 600),
        _with(("resource",), {"type": "mcp_tool"}),
        _with(("subject", "id"), "Not A Name"),
        _with(("subject", "id"), "spiffe://evil.example/agent/helper"),
        _with(("subject",), {"type": "agent"}),
        _with(("action",), {}),
        _with(("context",), {"on_behalf_of": ALICE, "token": "eyJhbGciOi.x.y"}),
        _with(("context",), []),
        {**ask(), "surprise": True},
    ],
    ids=repr,
)
def test_a_malformed_evaluation_is_400(pdp: Pdp, path: str, body: Any) -> None:
    seen = len(pdp.decisions())
    assert_error(pdp.post(path, body), 400, "invalid_request")
    assert len(pdp.decisions()) == seen


def test_context_token_is_not_supported_yet(pdp: Pdp) -> None:
    body = ask()
    body["context"]["token"] = "eyJ..."
    error = assert_error(pdp.post(ONE, body), 400, "invalid_request")
    assert "context.token" in error["error_description"]


def test_a_wrong_method_is_405(pdp: Pdp) -> None:
    assert_error(pdp.client.get(ONE, headers=pdp.admin), 405, "method_not_allowed")


def test_the_well_known_configuration_lists_both_endpoints(pdp: Pdp) -> None:
    response = pdp.client.get("/.well-known/authzen-configuration")
    assert response.status_code == 200, response.text
    config = response.json()
    base = config["policy_decision_point"]
    assert config["access_evaluation_endpoint"] == base + ONE
    assert config["access_evaluations_endpoint"] == base + MANY


# ---- fail closed --------------------------------------------------------------------------


def _unwritable_record(pdp: Pdp, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise StoreUnavailable("boom")

    monkeypatch.setattr(pdp.tether.events, "record", refuse)


def test_an_unwritable_record_denies_what_grants_allow(
    pdp: Pdp, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pdp.one(ask())["decision"] is True  # warm: the allow is now cached too
    seen = len(pdp.decisions())
    _unwritable_record(pdp, monkeypatch)
    answer = pdp.one(ask())
    assert answer["decision"] is False
    detail = tether_of(answer)
    assert detail["grants"] == [] and detail["cached"] is False
    assert detail["reasons"] == ["decision record could not be written, denied: boom"]
    answers = pdp.many(_batch([OK, NO, OK]))
    assert [a["decision"] for a in answers] == [False, False, False]
    for semantic in ("deny_on_first_deny", "permit_on_first_permit"):
        answers = pdp.many(_batch([OK, OK], semantic))
        assert [a["decision"] for a in answers] == ([False] if semantic[0] == "d" else [False] * 2)
        assert all("record" in a["context"]["reason_admin"]["en"] for a in answers)
    monkeypatch.undo()
    assert len(pdp.decisions()) == seen
    assert pdp.one(ask())["decision"] is True
    assert len(pdp.decisions()) == seen + 1


def test_a_store_that_refuses_the_record_denies(pdp: Pdp) -> None:
    """The same, with the refusal coming from the database itself."""
    engine = pdp.tether.store.engine
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_decisions BEFORE INSERT ON events "
                "WHEN NEW.type = 'decision' BEGIN SELECT RAISE(ABORT, 'no record'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION no_decisions() RETURNS trigger AS $$ BEGIN "
                "IF NEW.type = 'decision' THEN RAISE EXCEPTION 'no record'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER no_decisions BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION no_decisions()"
            )
    seen = len(pdp.decisions())
    answer = pdp.one(ask())
    assert answer["decision"] is False
    [reason] = tether_of(answer)["reasons"]
    assert reason.startswith("decision record could not be written, denied: ")
    assert all(a["decision"] is False for a in pdp.many(_batch([OK, OK])))
    assert len(pdp.decisions()) == seen
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER no_decisions" if sqlite else "DROP TRIGGER no_decisions ON events"
        )
    assert pdp.one(ask())["decision"] is True
    assert len(pdp.decisions()) == seen + 1


NUL_CONTEXT = {"on_behalf_of": ALICE, "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1\x00"}}}


def test_one_poisoned_item_does_not_deny_the_rest_of_a_batch(pdp: Pdp) -> None:
    seen = len(pdp.decisions())
    body = _batch([OK, OK, OK])
    body["evaluations"][1]["context"] = NUL_CONTEXT
    answers = pdp.many(body)
    assert [a["decision"] for a in answers] == [True, False, True], answers
    # the poisoned item is a deny (or an error at its position), and everything is on record
    decided = [a for a in answers if "error" not in a["context"]]
    assert len(pdp.decisions()) - seen == len(decided)
    for answer in decided:
        assert not any("record" in r for r in tether_of(answer)["reasons"])


# ---- never a 500 ---------------------------------------------------------------------------

_json_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
_any_json = st.recursive(
    _json_scalar | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_ids = _any_json | st.sampled_from(
    ["helper", HELPER, "alice@example.com", ALICE, "ghost", "planner", "user:x@y.z"]
)
_resources = _any_json | st.sampled_from([OK, NO, "a//b", "../x", "github/*", "fs/**", HELPER])
_actions = _any_json | st.sampled_from(["tools/call", "delegate", "GET", "*", "tools/call "])
_context = st.dictionaries(
    st.sampled_from(["on_behalf_of", "chain", "token", "chain_depth", "x", "y", ""]) | _text,
    _any_json | st.sampled_from([ALICE, BOB, "alice@example.com", ["helper"], ["ghost"]]),
    max_size=4,
)
_evaluation = st.fixed_dictionaries(
    {},
    optional={
        "subject": st.fixed_dictionaries(
            {"type": _any_json | st.sampled_from(["agent", "user"]), "id": _ids},
            optional={"properties": _any_json},
        )
        | _any_json,
        "action": st.fixed_dictionaries({"name": _actions}) | _any_json,
        "resource": st.fixed_dictionaries(
            {"id": _resources}, optional={"type": _any_json, "properties": _any_json}
        )
        | _any_json,
        "context": _context | _any_json,
    },
)


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code == 400:
        assert set(body) == ERROR_KEYS
        return
    answers = body.get("evaluations", [body])
    for answer in answers:
        assert answer["decision"] in (True, False)
        if "error" in answer["context"]:
            assert answer["decision"] is False
        else:
            tether_of(answer)


@FUZZ
@given(body=_any_json, many=st.booleans())
def test_fuzz_any_json_body_is_never_5xx(pdp: Pdp, body: Any, many: bool) -> None:
    response = pdp.client.post(
        MANY if many else ONE,
        content=json.dumps(body),
        headers={**pdp.admin, "Content-Type": "application/json"},
    )
    _check(response)


@FUZZ
@given(body=_evaluation)
def test_fuzz_near_valid_evaluations_are_never_5xx(pdp: Pdp, body: dict[str, Any]) -> None:
    _check(pdp.post(ONE, body))


@FUZZ
@given(
    top=_evaluation,
    items=st.lists(_evaluation, max_size=6),
    semantic=st.sampled_from(["execute_all", "deny_on_first_deny", "permit_on_first_permit"]),
)
def test_fuzz_batches_are_never_5xx(
    pdp: Pdp, top: dict[str, Any], items: list[dict[str, Any]], semantic: str
) -> None:
    body = {**top, "evaluations": items, "options": {"evaluations_semantic": semantic}}
    response = pdp.post(MANY, body)
    _check(response)
    if response.status_code == 200 and items and semantic == "execute_all":
        assert len(response.json()["evaluations"]) == len(items)
