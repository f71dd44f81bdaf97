"""A live connection to an upstream MCP server, with its credentials injected.

A stdio upstream is started as a process with the SDK's safe default environment, the
upstream's non-secret ``env`` and its credentials (fetched now, given only to it); an HTTP
upstream is reached over streamable HTTP with its credential headers. The agent's own
token never goes upstream: nothing of the caller's request but the tool arguments does.

The injected values never come back out. Every representation of them (:mod:`tether.redact`)
is replaced by ``[redacted]`` in what the upstream answers (a tool that echoes its
environment or its request headers): in listings, and in each result, which says what it
took out (:attr:`Result.redacted`: credential NAME -> how many, for the audit event of
the result; never a value). While the session is open the values are in the process's
redactor, so no log line carries them; a failure to open or close is raised as
:class:`~tether.errors.UpstreamUnavailable` with its text redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from tether.errors import TetherError, UpstreamUnavailable
from tether.redact import SECRETS, Redactor
from tether.upstreams.credentials import resolve
from tether.upstreams.servers import Upstream
from tether.vault import Broker

__all__ = ["Result", "UpstreamSession"]

log = logging.getLogger("tether.gateway")

T = TypeVar("T")

_MAX_PAGES = 100  # pages of one listing (a server that never stops paging is broken)


class Result(dict[str, Any]):
    """An upstream's answer, with the injected credentials taken out: ``redacted`` maps
    each credential NAME whose value was found to how many times (empty: nothing was)."""

    redacted: dict[str, int]


class UpstreamSession:
    """``async with UpstreamSession(upstream) as session: await session.call_tool(...)``"""

    def __init__(self, upstream: Upstream, vault: Broker | None = None) -> None:
        self.upstream = upstream
        self._vault = vault
        self._stack = AsyncExitStack()
        self._client: Client | None = None
        self._tools: list[dict[str, Any]] | None = None
        self._held: list[str] = []  # the values injected (in the process's redactor)
        self._redactors: list[tuple[str, Redactor]] = []  # per credential NAME
        self._redactor = Redactor()  # all of them
        self.dead = anyio.Event()  # set when a request failed on the connection

    @property
    def broken(self) -> bool:
        """A request failed on the connection: this session is done, open a new one."""
        return self.dead.is_set()

    async def __aenter__(self) -> UpstreamSession:
        try:
            await self._open()
        except Exception as exc:
            await self._shut()
            raise self._clean(exc) from None
        return self

    async def _open(self) -> None:
        secrets = await anyio.to_thread.run_sync(self._secrets)  # the vault is a network call
        self._held = list(secrets.values())
        SECRETS.add(self._held)
        by_length = sorted(secrets.items(), key=lambda item: len(item[1]), reverse=True)
        self._redactors = [(name, Redactor([value])) for name, value in by_length]
        self._redactor = Redactor(self._held)
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

    def _secrets(self) -> dict[str, str]:
        transport = self.upstream.transport
        return {
            c.name: resolve(c, vault=self._vault, transport=transport)
            for c in self.upstream.credentials
        }

    async def __aexit__(self, *exc: object) -> None:
        failure = await self._shut()
        if failure is not None:
            raise self._clean(failure) from None

    async def _shut(self) -> Exception | None:
        """Close the connection and forget the values; what failed while closing, if any."""
        self._client = None
        try:
            await self._stack.aclose()
        except Exception as exc:
            return exc
        finally:
            SECRETS.discard(self._held)
            self._held = []
        return None

    def _clean(self, exc: Exception) -> TetherError:
        """``exc`` as it may be shown: a TetherError names no value; anything else becomes
        UpstreamUnavailable, its text redacted before it is cut."""
        if isinstance(exc, TetherError):
            return exc
        return UpstreamUnavailable(self._redactor.describe(exc))

    def _scrub(self, answer: dict[str, Any]) -> Result:
        """``answer`` with every injected value taken out, saying which were found."""
        found: dict[str, int] = {}
        for name, redactor in self._redactors:
            answer, count = redactor.scrub(answer)
            if count:
                found[name] = count
        result = Result(answer)
        result.redacted = found
        return result

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
                self.dead.set()
            raise
        except Exception:
            self.dead.set()
            raise

    async def probe(self) -> None:
        """A liveness check that every protocol mode answers: a fresh tool listing (which
        also keeps :meth:`known_tools` current, so a changed tool is caught at its next
        call even by a client that never lists again)."""
        await self.list_tools()

    async def list_tools(self) -> list[dict[str, Any]]:
        """The upstream's tools now (and remembered for :meth:`known_tools`)."""
        self._tools = await self._every("tools", lambda c: self.client.list_tools(**c))
        return self._tools

    async def known_tools(self) -> list[dict[str, Any]]:
        """The tools as last listed (listing now if never). A client learns what a tool
        is only from a listing, which is always fresh and checked against the pins; a call
        is checked against what that listing showed."""
        return self._tools if self._tools is not None else await self.list_tools()

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """Tool ``name``'s input schema as last listed (None if not listed yet)."""
        for tool in self._tools or ():
            if tool.get("name") == name:
                schema: dict[str, Any] | None = tool.get("inputSchema")
                return schema
        return None

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Result:
        return self._scrub(_dump(await self._ask(self.client.call_tool(name, arguments))))

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._every("resources", lambda c: self.client.list_resources(**c))

    async def read_resource(self, uri: str) -> Result:
        return self._scrub(_dump(await self._ask(self.client.read_resource(uri))))

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._every("prompts", lambda c: self.client.list_prompts(**c))

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> Result:
        return self._scrub(_dump(await self._ask(self.client.get_prompt(name, arguments))))

    async def _every(
        self, field: str, page: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> list[dict[str, Any]]:
        """Every item of a listing, page after page, always from the server itself (never
        the SDK's response cache: a changed definition must be seen when it changes)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            result = await self._ask(page({"cursor": cursor, "cache_mode": "bypass"}))
            items.extend(_dump(item) for item in getattr(result, field))
            cursor = result.next_cursor
            if not cursor:
                return self._scrub_listing(field, items)
        self.dead.set()  # a listing that never ends: treat the upstream as broken
        raise UpstreamUnavailable(f"the {field} listing has more than {_MAX_PAGES} pages")

    def _scrub_listing(self, field: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A listing with the injected values taken out (said in the log, by NAME)."""
        scrubbed = self._scrub({field: items})
        if scrubbed.redacted:
            log.warning(
                "upstream %s: its %s listing carried injected credential values, redacted: %s",
                self.upstream.name,
                field,
                ", ".join(f"{name} ({n})" for name, n in sorted(scrubbed.redacted.items())),
            )
        cleaned: list[dict[str, Any]] = scrubbed[field]
        return cleaned


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped
