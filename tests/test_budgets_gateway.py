"""Result bytes through the gateway: the size of each result a limited grant allowed is
counted against the grant's bytes limits when it comes back, and once a window's use has
reached its amount the next call is refused before it reaches the upstream."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from conftest import ADMIN, Clock, spec
from sqlalchemy import select

from tether import GrantSpec, Tether
from tether.gateway.enforce import Gateway
from tether.store import budget_usage
from tether.upstreams.servers import UpstreamSpec

TOOLS = [{"name": "echo", "description": "says it back", "inputSchema": {"type": "object"}}]


class Upstream:
    """An MCP server in memory whose ``echo`` returns ``size`` characters (or fails)."""

    def __init__(self) -> None:
        self.called = 0
        self.fail = False

    async def list_tools(self) -> list[dict[str, Any]]:
        return [dict(tool) for tool in TOOLS]

    async def known_tools(self) -> list[dict[str, Any]]:
        return await self.list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        self.called += 1
        if self.fail:
            raise ConnectionError("upstream went away")
        return {"content": [{"type": "text", "text": "x" * int(arguments["size"])}]}


@pytest.fixture
def gated(tether: Tether) -> tuple[Tether, str, str]:
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} -c pass"))
    tether.registry.register(ADMIN, spec("helper"))
    limits = ("bytes=250/1h", "calls=100/1h")
    g = tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/echo", limits=limits))
    agent = tether.registry.get(ADMIN, "helper")
    audience = f"{tether.settings.issuer}/mcp/test"
    token = tether.tokens.client_credentials(agent, audience, None, None).access_token
    return tether, token, g.id


def _bytes(tether: Tether, grant_id: str) -> int:
    with tether.store.read() as conn:
        used = conn.execute(
            select(budget_usage.c.used).where(
                budget_usage.c.grant_id == grant_id, budget_usage.c.metric == "bytes/3600"
            )
        ).scalar_one_or_none()
    return int(used or 0)


def test_result_bytes_are_counted_and_refuse_the_next_call(
    gated: tuple[Tether, str, str], clock: Clock
) -> None:
    tether, token, g = gated
    upstream = Upstream()
    gate = Gateway(tether, "test")

    def call(size: int, bearer: str = token) -> dict[str, Any]:
        return anyio.run(gate.call_tool, bearer, upstream, "echo", {"size": size})

    first = call(100)
    assert not first.get("isError")
    tether.budgets.flush()
    tether.events.flush()
    sizes = [r.detail["size"] for r in tether.events.list(type="tool.result")]
    assert _bytes(tether, g) == sizes[0] > 100  # the size the result record names

    upstream.fail = True  # a failed call returns nothing: it counts no bytes
    assert call(10)["isError"]
    upstream.fail = False
    tether.budgets.flush()
    assert _bytes(tether, g) == sizes[0]

    crossing = call(100)  # under the limit when decided; it crosses it and completes
    assert not crossing.get("isError")
    assert upstream.called == 3
    refused = call(1)  # the pending bytes are written with this call's charge
    assert refused["isError"]
    [text] = [c["text"] for c in refused["content"]]
    assert text.startswith(f"denied: budget exhausted: grant {g} allows bytes=250/1h; 0 left")
    assert text.endswith("until 2026-01-01T13:00:00Z (in 3600s)")
    assert upstream.called == 3  # never reached the upstream
    clock.advance(hours=1)
    agent = tether.registry.get(ADMIN, "helper")
    fresh = tether.tokens.client_credentials(agent, gate.resource, None, None).access_token
    assert not call(1, fresh).get("isError")  # a new window
