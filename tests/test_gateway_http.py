"""The gateway's HTTP face, with the official MCP SDK client over streamable HTTP in both
protocol modes, in front of a real SDK server over stdio: 401 with the RFC 9728 pointer,
listing and calling only what the token allows, a suspended agent refused mid-session."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import spec
from helpers.gateway_paths import make_settings  # noqa: F401  (each test on both paths)
from helpers.mcp_wire import CALL, INIT, mcp_headers
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tether.api import create_app
from tether.callers import Caller
from tether.core import Tether
from tether.grants import GrantSpec
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
BASE = "http://testserver"


@pytest.fixture
def org(tether: Tether, tmp_path: Path) -> tuple[Tether, str, Path]:
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
    tether.upstreams.add(ADMIN, UpstreamSpec("other", command=f"{sys.executable} {SERVER}"))
    tether.registry.register(ADMIN, spec("helper"))
    for tool in ("echo", "env_digest"):
        tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", f"test/{tool}"))
    token = _token(tether)
    return tether, token, tmp_path


def _token(tether: Tether, name: str = "helper") -> str:
    """A client-credentials token of agent ``name`` for /mcp/test."""
    agent = tether.registry.get(ADMIN, name)
    resource = f"{tether.settings.issuer}/mcp/test"
    return tether.tokens.client_credentials(agent, resource, None, None).access_token


async def _served(tether: Tether, work: Any) -> Any:
    app = create_app(tether)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        return await work(transport)


@asynccontextmanager
async def _connect(
    transport: Any, token: str, mode: str = "auto", session_ids: list[str] | None = None
) -> AsyncIterator[Client]:
    """The official SDK client on ``/mcp/test`` of the served app, with ``token``; the
    ``Mcp-Session-Id`` the server hands it goes to ``session_ids`` (as seen on the wire)."""
    headers = {"Authorization": f"Bearer {token}"}

    async def seen(response: Any) -> None:
        sid = response.headers.get("mcp-session-id")
        if session_ids is not None and sid and sid not in session_ids:
            session_ids.append(sid)

    hooks = {"response": [seen]}
    async with (
        httpx2.AsyncClient(
            transport=transport, base_url=BASE, headers=headers, event_hooks=hooks
        ) as http,
        Client(streamable_http_client(f"{BASE}/mcp/test", http_client=http), mode=mode) as c,
    ):
        yield c


def _closed(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The sessions the gateway says (in its log, as an operator reads it) it closed, by
    the 8-character prefix it logs."""
    return [
        str(r.args[0]) for r in caplog.records if r.getMessage().startswith("closed MCP session")
    ]


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.slow
def test_an_agent_sees_and_calls_only_what_it_may(org, mode: str) -> None:
    tether, token, tmp_path = org
    note = tmp_path / "note.txt"

    async def work(transport: Any) -> None:
        async with _connect(transport, token, mode) as c:
            tools = await c.list_tools()
            assert sorted(t.name for t in tools.tools) == ["echo", "env_digest"]
            said = await c.call_tool("echo", {"text": "through tether"})
            assert not said.is_error and _text(said) == "through tether"
            denied = await c.call_tool("write_note", {"path": str(note), "text": "x"})
            assert denied.is_error and "denied" in _text(denied)
            await anyio.to_thread.run_sync(tether.registry.suspend, ADMIN, "helper")
            with pytest.raises(MCPError):  # the very next call: 401, the token is dead
                await c.call_tool("echo", {"text": "again"})

    anyio.run(_served, tether, work)
    assert not note.exists()
    decisions = [(e.resource, e.decision) for e in tether.events.list(type="decision")]
    assert decisions == [("test/echo", "allow"), ("test/write_note", "deny")]
    refused = tether.events.list(type="tool.refused")  # the call (and the session's close)
    assert refused and all("not active" in e.reason for e in refused), refused


