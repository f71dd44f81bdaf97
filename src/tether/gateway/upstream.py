"""A live connection to an upstream MCP server, with its credentials injected.

A stdio upstream is started as a process with the SDK's safe default environment, the
upstream's non-secret ``env`` and its credentials (fetched now, given only to it); an HTTP
upstream is reached over streamable HTTP with its credential headers. The agent's own
token never goes upstream: nothing of the caller's request but the tool arguments does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from tether.gateway.credentials import resolve
from tether.gateway.servers import Upstream

__all__ = ["UpstreamSession"]

T = TypeVar("T")


class UpstreamSession:
    """``async with UpstreamSession(upstream) as session: await session.call_tool(...)``"""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._stack = AsyncExitStack()
        self._client: Client | None = None
        self._tools: list[dict[str, Any]] | None = None
        self.broken = False  # a request failed on the connection: open a new session

    async def __aenter__(self) -> UpstreamSession:
        secrets = {c.name: resolve(c) for c in self.upstream.credentials}
        if self.upstream.transport == "stdio":
            program, *args = self.upstream.command
            server: Any = StdioServerParameters(
                command=program,
                args=args,
                env={**get_default_environment(), **self.upstream.env, **secrets},
            )
        else:
            assert self.upstream.url is not None
            http = await self._stack.enter_async_context(httpx2.AsyncClient(headers=secrets))
            server = streamable_http_client(self.upstream.url, http_client=http)
        self._client = await self._stack.enter_async_context(Client(server))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client = None
        await self._stack.aclose()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the upstream session is not open")
        return self._client

    async def _ask(self, request: Awaitable[T]) -> T:
        """Await a request; a failure other than the server's own error answer means the
        connection is gone, and the session says so (:attr:`broken`)."""
        try:
            return await request
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:  # any other code is the server's own answer
                self.broken = True
            raise
        except Exception:
            self.broken = True
            raise

    async def list_tools(self) -> list[dict[str, Any]]:
        """The upstream's tools now (and remembered for :meth:`known_tools`)."""
        result = await self._ask(self.client.list_tools())
        self._tools = [_dump(t) for t in result.tools]
        return self._tools

    async def known_tools(self) -> list[dict[str, Any]]:
        """The tools as last listed (listing now if never). A client learns what a tool
        is only from a listing, which is always fresh and checked against the pins; a call
        is checked against what that listing showed."""
        return self._tools if self._tools is not None else await self.list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self._ask(self.client.call_tool(name, arguments)))

    async def list_resources(self) -> list[dict[str, Any]]:
        result = await self._ask(self.client.list_resources())
        return [_dump(r) for r in result.resources]

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return _dump(await self._ask(self.client.read_resource(uri)))

    async def list_prompts(self) -> list[dict[str, Any]]:
        result = await self._ask(self.client.list_prompts())
        return [_dump(p) for p in result.prompts]

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        return _dump(await self._ask(self.client.get_prompt(name, arguments)))


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped
