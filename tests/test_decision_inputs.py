"""Decision inputs (``tether.policy.inputs``): server-computed context keys, how they key
the decision cache, and that no caller may set one, through any face (the PDP, AuthZEN
over HTTP, ``tether authorize`` locally and against a server)."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, Cli, initialised, served, spec
from helpers.uvicorn_thread import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import AccessRequest, GrantSpec, InvalidRequest, Settings, Tether
from tether.detect.risk import RiskInput
from tether.policy.guardrails import Guardrail
from tether.policy.inputs import (
    BUILTIN_INPUTS,
    RESERVED,
    UNCACHABLE,
    Uncachable,
    reserved_names,
)
from tether.policy.pdp import DecisionPoint
from tether.policy.schema import SCHEMA_TEXT
from tether.principals import Principal

ALICE = "user:alice@example.com"
RISKY = '@id("too-risky") forbid (principal, action, resource) when { context.risk > 50 };'
SERVER_COMPUTED = sorted(reserved_names())


class Risk:
    """A server-computed score per acting principal (as behaviour monitoring will give)."""

    name = "risk"
    cedar_type = "Long"

    def __init__(self) -> None:
        self.scores: dict[str, int] = {}
        self.uncachable = False

    def key(self, request: AccessRequest, now: datetime) -> Hashable | Uncachable | None:
        return UNCACHABLE if self.uncachable else self.scores.get(request.principal, 0)

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> int:
        return self.scores.get(request.principal, 0)


class Rails:
    """The store's guardrails and one more, given as is (not validated on the way in)."""

    def __init__(self, tether: Tether, text: str) -> None:
        self._tether, self._text = tether, text

    def list(self) -> list[Guardrail]:
        extra = Guardrail("too-risky", self._text, "test", "test", None)
        return [*self._tether.guardrails.list(), extra]


def _pdp(tether: Tether, risk: Risk, rail: str | None = RISKY) -> DecisionPoint:
    rails: Any = Rails(tether, rail) if rail else tether.guardrails
    return DecisionPoint(tether.services, tether.registry, tether.grants, rails, [risk])


@pytest.fixture
def org(tether: Tether) -> Tether:
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "github/*"))
    return tether


REQUEST = AccessRequest.of("helper", "tools/call", "github/create_issue")


def test_the_schema_context_is_the_builtin_inputs_and_risk() -> None:
    declared = [(i.name, i.cedar_type) for i in BUILTIN_INPUTS]
    declared.append((RiskInput.name, RiskInput.cedar_type))  # the detector's, wired by the core
    record = ", ".join(f"{name}: {kind}" for name, kind in declared)
    assert f"context: {{ {record} }}" in SCHEMA_TEXT
    assert {i.name for i in BUILTIN_INPUTS} == {
        "chain_depth",
        "on_behalf_of",
        "time",
        "hour",
        "args",
        "session",
        "http",
    }
    assert {"risk", "args", "session", "http"} <= RESERVED
    assert reserved_names() == RESERVED | {i.name for i in BUILTIN_INPUTS}


def test_an_input_reaches_cedar_and_keys_the_cache(org: Tether) -> None:
    risk = Risk()
    pdp = _pdp(org, risk)
    first = pdp.decide(REQUEST)
    assert first.allowed and not first.cached
    assert pdp.decide(REQUEST).cached
    risk.scores["helper"] = 90
    risky = pdp.decide(REQUEST)
    assert not risky.allowed and not risky.cached
    assert any("too-risky" in reason for reason in risky.reasons)
    assert pdp.decide(REQUEST).cached  # the same score: the same cache entry
    risk.scores["helper"] = 0
    again = pdp.decide(REQUEST)
    assert again.allowed and again.cached


def test_an_uncachable_input_bypasses_the_cache(org: Tether) -> None:
    risk = Risk()
    risk.uncachable = True
    pdp = _pdp(org, risk)
    for _ in range(3):
        decision = pdp.decide(REQUEST)
        assert decision.allowed
        assert decision.to_dict()["cached"] is False


def test_an_input_no_policy_reads_does_not_key_the_cache(org: Tether) -> None:
    risk = Risk()
    pdp = _pdp(org, risk, rail=None)
    assert not pdp.decide(REQUEST).cached
    risk.scores["helper"] = 90
    assert pdp.decide(REQUEST).cached  # it cannot change the answer


def test_a_failing_input_is_a_deny(org: Tether) -> None:
    class Broken(Risk):
        def value(self, request: AccessRequest, identities: Any, now: datetime) -> int:
            raise RuntimeError("the monitor is down")

    decision = _pdp(org, Broken()).decide(REQUEST)
    assert not decision.allowed
    assert "the monitor is down" in decision.reasons[0]


def test_inputs_are_named_once(org: Tether) -> None:
    with pytest.raises(ValueError, match="share a name"):
        DecisionPoint(org.services, org.registry, org.grants, org.guardrails, [BUILTIN_INPUTS[0]])


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(scores=st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=6))
def test_requests_differing_only_in_an_input_never_share_a_decision(
    org: Tether, scores: list[int]
) -> None:
    """Two requests equal but for the input's value never share a cached decision: each
    answer follows its own value, and comes from the cache only when that value was seen."""
    risk = Risk()
    pdp = _pdp(org, risk)
    seen: set[int] = set()
    for score in scores:
        risk.scores["helper"] = score
        decision = pdp.decide(REQUEST)
        assert decision.allowed == (score <= 50)
        assert decision.cached == (score in seen)
        seen.add(score)


# ---- no caller sets a server-computed key ---------------------------------------------


@pytest.mark.parametrize("key", SERVER_COMPUTED)
def test_the_pdp_refuses_a_server_computed_key(org: Tether, key: str) -> None:
    request = AccessRequest.of("helper", "tools/call", "github/x", context={key: 1})
    with pytest.raises(InvalidRequest, match=repr(key)):
        org.validate(request)
    with pytest.raises(InvalidRequest, match=repr(key)):
        org.pdp.decide(request)


def test_an_added_inputs_name_is_reserved(org: Tether) -> None:
    class Tenant(Risk):
        name = "tenant_risk"

    pdp = DecisionPoint(org.services, org.registry, org.grants, org.guardrails, [Tenant()])
    assert "tenant_risk" in pdp.reserved
    request = AccessRequest.of("helper", "tools/call", "github/x", context={"tenant_risk": 1})
    with pytest.raises(InvalidRequest, match="tenant_risk"):
        pdp.validate(request)


@pytest.fixture
def http(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    with served(make_settings, tmp_path, "https://idp.example.com", ("admins",)) as up:
        yield up


def _ask(**context: Any) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": "helper"},
        "action": {"name": "tools/call"},
        "resource": {"type": "mcp_tool", "id": "github/create_issue"},
        "context": context,
    }


def _refused(response: Any, key: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "invalid_request"
    assert repr(key) in body["error_description"]


@pytest.mark.parametrize("key", ["risk", "args", "session", "time", "hour", "chain_depth"])
def test_authzen_refuses_a_server_computed_key_with_a_400(http: Any, key: str) -> None:
    seen = len(http.tether.events.list(type="decision"))
    one = http.client.post("/access/v1/evaluation", json=_ask(**{key: 1}), headers=http.admin)
    _refused(one, key)
    batch = {
        **_ask(),
        "evaluations": [{}, {"context": {key: {"x": 1}}}, {}],
    }
    _refused(http.client.post("/access/v1/evaluations", json=batch, headers=http.admin), key)
    base = {**_ask(**{key: "x"}), "evaluations": [{}]}
    _refused(http.client.post("/access/v1/evaluations", json=base, headers=http.admin), key)
    assert len(http.tether.events.list(type="decision")) == seen  # nothing decided


def test_authzen_still_takes_its_own_context_keys(http: Any) -> None:
    answer = http.client.post(
        "/access/v1/evaluation", json=_ask(on_behalf_of=ALICE, chain=[]), headers=http.admin
    )
    assert answer.status_code == 200, answer.text


def test_authzen_takes_a_calls_arguments_as_action_properties(http: Any) -> None:
    tether = http.tether
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "github/*"))
    tether.guardrails.add(
        ADMIN,
        '@id("no-etc") forbid (principal, action, resource) '
        'when { context.args has path && context.args.path like "/etc/*" };',
    )

    def ask(args: Any) -> Any:
        body = {**_ask(), "action": {"name": "tools/call", "properties": {"args": args}}}
        return http.client.post("/access/v1/evaluation", json=body, headers=http.admin)

    denied = ask({"path": "/etc/passwd"}).json()["context"]["tether"]
    assert denied["allowed"] is False and denied["policies"] == ["no-etc"]
    assert ask({"path": "/srv/a"}).json()["decision"] is True
    refused = ask(["/etc/passwd"])
    assert refused.status_code == 400 and "action.properties.args" in refused.text


def _authorize(cli: Cli, context: dict[str, Any]) -> tuple[int, str, str]:
    argv = ["authorize", "--principal", "helper", "--action", "tools/call"]
    result: tuple[int, str, str] = cli(
        *argv, "--resource", "github/create_issue", "--context", json.dumps(context)
    )
    return result


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return initialised(Cli(capsys))


@pytest.mark.parametrize("key", ["risk", "args", "session", "time"])
def test_the_cli_refuses_a_server_computed_key_locally(cli: Cli, key: str) -> None:
    code, out, err = _authorize(cli, {key: 1})
    assert code == 2, (out, err)
    assert repr(key) in err and "server-computed" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("key", ["risk", "session", "hour"])
def test_the_cli_refuses_a_server_computed_key_against_a_server(
    http: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    monkeypatch.setenv("TETHER_TOKEN", http.admin["Authorization"].removeprefix("Bearer "))
    seen = len(http.tether.events.list(type="decision"))
    with serving(http.tether) as url:
        monkeypatch.setenv("TETHER_URL", url)
        code, out, err = _authorize(Cli(capsys), {key: 1})
    assert code == 2, (out, err)
    assert repr(key) in err and "server-computed" in err
    assert len(http.tether.events.list(type="decision")) == seen


def test_the_cli_refuses_a_key_with_an_option_of_its_own(cli: Cli) -> None:
    code, out, err = _authorize(cli, {"chain": ["planner"]})
    assert code == 2, (out, err)
    assert "--chain" in err
