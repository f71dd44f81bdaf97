"""``tether gateway stdio NAME``: a desktop MCP client launches the stdio bridge; it is a
client of a running Tether (``TETHER_URL``), authenticates as the agent from its key file
(getting and renewing its own tokens) or from a token, and everything it relays is
enforced at ``/mcp/NAME`` exactly as for any HTTP client.

The Tether here serves over real HTTP from a thread of the test (see
``helpers/uvicorn_thread.py``), so the test keeps it in hand; the bridge runs as a process
of its own. ``test_hardening_bridge.py`` runs it against ``tether up`` as another OS user.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import Cli, initialised
from helpers.mcp_clients import over_stdio
from helpers.uvicorn_thread import serving
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from tether.agent_keys import generate_key_pair, key_file_agent, label_key_file, load_private_key
from tether.callers import Caller
from tether.core import Tether
from tether.gateway.stdio import AgentTokens, Bridge, BridgeConfig
from tether.grants import GrantSpec
from tether.registry import AgentSpec
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
TETHER = Path(sys.executable).parent / "tether"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def desk(tether: Tether, clock: Any, tmp_path: Path) -> tuple[Tether, Path]:
    """Upstream ``test``; agent ``desk-agent`` granted ``echo``; its key file, which names it."""
    clock.now = datetime.now(UTC)  # the bridge signs its assertions on the real clock
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
    pair = generate_key_pair()
    agent = tether.registry.register(
        ADMIN, AgentSpec(name="desk-agent", owner="alice@example.com", public_key=pair.public_key)
    )
    tether.grants.add(ADMIN, GrantSpec("desk-agent", "tools/call", "test/echo"))
    key = tmp_path / "desk-agent.pem"
    key.write_bytes(pair.private_pem)
    key.chmod(0o600)
    label_key_file(key, agent.id)
    return tether, key


def _env(url: str, key: Path) -> dict[str, str]:
    """The README's desktop configuration: TETHER_URL and the agent's key, nothing else
    of Tether's (PYTHONPATH only finds the Tether under test)."""
    return {
        "TETHER_URL": url,
        "TETHER_AGENT_KEY": str(key),
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(SRC),
    }


def _session(env: dict[str, str], work: Any, mode: str = "auto") -> Any:
    params = StdioServerParameters(command=str(TETHER), args=["gateway", "stdio", "test"], env=env)
    return over_stdio(params, work, mode)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.slow
def test_a_desktop_client_uses_the_gateway_over_stdio_as_the_agent(desk, tmp_path, mode) -> None:
    tether, key = desk
    note = tmp_path / "note.txt"

    async def work(client: Client) -> None:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["echo"]
        said = await client.call_tool("echo", {"text": "from the desk"})
        assert not said.is_error and said.content[0].text == "from the desk"
        denied = await client.call_tool("write_note", {"path": str(note), "text": "x"})
        assert denied.is_error and "denied" in denied.content[0].text

    decoy = tmp_path / "decoy-home"  # were TETHER_HOME read, this would stop the bridge
    decoy.mkdir()
    (decoy / "tether.toml").write_text("this is [[ not toml\n", encoding="utf-8")
    with serving(tether) as url:
        _session(_env(url, key) | {"TETHER_HOME": str(decoy)}, work, mode)
    assert not note.exists()
    decided = [(e.resource, e.decision, e.actor) for e in tether.events.list(type="decision")]
    agent = tether.registry.agent_id("desk-agent")
    assert decided == [("test/echo", "allow", agent), ("test/write_note", "deny", agent)]
    assert tether.events.list(type="token.issued")  # it got its own token


@pytest.mark.slow
def test_a_refusal_by_the_server_reaches_the_client_as_an_mcp_error(desk) -> None:
    """Once the agent is suspended its token fails and a new one is refused: a tool call
    answers with the reason (isError), a listing with a JSON-RPC error; never a closed
    connection."""
    tether, key = desk

    async def work(client: Client) -> None:
        assert not (await client.call_tool("echo", {"text": "before"})).is_error
        await anyio.to_thread.run_sync(tether.registry.suspend, ADMIN, "desk-agent")
        refused = await client.call_tool("echo", {"text": "after"})
        assert refused.is_error
        assert refused.content[0].text.startswith("denied: ")
        assert "suspended" in refused.content[0].text
        with pytest.raises(MCPError, match="suspended"):
            await client.list_tools()

    with serving(tether) as url:
        _session(_env(url, key), work)


@pytest.mark.slow
def test_without_credentials_or_tether_url_the_bridge_does_not_start(desk, tmp_path) -> None:
    """It says what is missing and exits 2; a TETHER_HOME in its environment is not read."""
    import subprocess

    _, key = desk
    home = tmp_path / "some-home"
    full = _env("http://127.0.0.1:9", key) | {"TETHER_HOME": str(home)}
    for drop, says in (
        ("TETHER_AGENT_KEY", "TETHER_AGENT_KEY"),
        ("TETHER_URL", "TETHER_URL is not set"),
    ):
        env = {k: v for k, v in full.items() if k != drop}
        done = subprocess.run(
            [str(TETHER), "gateway", "stdio", "test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not home.exists()


async def _lines(send: Any) -> AsyncIterator[bytes]:
    async for item in send:
        yield item


@pytest.mark.slow
def test_tokens_are_renewed_before_they_expire_and_once_on_a_401(desk, caplog) -> None:
    """In process (the bridge over the app): a token near its end is renewed before the
    call; a token revoked under the bridge is met by a 401, renewed once, and the call
    goes through; so does a call after the server ended the session that token held (the
    bridge opens a new one as the client opened the first)."""
    tether, key = desk
    from tether.api import create_app

    caplog.set_level(logging.INFO, logger="tether.gateway")
    now = [0.0]
    out: list[dict[str, Any]] = []
    config = BridgeConfig.from_env("test", {"TETHER_URL": "http://t", "TETHER_AGENT_KEY": str(key)})

    async def run() -> None:
        app = create_app(tether)
        transport = httpx2.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(transport=transport, base_url="http://t") as http,
        ):
            tokens = AgentTokens(http, config, clock=lambda: now[0])
            await tokens.discover()
            send, receive = anyio.create_memory_object_stream[bytes](10)
            got = anyio.Event()

            def write(line: bytes) -> None:  # called in a worker thread
                out.append(json.loads(line))
                anyio.from_thread.run_sync(got.set)

            async def ask(message: dict[str, Any]) -> dict[str, Any]:
                nonlocal got
                got = anyio.Event()
                await send.send(json.dumps(message).encode() + b"\n")
                await got.wait()
                return out[-1]

            bridge = Bridge(http, tokens, "http://t/mcp/test", write)
            async with anyio.create_task_group() as group:
                group.start_soon(bridge.run, _lines(receive))
                await ask(_INIT)
                await send.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
                first = await tokens.bearer()
                assert (await ask(_call(2)))["result"]["isError"] is False
                now[0] += 3600.0  # near its end: renewed before the next call
                assert (await ask(_call(3)))["result"]["isError"] is False
                second = await tokens.bearer()
                assert second != first
                await anyio.to_thread.run_sync(tether.tokens.revoke, ADMIN, second)
                answered = await ask(_call(4))
                assert answered.get("result", {}).get("isError") is False, answered  # a 401 first
                third = await tokens.bearer()
                assert third != second
                await anyio.to_thread.run_sync(tether.tokens.revoke, ADMIN, third)
                ended = bridge.session_id
                assert ended
                closed = f"closed MCP session {ended[:8]}"  # what the gateway logs
                with anyio.fail_after(10):  # the epoch moved: the face closes the session
                    while not any(r.getMessage().startswith(closed) for r in caplog.records):
                        await anyio.sleep(0.05)
                answered = await ask(_call(5))
                assert answered.get("result", {}).get("isError") is False, answered
                assert bridge.session_id not in (None, ended)
                send.close()

    anyio.run(run)
    assert len(tether.events.list(type="token.issued")) == 4


_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


def _call(request_id: int) -> dict[str, Any]:
    params = {"name": "echo", "arguments": {"text": "hi"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def test_a_registered_key_file_names_its_agent(
    cli_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`tether agent register --key-out` (and `rotate-key`) write a key file that names
    the agent, so the bridge needs only the file; it stays a plain PEM key, mode 0600."""
    cli = initialised(Cli(capsys))
    key = tmp_path / "agent.pem"
    doc = cli.json("agent", "register", "bot", "--owner", "a@example.com", "--key-out", str(key))
    assert key_file_agent(key) == doc["id"] == "spiffe://tether.local/agent/bot"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    rotated = cli.json("agent", "rotate-key", "bot", "--key-out", str(key))
    assert key_file_agent(key) == rotated["id"]
    assert load_private_key(key)  # the labelled file still loads as a key
