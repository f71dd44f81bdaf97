"""The gateway in front of a third-party MCP server installed from a registry: the
reference filesystem server (npm ``@modelcontextprotocol/server-filesystem``, Node, stdio).

An agent granted two of its tools sees exactly those two, can call them (real file content
comes back), and its call to a third (``write_file``) is denied with a reason and never
reaches the server: the file is not written, though the server would write it. Both the
allows and the deny are in the audit log, with the results of the allowed calls. Through
the HTTP face with the official SDK client (both protocol modes), through the stdio face
(``tether gateway stdio fs`` launched by the SDK client, as a desktop client would) and
through the library path (:class:`Gateway` over an :class:`UpstreamSession`).

The server is installed ahead of the tests, never at run time::

    npm install --prefix .venv/npm --no-audit --no-fund --ignore-scripts \\
        @modelcontextprotocol/server-filesystem@2026.8.31

(``TETHER_TEST_NPM_PREFIX`` names another prefix). Without it, or without ``node``, the
tests skip with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import spec
from helpers.gateway_paths import make_settings  # noqa: F401  (each test on both paths)
from helpers.mcp_clients import over_stdio
from helpers.uvicorn_thread import serving
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tether.api import create_app
from tether.callers import Caller
from tether.core import Tether
from tether.gateway.enforce import Gateway
from tether.gateway.upstream import UpstreamSession
from tether.grants import GrantSpec
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
BASE = "http://testserver"
PACKAGE = "@modelcontextprotocol/server-filesystem"
VERSION = "2026.8.31"
INSTALL = (
    f"npm install --prefix {{prefix}} --no-audit --no-fund --ignore-scripts {PACKAGE}@{VERSION}"
)
GRANTED = ["list_directory", "read_text_file"]
CONTENT = "written by the test, read through tether\n"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the third-party server tests are mandatory)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fs_server() -> list[str]:
    """The command line that starts the installed filesystem server (without its roots)."""
    prefix = Path(os.environ.get("TETHER_TEST_NPM_PREFIX") or Path(sys.prefix) / "npm")
    package = prefix / "node_modules" / PACKAGE
    node = shutil.which("node")
    if node is None:
        _unavailable(f"node is not on PATH: {PACKAGE} needs Node.js 18 or newer")
    if not (package / "dist" / "index.js").is_file():
        _unavailable(f"{PACKAGE} is not installed under {prefix}: {INSTALL.format(prefix=prefix)}")
    assert node is not None
    return [node, str(package / "dist" / "index.js")]


@pytest.fixture
def org(tether: Tether, fs_server: list[str], tmp_path: Path) -> tuple[Tether, str, Path]:
    """Upstream ``fs`` serving ``tmp_path/files``; agent ``reader`` granted two of its tools."""
    root = (tmp_path / "files").resolve()
    root.mkdir()
    (root / "hello.txt").write_text(CONTENT, encoding="utf-8")
    (root / "docs").mkdir()
    tether.upstreams.add(ADMIN, UpstreamSpec("fs", command=shlex.join([*fs_server, str(root)])))
    tether.registry.register(ADMIN, spec("reader"))
    for tool in GRANTED:
        tether.grants.add(ADMIN, GrantSpec("reader", "tools/call", f"fs/{tool}"))
    agent = tether.registry.get(ADMIN, "reader")
    token = tether.tokens.client_credentials(
        agent, f"{tether.settings.issuer}/mcp/fs", None, None
    ).access_token
    return tether, token, root


# What the agent does, whichever way it reaches the gateway: list, call, and the answer.
ListTools = Callable[[], Awaitable[list[str]]]
CallTool = Callable[[str, dict[str, Any]], Awaitable[tuple[bool, str]]]


async def _agent_session(root: Path, list_tools: ListTools, call_tool: CallTool) -> str:
    """The agent's session; returns the text of the denied call."""
    assert sorted(await list_tools()) == GRANTED
    failed, text = await call_tool("read_text_file", {"path": str(root / "hello.txt")})
    assert not failed and text == CONTENT  # the real file, read by the real server
    failed, text = await call_tool("list_directory", {"path": str(root)})
    assert not failed and text.splitlines() == ["[DIR] docs", "[FILE] hello.txt"]
    failed, text = await call_tool(
        "write_file", {"path": str(root / "pwned.txt"), "content": "should never exist"}
    )
    assert failed and text.startswith("denied: ")
    assert not (root / "pwned.txt").exists()  # the server never saw the call
    return text


