"""Regression tests for issue 13 items 7, 9, 10, 11 and 16 (the admin API's hardening).

Each ``test_item_NN_*`` fails on the code before the fix and passes after it; store-backed
ones run on SQLite and PostgreSQL through the ``db_url`` fixture."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import ADMIN, Cli, Served, served, spec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.people import person_token
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm

from tether import GrantSpec, InvalidRequest, Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.audit.record import Entry
from tether.permissions import check_pattern, is_broad, pattern_matches

ISSUER = "https://idp.example.com"
ADMIN_GROUP = "security-admins"
ALICE = "alice@example.com"
BOB = "bob@example.com"
MIB = 1024 * 1024


def _idp_token(key: Ed25519PrivateKey, email: str) -> str:
    """A person's token from the test IdP (kid ``idp-1``), for the admin API."""
    return person_token(key, email, issuer=ISSUER, iat=None)


def person(up: Served, email: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {_idp_token(up.idp_key, email)}"}


def _cli_with_idp(home: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Cli, Ed25519PrivateKey]:
    """The CLI in local mode on a new ``home`` that trusts a test IdP (whose key is returned):
    TETHER_TOKEN set to a person's token makes the CLI act as that person."""
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    home.mkdir()
    jwks = home / "idp.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "idp-1"}]}), encoding="utf-8")
    (home / "tether.toml").write_text(
        f'[[idp]]\nissuer = "{ISSUER}"\naudience = "tether"\njwks_file = "{jwks}"\n',
        encoding="utf-8",
    )
    cli = Cli(capsys)
    assert cli("init")[0] == 0
    return cli, key


def _register(up: Served, name: str, owner: str) -> None:
    body = {"name": name, "owner": owner, "public_key": generate_key_pair().public_key}
    assert up.client.post("/v1/agents", json=body, headers=up.admin).status_code == 201


def error_of(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error, body
    description: str = body["error_description"]
    return description


@pytest.fixture
def up(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Served]:
    with served(make_settings, tmp_path, ISSUER, (ADMIN_GROUP,)) as served_:
        yield served_


# ---- item 7: a request body limit on every route, before authentication --------------------


def _chunks(size: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked transfer encoding), ``size`` bytes."""
    sent = 0
    while sent < size:
        piece = min(1024, size - sent)
        sent += piece
        yield b"x" * piece


@pytest.mark.parametrize(
    "path",
    [
        "/v1/agents",
        "/v1/grants",
        "/oauth2/token",
        "/access/v1/evaluation",
        "/v1/credentials",
        "/mcp/anything",
    ],
)
def test_item_07_an_oversized_body_is_413_before_authentication(
    up: Served, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    authenticate = up.tether.authenticate

    def counted(*args: Any, **kwargs: Any) -> Any:
        ran.append("authenticate")
        return authenticate(*args, **kwargs)

    monkeypatch.setattr(up.tether, "authenticate", counted)
    before = up.tether.events.size()
    big = b"x" * (MIB + 1)  # the default limit
    declared = up.client.post(path, content=big, headers={"Content-Type": "application/json"})
    assert "larger than the limit" in error_of(declared, 413, "request_too_large")
    assert declared.headers.get("x-request-id")
    chunked = up.client.post(
        path, content=_chunks(2 * MIB), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in {k.lower() for k in chunked.request.headers}
    error_of(chunked, 413, "request_too_large")
    lying = up.client.post(path, content=_chunks(MIB + 10), headers={"Content-Length": "10"})
    assert lying.status_code in (400, 413)
    assert ran == []  # no authentication work was done
    assert up.tether.events.size() == before  # and nothing was recorded: no handler ran


def test_item_07_a_body_within_the_limit_still_works(
    make_settings: Callable[..., Settings], tmp_path: Path, home: Path
) -> None:

    limit = 4096
    (home / "tether.toml").write_text(f"max_request_bytes = {limit}\n", encoding="utf-8")
    with served(make_settings, tmp_path, ISSUER) as up:
        _within_and_beyond(up, limit)


def _within_and_beyond(up: Served, limit: int) -> None:
    body = {"name": "small", "owner": ALICE, "public_key": generate_key_pair().public_key}
    assert up.client.post("/v1/agents", json=body, headers=up.admin).status_code == 201
    padded = json.dumps(
        {
            **body,
            "name": "chunked",
            "public_key": generate_key_pair().public_key,
            "purpose": "p" * 900,
        }
    ).encode()
    assert len(padded) < limit
    answer = up.client.post(
        "/v1/agents",
        content=iter([padded[:500], padded[500:]]),
        headers={**up.admin, "Content-Type": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    # unauthenticated and small: the ordinary 401, on record
    before = up.tether.events.size()
    assert up.client.post("/v1/agents", json=body).status_code == 401
    assert up.tether.events.size() == before + 1
    # the configured limit, not the default, is the one enforced
    error_of(up.client.post("/v1/agents", content=b"x" * (limit + 1)), 413, "request_too_large")


def test_item_07_the_default_limit_is_one_mebibyte() -> None:
    assert Settings().max_request_bytes == 1024 * 1024


# ---- item 9: "broad" is any wildcard in the server segment -------------------------------

_SERVER = st.text(alphabet="*ae-_.x", min_size=1, max_size=6).filter(
    lambda t: "**" not in t and t not in (".", "..")
)
_NAME = st.one_of(st.just("*"), st.text(alphabet="akz_*", min_size=1, max_size=4)).filter(
    lambda t: "**" not in t
)


def _fill(pattern: str, server_fill: str) -> str:
    """A concrete resource inside ``pattern``: wildcards in the server segment become
    ``server_fill``, those in later segments ``k``."""
    first, *rest = pattern.split("/")
    return "/".join([first.replace("*", server_fill), *(s.replace("*", "k") for s in rest)])


@hsettings(max_examples=300, deadline=None)
@given(
    _SERVER,
    st.lists(_NAME, max_size=3),
    st.sampled_from(["tools/call", "resources/read", "GET", "*"]),
)
def test_item_09_broad_means_a_wildcard_in_the_server_segment(
    first: str, rest: list[str], action: str
) -> None:
    pattern = check_pattern(action, "/".join([first, *rest]))
    assert is_broad(action, pattern) == (action == "*" or "*" in first)
    if "*" in first:  # it reaches two servers: fill its wildcards two ways, both match
        one, two = _fill(pattern, "p"), _fill(pattern, "q")
        assert one.split("/")[0] != two.split("/")[0]
        assert pattern_matches(pattern, one) and pattern_matches(pattern, two)
    else:  # everything it matches is on the one server it names
        inside = _fill(pattern, "")
        assert pattern_matches(pattern, inside)
        for other in (f"{first}x", f"x{first}", "other"):
            assert not pattern_matches(pattern, "/".join([other, *inside.split("/")[1:]]))


def test_item_09_the_issues_examples_are_broad() -> None:
    for pattern in ("*e*/*", "*-*/*", "*_*/**", "*", "**", "*/x", "gh*/x"):
        assert is_broad("tools/call", pattern), pattern
    for pattern in ("github/*", "fs/docs/**", "github/*e*", "spiffe://tether.local/agent/a"):
        assert not is_broad("tools/call", pattern), pattern


@pytest.mark.parametrize("resource", ["*e*/*", "*-*/*", "*_*/*", "gh*/x"])
def test_item_09_wildcards_inside_the_first_segment_make_a_grant_broad(
    tether: Tether, resource: str
) -> None:
    tether.registry.register(ADMIN, spec("helper"))
    narrow = GrantSpec(principal="helper", action="tools/call", resource=resource)
    with pytest.raises(InvalidRequest, match="broad grant"):
        tether.grants.add(ADMIN, narrow)
    allowed = GrantSpec(
        principal="helper",
        action="tools/call",
        resource=resource,
        allow_broad=True,
        reason="incident 42",
    )
    added = tether.grants.add(ADMIN, allowed)
    assert added.broad is True
    assert [r.grant.id for r in tether.reports.grants(ADMIN, broad=True)] == [added.id]
    # a grant stored as not broad under the old rule is broad when read back
    with tether.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE grants SET broad = :f"), {"f": False})
    [report] = tether.reports.grants(ADMIN, broad=True)
    assert report.grant.id == added.id and report.suggestion == "narrow: a broad grant"


# ---- item 10: an admin's suspension is an admin hold ---------------------------------------


def _state(up: Served, name: str) -> str:
    state: str = up.client.get(f"/v1/agents/{name}", headers=up.admin).json()["state"]
    return state


def _resume(up: Served, name: str, headers: dict[str, str]) -> httpx.Response:
    return up.client.patch(f"/v1/agents/{name}", json={"state": "active"}, headers=headers)


def _suspend(up: Served, name: str, headers: dict[str, str]) -> httpx.Response:
    return up.client.patch(f"/v1/agents/{name}", json={"state": "suspended"}, headers=headers)


def test_item_10_the_owner_cannot_lift_an_admin_hold(up: Served) -> None:
    alice = person(up, ALICE)
    _register(up, "held", ALICE)
    assert _suspend(up, "held", up.admin).status_code == 200
    before = up.tether.events.size()
    why = error_of(_resume(up, "held", alice), 403, "access_denied")
    assert "admin hold" in why
    assert _state(up, "held") == "suspended"
    shown = up.client.get("/v1/agents/held", headers=up.admin).json()
    assert shown["held_by"] == "admin"  # the hold is visible, and whose it is
    [refusal] = up.tether.events.list(type="access.refused", after=before)
    assert refusal.actor == f"user:{ALICE}" and "admin hold" in (refusal.reason or "")
    assert up.tether.events.list(type="agent.resumed") == []
    # the admin lifts it; after that the owner's own suspension is the owner's to lift
    assert _resume(up, "held", up.admin).status_code == 200
    assert _state(up, "held") == "active"
    assert up.client.get("/v1/agents/held", headers=up.admin).json()["held_by"] is None
    assert _suspend(up, "held", alice).status_code == 200
    assert _resume(up, "held", alice).status_code == 200
    assert _state(up, "held") == "active"
    # an admin can turn an owner's suspension into a hold
    assert _suspend(up, "held", alice).status_code == 200
    assert _suspend(up, "held", up.admin).status_code == 200
    error_of(_resume(up, "held", alice), 403, "access_denied")
    assert _state(up, "held") == "suspended"


def test_item_10_the_cli_refuses_the_owner_with_exit_3(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli, key = _cli_with_idp(cli_env, capsys)
    assert cli("agent", "register", "held", "--owner", ALICE)[0] == 0
    assert cli("agent", "suspend", "held", "--reason", "investigating")[0] == 0
    monkeypatch.setenv("TETHER_TOKEN", _idp_token(key, ALICE))
    code, out, err = cli("agent", "resume", "held")
    assert code == 3, (code, out, err)
    assert "admin hold" in err and "Traceback" not in out + err
    monkeypatch.delenv("TETHER_TOKEN")
    assert cli.json("agent", "show", "held")["state"] == "suspended"
    assert cli.json("agent", "resume", "held")["state"] == "active"


# ---- item 11: refusals are rate-limited per caller, counted, never silently dropped -------


def test_item_11_one_callers_flood_neither_fills_the_log_nor_hides_another_caller(
    up: Served,
) -> None:
    from fastapi.testclient import TestClient

    from tether.api import create_app
    from tether.audit.throttle import Refusals

    now = [0.0]
    up.tether.refusals.buckets = Refusals(rate=1.0, burst=5, clock=lambda: now[0])
    _register(up, "bob-bot", BOB)
    before = up.tether.events.size()
    alice, carol = person(up, ALICE), person(up, "carol@example.com")
    for _ in range(40):  # an authenticated flood: someone else's agent, refused
        assert up.client.get("/v1/agents/bob-bot", headers=alice).status_code == 404
    for _ in range(40):  # an unauthenticated flood from one address
        assert up.client.get("/v1/agents").status_code == 401
    assert up.client.get("/v1/agents/bob-bot", headers=carol).status_code == 404
    elsewhere = TestClient(create_app(up.tether), client=("203.0.113.9", 4000))
    assert elsewhere.get("/v1/agents").status_code == 401
    refused = up.tether.events.list(type="access.refused", after=before)
    by_actor: dict[str, int] = {}
    for event in refused:
        by_actor[event.actor] = by_actor.get(event.actor, 0) + 1
    # five each for the flooders; the others' refusals are on record all the same
    assert by_actor == {f"user:{ALICE}": 5, "user:carol@example.com": 1, "anonymous": 6}
    assert refused[-1].actor == "anonymous" and refused[-2].actor == "user:carol@example.com"
    # what was only counted is counted: a metric now, and on record once the buckets refill
    metrics = up.client.get("/metrics").text
    assert "tether_refusals_suppressed_total 70\n" in metrics
    now[0] += 10.0
    assert up.client.get("/v1/agents/bob-bot", headers=carol).status_code == 404
    summaries = {
        (e.detail["caller"], e.detail["suppressed"])
        for e in up.tether.events.list(type="access.refused", after=refused[-1].seq)
        if e.detail.get("op") == "refusals.suppressed"
    }
    assert summaries == {(f"user:{ALICE}", 35), ("anonymous@testclient", 35)}
    # the flooder's own next refusal is recorded again
    assert up.client.get("/v1/agents/bob-bot", headers=alice).status_code == 404
    assert up.tether.events.list(type="access.refused")[-1].actor == f"user:{ALICE}"


def test_item_11_counts_survive_forgetting_a_caller_and_closing() -> None:
    from tether.audit.throttle import Refusals

    now = [0.0]
    buckets = Refusals(rate=1.0, burst=1, clock=lambda: now[0], max_callers=2)
    assert [buckets.take("a") for _ in range(4)] == [0, None, None, None]
    assert buckets.settled() == []  # a's bucket is still empty: nothing due yet
    assert buckets.take("b") == 0 and buckets.take("c") == 0  # "a" is forgotten...
    assert buckets.settled() == [("a", 3)]  # ...with its count handed out to record
    assert buckets.take("b") is None
    assert buckets.settled(skip="b") == []
    assert buckets.settled(force=True) == [("b", 1)]  # at close, whatever is pending


# ---- item 16: upstream definitions are for admins and the server's owner ------------------

SECRET_LOOKING = ("--token-file", "/etc/files/token", "API_BASE", "internal.example", "env:GH")


def test_item_16_upstream_definitions_are_shown_to_admins_and_the_owner_only(
    up: Served,
) -> None:
    server = {
        "name": "files",
        "command": "python -m files_server --token-file /etc/files/token",
        "env": ["API_BASE=https://internal.example"],
        "credentials": ["TOKEN=env:GH"],
        "owner": ALICE,
    }
    added = up.client.post("/v1/gateway/servers", json=server, headers=up.admin)
    assert added.status_code == 201, added.text
    resource = added.json()["resource"]
    for who, headers in (("admin", up.admin), ("owner", person(up, ALICE))):
        [listed] = up.client.get("/v1/gateway/servers", headers=headers).json()["servers"]
        shown = up.client.get("/v1/gateway/servers/files", headers=headers).json()
        for view in (listed, shown):
            assert view["command"][-1] == "/etc/files/token", who
            assert view["env"] == {"API_BASE": "https://internal.example"}, who
            assert view["credentials"][0]["ref"] == "env:GH", who
        assert "pins" in shown
    other = person(up, BOB)
    [listed] = up.client.get("/v1/gateway/servers", headers=other).json()["servers"]
    shown = up.client.get("/v1/gateway/servers/files", headers=other)
    assert shown.status_code == 200
    for view in (listed, shown.json()):
        assert view == {"name": "files", "transport": "stdio", "resource": resource}
        assert not any(text in json.dumps(view) for text in SECRET_LOOKING)
    # without a token: nothing at all
    assert up.client.get("/v1/gateway/servers").status_code == 401


def test_item_16_the_cli_list_hides_the_definition_from_another_user(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli, key = _cli_with_idp(cli_env, capsys)
    code, out, err = cli(
        "gateway",
        "add",
        "files",
        "--command",
        "python -m files_server --token-file /etc/files/token",
        "--env",
        "API_BASE=https://internal.example",
        "--credential",
        "TOKEN=env:GH",
    )
    assert code == 0, (out, err)
    monkeypatch.setenv("TETHER_TOKEN", _idp_token(key, BOB))
    for argv in (("gateway", "list"), ("gateway", "list", "--json")):
        code, out, err = cli(*argv)
        assert code == 0 and "files" in out and "Traceback" not in out + err, (out, err)
        assert not any(text in out for text in SECRET_LOOKING), out


def test_item_11_an_ipv6_host_gets_one_bucket_for_its_whole_64() -> None:
    from tether.audit.throttle import CLIENT_ADDRESS, RefusalLog, Refusals

    recorded: list[dict[str, Any]] = []

    class Log:
        def record(self, *entries: Entry) -> list[int]:
            recorded.extend({"detail": dict(e.detail)} for e in entries)
            return list(range(len(entries)))

    refusals = RefusalLog(Log(), Refusals(rate=0.0, burst=1))  # type: ignore[arg-type]
    for address in ("2001:db8::1", "2001:db8::2:3", "2001:db8:0:1::1", "192.0.2.1"):
        token = CLIENT_ADDRESS.set(address)
        try:
            refusals.record("anonymous", "missing bearer token", "authenticate")
        finally:
            CLIENT_ADDRESS.reset(token)
    assert len(recorded) == 3  # the second address shares the first one's /64
    refusals.flush()
    assert recorded[-1]["detail"] == {
        "op": "refusals.suppressed",
        "suppressed": 1,
        "caller": "anonymous@2001:db8::/64",
    }
