"""``tether gateway stdio NAME``: a desktop MCP client launches the gateway as a stdio
server; it authenticates as the agent from its key file (getting its own tokens) or from a
token, and enforces like the HTTP face."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tether.agent_keys import generate_key_pair
from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.gateway.servers import UpstreamSpec
from tether.grants import GrantSpec
from tether.registry import AgentSpec

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
TETHER = Path(sys.executable).parent / "tether"


@pytest.fixture
def desk(make_settings, home: Path, db_url: str, tmp_path: Path) -> dict[str, str]:
    settings: Settings = make_settings()
    tether, _ = Tether.init(settings)
    with tether:
        tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
        pair = generate_key_pair()
        tether.registry.register(
            ADMIN,
            AgentSpec(name="desk-agent", owner="alice@example.com", public_key=pair.public_key),
        )
        tether.grants.add(ADMIN, GrantSpec("desk-agent", "tools/call", "test/echo"))
    key = tmp_path / "desk-agent.pem"
    key.write_bytes(pair.private_pem)
    key.chmod(0o600)
    return {
        "TETHER_HOME": str(home),
        "TETHER_DB": db_url,
        "TETHER_AGENT_KEY": str(key),
        "PATH": os.environ.get("PATH", ""),
    }


def _session(env: dict[str, str], work: Any) -> Any:
    async def run() -> Any:
        params = StdioServerParameters(
            command=str(TETHER), args=["gateway", "stdio", "test"], env=env
        )
        async with Client(params) as client:
            return await work(client)

    return anyio.run(run)


def test_a_desktop_client_uses_the_gateway_over_stdio_as_the_agent(desk, tmp_path) -> None:
    note = tmp_path / "note.txt"

    async def work(client: Client) -> None:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["echo"]
        said = await client.call_tool("echo", {"text": "from the desk"})
        assert not said.is_error and said.content[0].text == "from the desk"
        denied = await client.call_tool("write_note", {"path": str(note), "text": "x"})
        assert denied.is_error and "denied" in denied.content[0].text

    _session(desk, work)
    assert not note.exists()
    settings = Settings.load(Path(desk["TETHER_HOME"]), db_url=desk["TETHER_DB"])
    with Tether.open(settings) as tether:
        decided = [(e.resource, e.decision, e.actor) for e in tether.events.list(type="decision")]
        agent = tether.registry.agent_id("desk-agent")
        assert decided == [("test/echo", "allow", agent), ("test/write_note", "deny", agent)]
        assert tether.events.list(type="token.issued")  # it got its own token


def test_without_credentials_the_stdio_face_does_not_start(desk) -> None:
    env = {k: v for k, v in desk.items() if k != "TETHER_AGENT_KEY"}

    async def work(client: Client) -> None:
        await client.list_tools()

    with pytest.raises(Exception):  # noqa: B017 - the process exits before it serves
        _session(env, work)