def test_no_token_a_forged_one_or_one_for_another_server_gets_401(org) -> None:
    tether, token, _ = org
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    async def work(transport: Any) -> list[httpx2.Response]:
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            answers = [
                await http.post("/mcp/test", json=body),
                await http.post(
                    "/mcp/test", json=body, headers={"Authorization": f"Bearer {forged}"}
                ),
                await http.post(
                    "/mcp/other", json=body, headers={"Authorization": f"Bearer {token}"}
                ),
                await http.get("/.well-known/oauth-protected-resource/mcp/test"),
                await http.post(
                    "/mcp/nope", json=body, headers={"Authorization": f"Bearer {token}"}
                ),
            ]
            return answers

    *refused, metadata, missing = anyio.run(_served, tether, work)
    issuer = tether.settings.issuer
    for answer in refused:
        assert answer.status_code == 401
        challenge = answer.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
        assert answer.json()["error"] == "invalid_token"
    assert (
        f'resource_metadata="{issuer}/.well-known/oauth-protected-resource/mcp/test"'
        in (refused[0].headers["www-authenticate"])
    )
    assert metadata.status_code == 200
    doc = metadata.json()
    assert doc["resource"] == f"{issuer}/mcp/test"
    assert doc["authorization_servers"] == [issuer]
    assert "tools/call:test/*" in doc["scopes_supported"]
    assert missing.status_code == 404


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.slow
def test_resources_and_prompts_are_enforced_too(org, mode: str) -> None:
    tether, _, _ = org
    tether.grants.add(ADMIN, GrantSpec("helper", "resources/read", "test/note:/=/welcome"))
    tether.grants.add(ADMIN, GrantSpec("helper", "prompts/get", "test/summarise"))
    token = _token(tether)

    async def work(transport: Any) -> None:
        async with _connect(transport, token, mode) as c:
            resources = await c.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["note://welcome"]
            read = await c.read_resource("note://welcome")
            assert read.contents[0].text == "welcome to the test server"
            with pytest.raises(MCPError, match="denied"):
                await c.read_resource("note://payroll")
            prompts = await c.list_prompts()
            assert [p.name for p in prompts.prompts] == ["summarise"]
            got = await c.get_prompt("summarise", {"topic": "audits"})
            assert "audits" in got.messages[0].content.text
            with pytest.raises(MCPError, match="denied"):
                await c.get_prompt("exfiltrate", {"target": "evil.example"})

    anyio.run(_served, tether, work)
    decided = [(e.action, e.resource, e.decision) for e in tether.events.list(type="decision")]
    assert decided == [
        ("resources/read", "test/note:/=/welcome", "allow"),
        ("resources/read", "test/note:/=/payroll", "deny"),
        ("prompts/get", "test/summarise", "allow"),
        ("prompts/get", "test/exfiltrate", "deny"),
    ]


@pytest.mark.slow
def test_an_upstream_that_dies_is_started_again_on_the_next_call(org) -> None:
    tether, _, _ = org
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/crash"))
    token = _token(tether)

    async def work(transport: Any) -> None:
        async with _connect(transport, token) as c:
            died = await c.call_tool("crash", {})
            assert died.is_error and "the upstream failed" in _text(died)
            again = await c.call_tool("echo", {"text": "still here"})
            assert not again.is_error and _text(again) == "still here"

    anyio.run(_served, tether, work)
    results = [(e.resource, e.detail["outcome"]) for e in _recorded(tether)]
    assert ("test/crash", "failed") in results and ("test/echo", "ok") in results


def _recorded(tether: Tether) -> list[Any]:
    tether.events.flush()  # results ride along with later commits
    return tether.events.list(type="tool.result")


@pytest.mark.slow
def test_a_kill_closes_the_agents_open_sessions_and_says_how_many(org, caplog) -> None:
    """A legacy-mode session (Mcp-Session-Id) of the killed agent is terminated by the kill
    itself, and the kill says so."""
    tether, token, _ = org
    caplog.set_level(logging.INFO, logger="tether.gateway")

    async def work(transport: Any) -> int:
        session_ids: list[str] = []
        async with _connect(transport, token, "legacy", session_ids) as c:
            said = await c.call_tool("echo", {"text": "before"})
            assert not said.is_error
            [session_id] = session_ids
            assert _closed(caplog) == []
            report = await anyio.to_thread.run_sync(
                lambda: tether.killswitch.kill(ADMIN, "helper", reason="test")
            )
            # closed by the kill, before it returned
            assert _closed(caplog) == [session_id[:8]]
            with pytest.raises(MCPError):
                await c.call_tool("echo", {"text": "after"})
        return report.sessions_closed

    assert anyio.run(_served, tether, work) == 1
    [completed] = tether.events.list(type="kill.completed")
    assert completed.detail["sessions_closed"] == 1


@pytest.mark.slow
def test_a_suspension_elsewhere_closes_the_session_when_the_epoch_moves(org, caplog) -> None:
    """Not only kills in this process: any change that makes the session's token fail
    (here a suspension, as another process would make it) closes the session at the next
    epoch check."""
    tether, token, _ = org
    caplog.set_level(logging.INFO, logger="tether.gateway")

    async def work(transport: Any) -> None:
        face = _face(transport.app)
        session_ids: list[str] = []
        async with _connect(transport, token, "legacy", session_ids) as c:
            await c.call_tool("echo", {"text": "before"})
            [session_id] = session_ids
            await anyio.to_thread.run_sync(tether.registry.suspend, ADMIN, "helper")
            with anyio.fail_after(10):
                while session_id[:8] not in _closed(caplog):
                    await anyio.sleep(0.05)
            assert not face.sessions._open

    anyio.run(_served, tether, work)


def _face(app: Any) -> Any:
    from tether.gateway.http import McpFace

    for route in app.routes:
        inner = getattr(route, "app", None)
        if isinstance(inner, McpFace):
            return inner
    raise AssertionError("no MCP face mounted")


def test_a_session_is_its_openers_alone_and_ends_when_they_delete_it(org) -> None:
    """Another agent naming a session gets 404 as for an unknown one (on either path);
    the owner's DELETE ends it; the lean path sends nothing outside an answer (GET 405)."""
    tether, token, _ = org
    tether.registry.register(ADMIN, spec("intruder"))
    tether.grants.add(ADMIN, GrantSpec("intruder", "tools/call", "test/echo"))
    intruder = _token(tether, "intruder")
    init = json.dumps(INIT).encode()
    call = json.dumps(CALL).encode()
    json_body = {"Content-Type": "application/json"}

    async def work(transport: Any) -> list[int]:
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
            opened = await http.post(
                "/mcp/test", content=init, headers=mcp_headers(token) | json_body
            )
            sid = opened.headers["mcp-session-id"]
            theirs = await http.post(
                "/mcp/test", content=call, headers=mcp_headers(intruder, sid) | json_body
            )
            assert theirs.json()["error"]["message"] == "Session not found"
            statuses = [opened.status_code, theirs.status_code]
            if tether.settings.gateway_path == "lean":
                streamed = await http.get("/mcp/test", headers=mcp_headers(token, sid))
                assert streamed.headers["allow"] == "POST, DELETE"
                statuses.append(streamed.status_code)
            gone = await http.delete("/mcp/test", headers=mcp_headers(intruder, sid))
            ended = await http.delete("/mcp/test", headers=mcp_headers(token, sid))
            after = await http.post(
                "/mcp/test", content=call, headers=mcp_headers(token, sid) | json_body
            )
            return [*statuses, gone.status_code, ended.status_code, after.status_code]

    expected = (
        [200, 404, 405, 404, 200, 404]
        if tether.settings.gateway_path == "lean"
        else [200, 404, 404, 200, 404]
    )
    assert anyio.run(_served, tether, work) == expected
    refused = [e.reason for e in tether.events.list(type="tool.refused")]
    assert any("another agent or chain" in r for r in refused)


def test_an_idle_lean_session_ends_on_the_sessions_clock(tether) -> None:
    from tether.gateway.sessions import IDLE_AFTER, Sessions

    manager = type("Manager", (), {"_server_instances": {}})()  # the SDK's: holds none
    now = [0.0]
    sessions = Sessions(tether, manager, clock=lambda: now[0])
    sid = sessions.open_lean(["agent:x"], "bearer", "res", version="2025-06-18")
    assert sid is not None and sessions.holds(sid)
    now[0] = IDLE_AFTER - 1
    assert sessions.lean(sid) == "2025-06-18"  # used: its idle time starts again
    now[0] += IDLE_AFTER - 1
    assert sessions._reap() == 0
    now[0] += 2
    assert sessions._reap() == 1
    assert sessions.lean(sid) is None and not sessions.holds(sid)


def test_a_body_over_the_mcp_limit_is_413_and_reaches_nothing(org, clock) -> None:
    """With the API's own cap raised above it, the MCP limit (4 MiB, the SDK's) answers:
    413, on either path, and the upstream is never asked."""
    tether, token, _ = org
    roomy = tether.settings.model_copy(update={"max_request_bytes": 8 * 1024 * 1024})
    text = "x" * (5 * 1024 * 1024)
    huge = json.dumps(CALL | {"params": {"name": "echo", "arguments": {"text": text}}})
    json_body = {"Content-Type": "application/json"}

    async def work(transport: Any) -> int:
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
            opened = await http.post("/mcp/test", json=INIT, headers=mcp_headers(token))
            assert opened.status_code == 200, opened.text
            sid = opened.headers["mcp-session-id"]
            sent = await http.post(
                "/mcp/test", content=huge.encode(), headers=mcp_headers(token, sid) | json_body
            )
            return sent.status_code

    with Tether.open(roomy, clock=clock) as opened:
        assert anyio.run(_served, opened, work) == 413
    assert tether.events.list(type="decision") == []


