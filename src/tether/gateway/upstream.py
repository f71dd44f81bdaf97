"""A live connection to an upstream MCP server, with its credentials injected.

A stdio upstream is started as a process with the SDK's safe default environment, the
upstream's non-secret ``env`` and its credentials (fetched now, given only to it); an HTTP
upstream is reached over streamable HTTP with its credential headers. The agent's own
token never goes upstream: nothing of the caller's request but the tool arguments does.

The connection is the gateway's own JSON-RPC client (:mod:`tether.gateway.wire`): each
answer is parsed once into plain dicts and checked for the shape its method has (a
listing's items, a result's ``content``/``contents``/``messages``); a malformed answer
fails the request and the session (:attr:`UpstreamSession.broken`), as does a failed
connection. The server's own error answer is raised as ``MCPError`` (redacted) and
leaves the session open; so does a request unanswered in time, raised as
:class:`~tether.errors.UpstreamUnavailable`, like every connection failure.

The injected values never come back out. Every representation of them (:mod:`tether.redact`)
is replaced in what the upstream answers (a tool that echoes its environment or its
request headers): in listings by ``[redacted]``, and in each result by
``[redacted:injected-credential:<fingerprint>]`` (the value's fingerprint as discovery
makes it, by the ``fingerprint`` the session is given: see :mod:`tether.gateway.scrub`);
a result says what it took out (:attr:`Result.redacted`: credential NAME -> how many, and
:attr:`Result.fingerprints`: NAME -> fingerprint, for the audit event of the result;
never a value). While the session is open the values are in the process's
redactor, so no log line carries them; a failure to open or close is raised as
:class:`~tether.errors.UpstreamUnavailable` with its text redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp.client.stdio import get_default_environment

from tether.discover.interface import fingerprint as process_fingerprint
from tether.errors import TetherError, UpstreamUnavailable
from tether.gateway import pipe, streamable
from tether.gateway.jsonrpc import MCPError, WireError
from tether.gateway.scrub import INJECTED, mark
from tether.gateway.wire import REQUEST_TIMEOUT, NoAnswer, Wire, handshake
from tether.redact import REDACTED, SECRETS, Redactor
from tether.upstreams.credentials import resolve
from tether.upstreams.servers import Upstream
from tether.vault import Broker

__all__ = ["Result", "UpstreamSession"]

log = logging.getLogger("tether.gateway")

_MAX_PAGES = 100  # pages of one listing (a server that never stops paging is broken)
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=REQUEST_TIMEOUT)  # the SDK's HTTP client bounds
# what each listing holds, and the field that names each of its items
_LISTED = {"tools": "name", "resources": "uri", "prompts": "name"}


class Result(dict[str, Any]):
    """An upstream's answer, with the injected credentials taken out: ``redacted`` maps
    each credential NAME whose value was found to how many times (empty: nothing was),
    ``fingerprints`` each of those NAMEs to its value's fingerprint."""

    redacted: dict[str, int]
    fingerprints: dict[str, str]


class UpstreamSession:
    """``async with UpstreamSession(upstream) as session: await session.call_tool(...)``"""

    def __init__(
        self,
        upstream: Upstream,
        vault: Broker | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT,
        fingerprint: Callable[[str], str] = process_fingerprint,
    ) -> None:
        self.upstream = upstream
        self._vault = vault
        self._timeout = timeout
        self._fingerprint = fingerprint  # of an injected value, for the result's marks
        self._stack = AsyncExitStack()
        self._wire: Wire | None = None
        self._tools: list[dict[str, Any]] | None = None
        self._held: list[str] = []  # the values injected (in the process's redactor)
        self._redactors: list[tuple[str, str, Redactor]] = []  # NAME, fingerprint, redactor
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
        self._redactors = [
            (name, self._fingerprint(value), Redactor([value])) for name, value in by_length
        ]
        self._redactor = Redactor(self._held)
        wire: Wire
        if self.upstream.transport == "stdio":
            env = {**get_default_environment(), **self.upstream.env, **secrets}
            opened = pipe.started(
                list(self.upstream.command), env, dead=self.dead, timeout=self._timeout
            )
            wire = await self._stack.enter_async_context(opened)
        else:
            assert self.upstream.url is not None
            http = httpx2.AsyncClient(headers=secrets, timeout=_HTTP_TIMEOUT)
            client = await self._stack.enter_async_context(http)
            connection = streamable.connected(
                client, self.upstream.url, dead=self.dead, timeout=self._timeout
            )
            wire = await self._stack.enter_async_context(connection)
        await handshake(wire)
        self._wire = wire

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
        self._wire = None
        try:
            await self._stack.aclose()
        except Exception as exc:
            return exc
        finally:
            SECRETS.discard(self._held)
            self._held = []
        return None

    def _clean(self, exc: Exception) -> TetherError:
        """``exc`` as it may be shown: a TetherError names no value; a connection's
        failure says what failed; anything else becomes UpstreamUnavailable, its text
        redacted before it is cut."""
        if isinstance(exc, TetherError):
            return exc
        if isinstance(exc, WireError | NoAnswer):
            return self._unavailable(exc)
        return UpstreamUnavailable(self._redactor.describe(exc))

    def _unavailable(self, exc: Exception) -> UpstreamUnavailable:
        said = self._redactor.redact(str(exc)).split("\n", 1)[0][:300]
        return UpstreamUnavailable(f"upstream {self.upstream.name}: {said}")

    def _scrub(self, answer: dict[str, Any], *, marked: bool = True) -> Result:
        """``answer`` with every injected value taken out (``marked``: replaced by its
        type and fingerprint; else by ``[redacted]``), saying which were found."""
        found: dict[str, int] = {}
        prints: dict[str, str] = {}
        for name, print_, redactor in self._redactors:
            replacement = mark(INJECTED, print_) if marked else REDACTED
            answer, count = redactor.scrub(answer, replacement)
            if count:
                found[name], prints[name] = count, print_
        result = Result(answer)
        result.redacted, result.fingerprints = found, prints
        return result

    @property
    def wire(self) -> Wire:
        if self._wire is None:
            raise RuntimeError("the upstream session is not open")
        return self._wire

    async def _ask(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The result of ``method``. The server's error answer is raised as MCPError,
        redacted; a connection that failed (:attr:`broken`, set by the wire) or an answer
        not in time as UpstreamUnavailable."""
        try:
            return await self.wire.request(method, params)
        except MCPError as exc:
            data, _ = self._redactor.scrub(exc.data)
            raise MCPError(exc.code, self._redactor.redact(exc.message), data) from None
        except (WireError, NoAnswer) as exc:
            raise self._unavailable(exc) from None

    def _malformed(self, why: str) -> UpstreamUnavailable:
        """An answer that is not what was asked for: the upstream is not trusted further."""
        return self._unavailable(self.wire.fail(WireError(why)))

    async def _result(self, method: str, params: dict[str, Any], field: str) -> Result:
        result = await self._ask(method, params)
        if not isinstance(result.get(field), list):
            raise self._malformed(f"a malformed {method} result (no {field} list)")
        return self._scrub(result)

    async def probe(self) -> None:
        """A liveness check that every protocol mode answers: a fresh tool listing (which
        also keeps :meth:`known_tools` current, so a changed tool is caught at its next
        call even by a client that never lists again)."""
        await self.list_tools()

    async def list_tools(self) -> list[dict[str, Any]]:
        """The upstream's tools now (and remembered for :meth:`known_tools`)."""
        self._tools = await self._every("tools")
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
        return await self._result("tools/call", {"name": name, "arguments": arguments}, "content")

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._every("resources")

    async def read_resource(self, uri: str) -> Result:
        return await self._result("resources/read", {"uri": uri}, "contents")

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._every("prompts")

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> Result:
        return await self._result("prompts/get", {"name": name, "arguments": arguments}, "messages")

    async def _every(self, field: str) -> list[dict[str, Any]]:
        """Every item of a listing, page after page, always from the server itself."""
        method, key = f"{field}/list", _LISTED[field]
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            result = await self._ask(method, None if cursor is None else {"cursor": cursor})
            page, cursor = result.get(field), result.get("nextCursor")
            if not isinstance(page, list) or not all(
                isinstance(item, dict) and isinstance(item.get(key), str) for item in page
            ):
                raise self._malformed(f"a malformed {method} result ({field} without {key}s)")
            if cursor is not None and not isinstance(cursor, str):
                raise self._malformed(f"a malformed {method} result (its nextCursor)")
            # a field sent as null is left out, as the SDK client's models did, so pins
            # taken through it still match the same definitions
            items.extend({k: v for k, v in item.items() if v is not None} for item in page)
            if not cursor:
                return self._scrub_listing(field, items)
        raise self._malformed(f"the {field} listing has more than {_MAX_PAGES} pages")

    def _scrub_listing(self, field: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A listing with the injected values taken out (said in the log, by NAME)."""
        scrubbed = self._scrub({field: items}, marked=False)  # pinned: the same everywhere
        if scrubbed.redacted:
            log.warning(
                "upstream %s: its %s listing carried injected credential values, redacted: %s",
                self.upstream.name,
                field,
                ", ".join(f"{name} ({n})" for name, n in sorted(scrubbed.redacted.items())),
            )
        cleaned: list[dict[str, Any]] = scrubbed[field]
        return cleaned
