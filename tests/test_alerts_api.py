"""``/v1/alerts`` and ``tether alerts``, on both stores: owners see and answer their own
agents' alerts, admins all; errors in the project's JSON form and exit codes; the
metrics; the CLI locally and against a server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, Cli, initialised, served, spec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from helpers.people import person_token
from helpers.uvicorn_thread import serving

from tether import Settings, Tether
from tether.detect.model import Alert, Finding

ISSUER = "https://idp.example.com"
ADMIN_GROUP = "security-admins"
ALICE = "alice@example.com"
BOB = "bob@example.com"
AT = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


def spiffe(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


def raise_(tether: Tether, agent: str, severity: str = "high", seq: int = 1) -> Alert:
    found = Finding(
        detector="first_use",
        severity=severity,  # type: ignore[arg-type]
        agent=agent,
        chain=(f"user:{ALICE}", spiffe(agent)),
        summary=f"{agent} called payments/refund for the first time",
        evidence=(seq,),
        at=AT,
    )
    with tether.store.write() as conn:
        [alert] = tether.alerts.raise_all(conn, [found])
    return alert


@dataclass
class Api:
    client: TestClient
    tether: Tether
    admin: dict[str, str]
    idp_key: Ed25519PrivateKey

    def person(self, email: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {person_token(self.idp_key, email, issuer=ISSUER)}"}

    def get(self, path: str, who: dict[str, str], **params: Any) -> httpx.Response:
        response: httpx.Response = self.client.get(path, headers=who, params=params)
        return response

    def post(self, path: str, who: dict[str, str], body: Any = None) -> httpx.Response:
        response: httpx.Response = self.client.post(path, headers=who, json=body)
        return response


@pytest.fixture
def api(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Api]:
    with served(make_settings, tmp_path, ISSUER, (ADMIN_GROUP,)) as up:
        up.tether.registry.register(ADMIN, spec("helper", owner=ALICE))
        up.tether.registry.register(ADMIN, spec("billing", owner=BOB))
        yield Api(up.client, up.tether, up.admin, up.idp_key)


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == code
    description: str = body["error_description"]
    return description


# ---- HTTP --------------------------------------------------------------------------------


def test_list_and_show_with_filters(api: Api) -> None:
    high = raise_(api.tether, "helper", "high", 1)
    low = raise_(api.tether, "billing", "low", 2)
    everything = api.get("/v1/alerts", api.admin).json()["alerts"]
    assert {a["id"] for a in everything} == {high.id, low.id}
    only = api.get("/v1/alerts", api.admin, severity="low").json()["alerts"]
    assert [a["id"] for a in only] == [low.id]
    by_agent = api.get("/v1/alerts", api.admin, agent="helper").json()["alerts"]
    assert [a["id"] for a in by_agent] == [high.id]
    assert api.get("/v1/alerts", api.admin, state="resolved").json() == {"alerts": []}
    shown = api.get(f"/v1/alerts/{high.id}", api.admin).json()
    assert shown == high.to_dict()
    assert shown["evidence"] == [1] and shown["chain"] == [f"user:{ALICE}", spiffe("helper")]


@pytest.mark.parametrize(
    "params",
    [{"state": "closed"}, {"severity": "dire"}, {"limit": "0"}, {"limit": "x"}, {"agent": "A B"}],
)
def test_bad_filters_are_400(api: Api, params: dict[str, str]) -> None:
    error(api.get("/v1/alerts", api.admin, **params), 400, "invalid_request")


def test_owners_see_and_answer_only_their_own(api: Api) -> None:
    mine = raise_(api.tether, "helper", "high")
    bobs = raise_(api.tether, "billing", "high")
    alice = api.person(ALICE)
    listed = api.get("/v1/alerts", alice).json()["alerts"]
    assert [a["id"] for a in listed] == [mine.id]
    assert api.get(f"/v1/alerts/{mine.id}", alice).status_code == 200
    before = len(api.tether.events.list(type="access.refused"))
    assert f"no alert {bobs.id}" in error(api.get(f"/v1/alerts/{bobs.id}", alice), 404, "not_found")
    error(api.post(f"/v1/alerts/{bobs.id}/ack", alice, {"reason": "mine?"}), 404, "not_found")
    refusals = api.tether.events.list(type="access.refused")[before:]
    assert [e.actor for e in refusals] == [f"user:{ALICE}"] * 2
    assert api.tether.alerts.get(ADMIN, bobs.id).state == "open"
    error(api.get("/v1/alerts/alt_0123456789abcdef", alice), 404, "not_found")
    error(api.get("/v1/alerts/alt_0123456789abcdef", api.admin), 404, "not_found")


def test_ack_by_owner_resolve_of_a_high_one_by_admin_only(api: Api) -> None:
    alert = raise_(api.tether, "helper", "high")
    alice = api.person(ALICE)
    acked = api.post(f"/v1/alerts/{alert.id}/ack", alice)  # no body: no reason needed
    assert acked.status_code == 200, acked.text
    assert (acked.json()["state"], acked.json()["state_by"]) == ("acknowledged", f"user:{ALICE}")
    size = api.tether.events.size()
    refused = api.post(f"/v1/alerts/{alert.id}/resolve", alice, {"reason": "it is fine"})
    assert "only an admin" in error(refused, 403, "access_denied")
    assert api.tether.alerts.get(ADMIN, alert.id).state == "acknowledged"
    assert [e.type for e in api.tether.events.list()][size:] == ["access.refused"]
    done = api.post(f"/v1/alerts/{alert.id}/resolve", api.admin, {"reason": "it is fine"})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["state_reason"]) == ("resolved", "it is fine")
    again = api.post(f"/v1/alerts/{alert.id}/suppress", api.admin, {"reason": "noise"})
    assert "is resolved" in error(again, 409, "invalid_state")
    kinds = [e.type for e in api.tether.events.list() if e.type.startswith("alert.")]
    assert kinds == ["alert.raised", "alert.acknowledged", "alert.resolved"]


@pytest.mark.parametrize(
    "body", [None, {}, {"reason": ""}, {"reason": "  "}, {"reason": "x" * 1001}, {"why": "x"}]
)
def test_a_bad_or_missing_reason_is_400_and_changes_nothing(api: Api, body: Any) -> None:
    alert = raise_(api.tether, "helper", "medium")
    size = api.tether.events.size()
    error(api.post(f"/v1/alerts/{alert.id}/suppress", api.admin, body), 400, "invalid_request")
    assert api.tether.alerts.get(ADMIN, alert.id).state == "open"
    assert api.tether.events.size() == size


def test_an_unknown_answer_is_refused(api: Api) -> None:
    alert = raise_(api.tether, "helper", "low")
    response = api.post(f"/v1/alerts/{alert.id}/reopen", api.admin, {"reason": "x"})
    assert response.status_code in (400, 404, 405)
    assert set(response.json()) == {"error", "error_description"}
    assert api.tether.alerts.get(ADMIN, alert.id).state == "open"


def test_alerts_need_authentication(api: Api) -> None:
    error(api.get("/v1/alerts", {}), 401, "invalid_token")


def test_metrics_count_alerts_by_detector_and_severity_and_the_open_ones(api: Api) -> None:
    raise_(api.tether, "helper", "high", 1)
    low = raise_(api.tether, "billing", "low", 2)
    api.tether.alerts.resolve(ADMIN, low.id, "expected")
    text = api.client.get("/metrics").text
    assert 'tether_alerts_total{detector="first_use",severity="high"} 1' in text
    assert 'tether_alerts_total{detector="first_use",severity="low"} 1' in text
    assert 'tether_alerts_open{severity="high"} 1.0' in text
    assert 'tether_alerts_open{severity="low"} 0.0' in text
    assert "helper" not in text


# ---- the CLI -----------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return initialised(Cli(capsys))


@pytest.fixture
def local(cli: Cli) -> Iterator[Tether]:
    with Tether.open(Settings.from_env()) as tether:
        tether.registry.register(ADMIN, spec("helper", owner=ALICE))
        yield tether


def test_cli_lists_shows_and_answers(cli: Cli, local: Tether) -> None:
    alert = raise_(local, "helper", "high")
    listed = cli.json("alerts", "list", "--severity", "high")
    assert [a["id"] for a in listed["alerts"]] == [alert.id]
    assert cli.json("alerts", "list", "--state", "resolved") == {"alerts": []}
    assert cli.json("alerts", "show", alert.id)["summary"] == alert.summary
    code, out, _ = cli("alerts", "list")
    assert code == 0 and alert.id in out and "first_use" in out
    code, out, _ = cli("alerts", "show", alert.id)
    assert code == 0 and "tether audit explain" in out
    acked = cli.json("alerts", "ack", alert.id)
    assert acked["state"] == "acknowledged"
    code, out, err = cli("alerts", "resolve", alert.id)  # no reason
    assert code == 2 and "a reason is required" in err
    assert local.alerts.get(ADMIN, alert.id).state == "acknowledged"
    done = cli.json("alerts", "suppress", alert.id, "--reason", "a load test")
    assert (done["state"], done["state_reason"], done["state_by"]) == (
        "suppressed",
        "a load test",
        "admin",
    )
    code, _, err = cli("alerts", "ack", alert.id)
    assert code == 3 and "is suppressed" in err


def test_cli_unknown_id_is_exit_1(cli: Cli, local: Tether) -> None:
    for argv in (("show",), ("ack",), ("resolve", "--reason", "x")):
        code, out, err = cli("alerts", *argv[:1], "alt_0123456789abcdef", *argv[1:], "--json")
        assert code == 1, (argv, out, err)
        assert json.loads(out)["error"] == "not_found"
        assert "no alert alt_0123456789abcdef" in err


def test_cli_against_a_server(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = raise_(api.tether, "helper", "critical")
    monkeypatch.setenv("TETHER_TOKEN", api.admin["Authorization"].removeprefix("Bearer "))
    with serving(api.tether) as url:
        monkeypatch.setenv("TETHER_URL", url)
        cli = Cli(capsys)
        assert [a["id"] for a in cli.json("alerts", "list")["alerts"]] == [alert.id]
        resolved = cli.json("alerts", "resolve", alert.id, "--reason", "false positive")
        assert resolved["state"] == "resolved"
        code, _, err = cli("alerts", "show", "alt_ffffffffffffffff")
        assert code == 1 and "no alert" in err
    assert api.tether.risk.score("helper") == 0