def test_lean_sessions_are_capped(tether, monkeypatch) -> None:
    from tether.gateway import sessions as module

    monkeypatch.setattr(module, "MAX_OPEN", 1)
    manager = type("Manager", (), {"_server_instances": {}})()
    sessions = module.Sessions(tether, manager)
    assert sessions.open_lean(["agent:x"], "b", "r", version="2025-06-18") is not None
    assert sessions.open_lean(["agent:y"], "b", "r", version="2025-06-18") is None


def test_one_chain_cannot_take_every_lean_session(tether, monkeypatch) -> None:
    from tether.gateway import sessions as module

    monkeypatch.setattr(module, "MAX_PER_CHAIN", 2)
    manager = type("Manager", (), {"_server_instances": {}})()
    sessions = module.Sessions(tether, manager)
    opened = [sessions.open_lean(["agent:x"], "b", "r", version="2025-06-18") for _ in range(3)]
    assert opened[0] is not None and opened[1] is not None and opened[2] is None
    assert sessions.open_lean(["agent:y"], "b", "r", version="2025-06-18") is not None
    sessions.end(opened[0])  # one ended: the chain may open one again
    assert sessions.open_lean(["agent:x"], "b", "r", version="2025-06-18") is not None


def test_a_repeated_session_or_authorization_header_is_refused_whole(org) -> None:
    """Two ``Mcp-Session-Id`` headers (the victim's first, the sender's own last) must not
    let one reader check the sender's and another serve the victim's: 400, on either path,
    and the victim's session goes on."""
    tether, token, _ = org
    tether.registry.register(ADMIN, spec("intruder"))
    tether.grants.add(ADMIN, GrantSpec("intruder", "tools/call", "test/echo"))
    intruder = _token(tether, "intruder")
    json_body = {"Content-Type": "application/json"}

    async def work(transport: Any) -> list[int]:
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
            mine = await http.post("/mcp/test", json=INIT, headers=mcp_headers(token))
            theirs = await http.post("/mcp/test", json=INIT, headers=mcp_headers(intruder))
            victim, own = mine.headers["mcp-session-id"], theirs.headers["mcp-session-id"]
            both = [*mcp_headers(intruder).items(), ("mcp-session-id", victim)]
            both.append(("mcp-session-id", own))
            ended = await http.delete("/mcp/test", headers=both)
            assert "mcp-session-id header is sent more than once" in ended.text
            tokens = [*mcp_headers(token, victim).items(), ("authorization", f"Bearer {intruder}")]
            twice = await http.post("/mcp/test", json=CALL, headers=tokens)
            after = await http.post(
                "/mcp/test", json=CALL, headers=mcp_headers(token, victim) | json_body
            )
            return [ended.status_code, twice.status_code, after.status_code]

    assert anyio.run(_served, tether, work) == [400, 400, 200]


def test_a_listing_the_upstream_fails_is_an_mcp_error_on_either_path(tether) -> None:
    """An upstream whose tools/list is malformed: the listing is a JSON-RPC error (-32004,
    saying why) for its request, not an HTTP error without an id; a call is refused."""
    hostile = Path(__file__).parent / "helpers" / "hostile_upstream.py"
    command = f"{sys.executable} {hostile} bad-listing"
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=command))
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/echo"))
    token = _token(tether)

    async def work(transport: Any) -> tuple[int, Any, Any]:
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
            opened = await http.post("/mcp/test", json=INIT, headers=mcp_headers(token))
            sid = opened.headers["mcp-session-id"]
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            listed = await http.post("/mcp/test", json=listing, headers=mcp_headers(token, sid))
            called = await http.post("/mcp/test", json=CALL, headers=mcp_headers(token, sid))
            return listed.status_code, _message(listed), _message(called)

    status, listed, called = anyio.run(_served, tether, work)
    assert status == 200 and listed["id"] == 2
    assert (
        listed["error"]["code"] == -32004 and "malformed tools/list" in listed["error"]["message"]
    )
    assert called["result"]["isError"] is True


def _message(response: Any) -> Any:
    """The JSON-RPC message of an answer, sent as JSON or as one server-sent event."""
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()
