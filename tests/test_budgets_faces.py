"""The faces of budgets and approval on grants: ``tether grant add --limit ... --approval
...``, the body of ``POST /v1/grants``, ``grant list``, and a refusal that ``tether authorize``
and ``tether audit explain`` show with its reset time. Bad input changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli, initialised
from fastapi.testclient import TestClient

from tether import Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.api import create_app

BAD_LIMITS = [
    (["calls=100"], "invalid limit 'calls=100': use METRIC=AMOUNT/WINDOW"),
    (["time=5/1m"], "the metric is one of calls, bytes"),
    (["calls=5MB/1m"], "calls takes no unit"),
    (["bytes=0/1h"], "the amount must be from 1 to 2^53-1"),
    (["calls=5/1y"], "invalid limit 'calls=5/1y'"),
    (["calls=1/1m", "calls=2/1m"], "a limit names the same metric and window twice"),
    (["calls=1/1m", "calls=1/2m", "calls=1/3m", "calls=1/4m", "calls=1/5m"], "at most 4 limits"),
]


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    c = initialised(Cli(capsys))
    c.json("agent", "register", "helper", "--owner", "alice@example.com")
    return c


def add(cli: Cli, *extra: str, expect: int = 0):
    argv = ("grant", "add", "helper", "--action", "tools/call", "--resource", "github/issue")
    return cli.json(*argv, *extra, expect=expect)


def test_grant_add_takes_limits_and_approval_and_lists_them(cli: Cli) -> None:
    grant = add(cli, "--limit", "calls=100/1m", "--limit", "bytes=10MB/1h", "--approval", "owner")
    assert grant["limits"] == ["calls=100/1m", "bytes=10MB/1h"]
    assert grant["approval"] == "owner"
    [listed] = cli.json("grant", "list")["grants"]
    assert listed["limits"] == grant["limits"] and listed["approval"] == "owner"
    code, out, _ = cli("grant", "list")
    assert code == 0
    assert "limit calls=100/1m, bytes=10MB/1h" in out and "approval by owner" in out
    [event] = [e for e in cli.json("audit", "search")["events"] if e["type"] == "grant.added"]
    assert event["detail"]["limits"] == grant["limits"]
    assert event["detail"]["approval"] == "owner"
    plain = add(cli)
    assert plain["limits"] == [] and plain["approval"] is None


@pytest.mark.parametrize(("limits", "said"), BAD_LIMITS)
def test_a_bad_limit_is_a_usage_error_and_nothing_is_stored(
    cli: Cli, limits: list[str], said: str
) -> None:
    argv = [a for limit in limits for a in ("--limit", limit)]
    code, out, err = cli(
        "grant", "add", "helper", "--action", "tools/call", "--resource", "x/y", *argv
    )
    assert code == 2 and said in err and "Traceback" not in out + err
    assert said in add(cli, *argv, expect=2)["error_description"]
    assert cli.json("grant", "list")["grants"] == []
    assert not [e for e in cli.json("audit", "search")["events"] if e["type"] == "grant.added"]


def test_a_bad_approval_is_a_usage_error(cli: Cli) -> None:
    doc = add(cli, "--approval", "manager", expect=2)
    assert doc["error_description"] == "approval is one of owner, admin, not 'manager'"
    assert cli.json("grant", "list")["grants"] == []


def test_a_budget_refusal_is_explained_with_its_reset_time(cli: Cli) -> None:
    g = add(cli, "--limit", "calls=2/1d")["id"]
    argv = ("authorize", "--principal", "helper", "--action", "tools/call")
    argv += ("--resource", "github/issue")
    for left in (1, 0):
        allowed = cli.json(*argv)
        assert allowed["allowed"]
        assert f"budget of grant {g}: calls=2/1d has {left} left until " in allowed["reasons"][-1]
    refused = cli.json(*argv, expect=3)
    [reason] = refused["reasons"]
    assert reason.startswith(f"budget exhausted: grant {g} allows calls=2/1d; 0 left until ")
    assert reason.endswith("s)") and "T00:00:00Z (in " in reason
    code, out, _ = cli("audit", "explain", str(refused["seq"]))
    assert code == 0
    assert "decision: deny" in out and f"because {reason}" in out
    explained = cli.json("audit", "explain", str(refused["seq"]))
    assert explained["detail"]["budget"][0]["left"] == 0


@pytest.fixture
def api(make_settings) -> TestClient:
    settings: Settings = make_settings()
    tether, result = Tether.init(settings)
    client = TestClient(create_app(tether), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {result.admin_token}"
    key = generate_key_pair().public_key
    body = {"name": "helper", "owner": "alice@example.com", "public_key": key}
    assert client.post("/v1/agents", json=body).status_code == 201
    yield client
    client.close()
    tether.close()


def grant_body(**extra) -> dict:
    return {"principal": "helper", "action": "tools/call", "resource": "github/issue"} | extra


def test_the_api_takes_limits_and_approval(api: TestClient) -> None:
    made = api.post("/v1/grants", json=grant_body(limits=["calls=5/1h"], approval="admin"))
    assert made.status_code == 201, made.text
    assert made.json()["limits"] == ["calls=5/1h"] and made.json()["approval"] == "admin"
    [listed] = api.get("/v1/grants").json()["grants"]
    assert listed["limits"] == ["calls=5/1h"] and listed["approval"] == "admin"


@pytest.mark.parametrize(
    "extra",
    [
        {"limits": ["calls=5/1h", "calls=9"]},
        {"limits": "calls=5/1h"},
        {"limits": [5]},
        {"approval": "anyone"},
        {"approval": 1},
    ],
)
def test_bad_api_limits_or_approval_are_400_and_store_nothing(api: TestClient, extra) -> None:
    before = api.get("/v1/audit/events").json()
    refused = api.post("/v1/grants", json=grant_body(**extra))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_request"
    assert api.get("/v1/grants").json()["grants"] == []
    after = api.get("/v1/audit/events").json()
    assert not [e for e in after["events"] if e["type"] == "grant.added"]
    assert len(after["events"]) == len(before["events"])


def test_the_parsers_message_reaches_the_api(api: TestClient) -> None:
    refused = api.post("/v1/grants", json=grant_body(limits=["calls=9"]))
    assert refused.json()["error_description"] == (
        "invalid limit 'calls=9': use METRIC=AMOUNT/WINDOW, e.g. calls=100/1m or bytes=10MB/1h"
    )