async def _sdk_session(root: Path, c: Client) -> str:
    """The agent's session through an official SDK client (either face)."""

    async def list_tools() -> list[str]:
        return [t.name for t in (await c.list_tools()).tools]

    async def call_tool(name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        result = await c.call_tool(name, arguments)
        return result.is_error, _text(result.content)

    return await _agent_session(root, list_tools, call_tool)


def _check_the_record(tether: Tether, root: Path, denied_text: str) -> None:
    assert not (root / "pwned.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["docs", "hello.txt"]
    decisions = tether.events.list(type="decision")
    assert [(d.resource, d.action, d.decision) for d in decisions] == [
        ("fs/read_text_file", "tools/call", "allow"),
        ("fs/list_directory", "tools/call", "allow"),
        ("fs/write_file", "tools/call", "deny"),
    ]
    agent = tether.registry.get(ADMIN, "reader")
    assert {d.actor for d in decisions} == {agent.id}
    deny = decisions[-1]
    assert "fs/write_file" in deny.reason and denied_text == f"denied: {deny.reason}"
    tether.events.flush()  # results ride along with later commits
    results = tether.events.list(type="tool.result")
    assert [r.resource for r in results] == ["fs/read_text_file", "fs/list_directory"]
    assert all(r.detail["outcome"] == "ok" and r.detail["size"] > 0 for r in results)
    assert not tether.events.list(type="tool.refused")


def _text(content: list[Any]) -> str:
    return "".join(
        c.get("text", "") if isinstance(c, dict) else getattr(c, "text", "") for c in content
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.slow
def test_over_streamable_http_with_the_sdk_client(org, mode: str) -> None:
    tether, token, root = org

    async def run() -> str:
        app = create_app(tether)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url=BASE, headers=headers
            ) as http,
            Client(streamable_http_client(f"{BASE}/mcp/fs", http_client=http), mode=mode) as c,
        ):
            return await _sdk_session(root, c)

    _check_the_record(tether, root, anyio.run(run))


@pytest.fixture
def real_time(clock: Any) -> None:
    """The face runs in a process of its own, on the real clock: set up at real time."""
    clock.now = datetime.now(UTC)


@pytest.mark.slow
def test_through_the_stdio_face_launched_by_the_sdk_client(real_time: None, org) -> None:
    """The stdio bridge with a static token, against the Tether served over HTTP."""
    tether, token, root = org
    with serving(tether) as url:
        env = {
            "TETHER_URL": url,
            "TETHER_AGENT_TOKEN": token,
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        }
        face = StdioServerParameters(
            command=str(Path(sys.executable).parent / "tether"),
            args=["gateway", "stdio", "fs"],
            env=env,
        )
        _check_the_record(tether, root, over_stdio(face, lambda c: _sdk_session(root, c)))


@pytest.mark.slow
def test_through_the_library_over_stdio(org) -> None:
    tether, token, root = org
    control = root / "docs" / "control.txt"

    async def run() -> str:
        gate = Gateway(tether, "fs")
        async with UpstreamSession(tether.upstreams.get("fs")) as upstream:

            async def list_tools() -> list[str]:
                return [t["name"] for t in await gate.list_tools(token, upstream)]

            async def call_tool(name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
                result = await gate.call_tool(token, upstream, name, arguments)
                return bool(result.get("isError")), _text(result["content"])

            denied = await _agent_session(root, list_tools, call_tool)
            offered = {t["name"] for t in await upstream.list_tools()}
            assert "write_file" in offered and len(offered) > len(GRANTED)
            # Control: the same call straight to the server (no gateway) does write, so the
            # file's absence above is the gateway's doing, not the server's refusal.
            direct = await upstream.call_tool(
                "write_file", {"path": str(control), "content": "direct"}
            )
            assert not direct.get("isError"), json.dumps(direct)
            return denied

    denied = anyio.run(run)
    assert control.read_text(encoding="utf-8") == "direct"
    control.unlink()
    _check_the_record(tether, root, denied)
