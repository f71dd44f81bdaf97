"""Through the gateway end to end: a real MCP server behind Tether, the official SDK client
over streamable HTTP, an agent that calls ``echo`` in office hours for a week and then, at
03:00, a tool it never used. The detector raises an alert naming that call, the alert
leaves through the file sink as an OCSF Detection Finding that validates against the
schema, and the response policy (``first_use = "suspend"``) stops the very next call."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import Clock, spec
from helpers.gateway_paths import make_settings  # noqa: F401  (each test on both paths)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from ocsf_validate import validate

from tether.api import create_app
from tether.audit.sinks import SinkRunner
from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.grants import GrantSpec
from tether.model import AgentState
from tether.upstreams.servers import UpstreamSpec

pytestmark = pytest.mark.slow

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
BASE = "http://testserver"


@pytest.fixture
def watched(
    make_settings: Callable[..., Settings],  # noqa: F811
    clock: Clock,
    tmp_path: Path,
) -> Iterator[Tether]:
    settings = make_settings(
        detect={"learning": "3d", "response": {"first_use": "suspend"}},
        audit={
            "sinks": [
                {
                    "name": "siem",
                    "kind": "file",
                    "path": str(tmp_path / "siem.jsonl"),
                    "format": "ocsf",
                }
            ]
        },
    )
    Tether.init(settings)[0].close()
    clock.now = clock.now.replace(hour=9, minute=0)
    with Tether.open(settings, clock=clock) as tether:
        tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
        tether.registry.register(ADMIN, spec("helper"))
        for tool in ("echo", "env_digest"):
            tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", f"test/{tool}"))
        yield tether


def _token(tether: Tether) -> str:
    agent = tether.registry.get(ADMIN, "helper")
    resource = f"{tether.settings.issuer}/mcp/test"
    return tether.tokens.client_credentials(agent, resource, None, None).access_token


@asynccontextmanager
async def _connect(transport: Any, token: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE, headers=headers) as http,
        Client(streamable_http_client(f"{BASE}/mcp/test", http_client=http)) as client,
    ):
        yield client


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def test_a_new_tool_at_three_in_the_morning_is_alerted_exported_and_stopped(
    watched: Tether, clock: Clock, tmp_path: Path
) -> None:
    tether = watched
    agent_id = tether.registry.agent_id("helper")

    async def week(transport: Any) -> None:
        for _day in range(7):  # a week of office hours: a session an hour, 09:00-17:00
            clock.now = clock.now.replace(hour=9, minute=0)
            for _ in range(8):  # tokens live minutes: a session (and token) each
                async with _connect(transport, _token(tether)) as client:
                    for _ in range(3):  # three calls, a minute apart
                        said = await client.call_tool("echo", {"text": "daily"})
                        assert not said.is_error
                        clock.advance(minutes=1)
                clock.advance(minutes=57)
            clock.advance(days=1)

    async def night(transport: Any) -> None:
        clock.now = clock.now.replace(hour=3, minute=0)
        async with _connect(transport, _token(tether)) as client:
            digest = await client.call_tool("env_digest", {"name": "HOME"})
            assert not digest.is_error  # granted: the grant alone does not stop it
            await anyio.to_thread.run_sync(tether.detector.run_until_idle)
            with pytest.raises(MCPError):  # the very next call: the agent is suspended
                await client.call_tool("echo", {"text": "again"})

    async def served(work: Callable[[Any], Any]) -> None:
        app = create_app(tether)  # one lifespan per app
        async with app.router.lifespan_context(app):
            await work(httpx2.ASGITransport(app=app))

    anyio.run(served, week)
    daytime = tether.detector.run_until_idle()
    assert [a for a in daytime if a.severity in ("high", "critical")] == []
    anyio.run(served, night)

    [call] = [
        e
        for e in tether.events.list(type="decision")
        if e.resource == "test/env_digest" and e.decision == "allow"
    ]
    alerts = tether.alerts.list(ADMIN, agent=agent_id)
    first_use = [a for a in alerts if a.detector == "first_use"]
    assert len(first_use) == 1 and first_use[0].evidence == (call.seq,)
    assert "env_digest" in first_use[0].summary
    assert first_use[0].chain[-1] == agent_id
    # 03:00 is off its hours: the first thing it did then (asking for a token) is the evidence
    night_seqs = {e.seq for e in tether.events.list(after=call.seq - 10) if e.at.hour == 3}
    [off_hours] = [a for a in alerts if a.detector == "off_hours"]
    assert off_hours.evidence and set(off_hours.evidence) <= night_seqs
    assert [(x.action, x.outcome) for x in tether.alerts.get(ADMIN, first_use[0].id).actions] == [
        ("suspend", "done")
    ]
    assert tether.registry.get(ADMIN, "helper").state is AgentState.SUSPENDED
    assert tether.events.list(type="agent.suspended")[-1].actor == "system:detect"

    # the alert leaves through the file sink as an OCSF Detection Finding (2004)
    sinks = SinkRunner(tether.store, tether.events, tether.settings.audit.sinks, version="test")
    assert sinks.deliver_once() > 0
    lines = [json.loads(line) for line in (tmp_path / "siem.jsonl").read_text().splitlines()]
    findings = [line for line in lines if line["class_uid"] == 2004]
    [raised] = [
        f for f in findings if f["finding_info"]["uid"] == first_use[0].id and f["activity_id"] == 1
    ]
    assert validate(raised) == []
    assert raised["message"].startswith(f"alert.raised on {agent_id}: ")
    assert raised["message"].endswith("(by system:detect)")
    assert call.seq in [int(e["uid"]) for e in raised["finding_info"]["related_events"]]
