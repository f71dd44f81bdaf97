"""The official MCP SDK client over stdio, for the tests that launch the stdio bridge (or
any stdio server) as a desktop client would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

__all__ = ["over_stdio"]


def over_stdio(
    server: StdioServerParameters, work: Callable[[Client], Awaitable[Any]], mode: str = "auto"
) -> Any:
    """Start ``server``, run ``work(client)`` on an SDK client session with it (``mode``:
    "auto" or "legacy"), stop it; returns what ``work`` returned."""

    async def run() -> Any:
        async with Client(server, mode=mode) as client:
            return await work(client)

    return anyio.run(run)
