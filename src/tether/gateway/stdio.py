"""``tether gateway stdio NAME``: the bridge a desktop MCP client launches as the agent.

The bridge is a pure *client* of a running Tether: it reads ``TETHER_URL`` and the agent's
own credential (``TETHER_AGENT_KEY``, its key file, or a static ``TETHER_AGENT_TOKEN``) and
nothing else; it never reads ``TETHER_HOME``, never opens the store and imports nothing of
``tether.core`` or ``tether.store``, so the agent's environment holds only its own key and
the one enforcement point stays ``/mcp/NAME`` of the server (DESIGN §5, invariant 10).

With a key it gets its own short-lived tokens: the resource (``<issuer>/mcp/NAME``) and the
issuer come from the server's RFC 9728 document, the token endpoint from its RFC 8414
metadata; each token is a ``client_credentials`` grant authenticated by a fresh RFC 7523
client assertion signed with the key (``private_key_jwt``), renewed 30 s before it expires
and once more when the server answers 401. The agent's ID comes from ``TETHER_AGENT_ID``
or from the ``Agent:`` line that ``tether agent register`` writes into the key file (the
credentials are :mod:`tether.gateway.bridge_auth`).

Why a raw JSON-RPC relay rather than the MCP SDK's client and server back to back: the
relay is the smallest thing that forwards every message of both protocol eras unchanged
(the initialize handshake with ``Mcp-Session-Id``, and the per-request envelope with its
``Mcp-Method`` / ``Mcp-Name`` / ``Mcp-Param-*`` headers), passes the server's JSON-RPC
errors through as they are, and turns every HTTP-level refusal (401, 403, 404, an
unreachable server) into an MCP error for the request that met it (a tool result with
``isError`` for ``tools/call``, a JSON-RPC error otherwise) instead of the SDK client
transport's "Server returned an error response" or a closed connection. One line on
stdin is one message; each request is POSTed on its own (concurrently, so a cancel or a
ping is never stuck behind a long call), and what comes back (JSON, or an SSE stream
that may carry notifications before the response) is written to stdout a line per
message. No GET stream is opened: the gateway sends nothing outside a request's answer.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    mcp_param_headers,
    x_mcp_header_map,
)

from tether.errors import TetherError
from tether.gateway.bridge_auth import AgentTokens, BridgeConfig, json_value

__all__ = ["AgentTokens", "Bridge", "BridgeConfig", "serve_stdio"]

log = logging.getLogger("tether.gateway")

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"  # the per-request era's
SESSION_HEADER = "mcp-session-id"
DENIED = -32003  # as the gateway's own refusals (tether.gateway.handlers)
UNAVAILABLE = -32004
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
TIMEOUT = httpx2.Timeout(30.0, read=None)  # a tool call may take long; connecting may not
MAX_EVENT = 16 * 1024 * 1024  # bytes in one answer (an SSE event or a JSON body)


class Bridge:
    """Relays JSON-RPC between newline-delimited stdio and ``/mcp/NAME`` (streamable HTTP)."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        tokens: AgentTokens,
        endpoint: str,
        write: Callable[[bytes], None] | None = None,
    ) -> None:
        """``write`` takes each answer line (default: this process's stdout)."""
        self._http = http
        self._tokens = tokens
        self._endpoint = endpoint
        self._out_lock = anyio.Lock()
        self._write = write or _stdout
        self.session_id: str | None = None
        self._version: str | None = None  # negotiated by initialize
        self._param_headers: dict[str, dict[tuple[str, ...], str]] = {}
        self._in_flight: dict[Any, tuple[anyio.CancelScope, bool]] = {}  # scope, modern?
        self._modern = False  # a per-request era request was seen
        self._init: dict[str, Any] | None = None  # the client's initialize, to open anew
        self._reopening = anyio.Lock()

    async def run(self, lines: AsyncIterator[bytes]) -> None:
        """Relay until stdin ends; then end the session (answers still due are dropped:
        the client that would read them has gone)."""
        async with anyio.create_task_group() as group:
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    await self._emit(_error(None, PARSE_ERROR, "Parse error: not one JSON value"))
                    continue
                group.start_soon(self._forward, message)
            group.cancel_scope.cancel()
        await self.close()

    async def close(self) -> None:
        """End the HTTP session, if one was opened (best effort)."""
        if self.session_id is None:
            return
        with anyio.move_on_after(5):
            try:
                headers = {"authorization": f"Bearer {await self._tokens.bearer()}"}
                headers[SESSION_HEADER] = self.session_id
                await self._http.delete(self._endpoint, headers=headers)
            except (TetherError, httpx2.HTTPError):
                pass
        self.session_id = None

    async def _forward(self, message: Any) -> None:
        if not isinstance(message, dict):
            await self._emit(_error(None, INVALID_REQUEST, "send one JSON-RPC message a line"))
            return
        request = "method" in message and "id" in message
        request_id = message.get("id") if request else None
        if message.get("method") == "initialize":
            self._init = message
        if self._cancels_modern(message):
            return
        scope = anyio.CancelScope()
        if request:
            modern = _modern_version(message) is not None
            self._modern = self._modern or modern
            self._in_flight[_key(request_id)] = (scope, modern)
        answer = None  # also when a per-request era cancel closes the stream
        try:
            with scope:
                answer = await self._post(message)
        except Exception as exc:  # a bug here must not end the bridge: answer, fail closed
            log.error("the bridge failed on a %s: %r", _what(message), exc)
            answer = UNAVAILABLE, f"the stdio bridge failed: {exc.__class__.__name__}"
        finally:
            if request:
                self._in_flight.pop(_key(request_id), None)
        if answer is not None:
            if request:
                await self._emit(_refusal(message, *answer))
            else:
                log.warning("Tether refused a %s: %s", _what(message), answer[1])

    async def _post(self, message: dict[str, Any]) -> tuple[int, str] | None:
        """POST ``message`` and relay what comes back; returns the refusal when the
        server answered without JSON-RPC (error code, text), else None. A 401 renews the
        token once; a session the server ended (404) is opened again once, as the client
        opened it (its tokens may have been replaced meanwhile, or the server restarted)."""
        body = json.dumps(message, separators=(",", ":")).encode()
        refused: str | None = None  # a bearer the server answered 401
        renewed = reopened = False
        while True:
            try:
                bearer = await self._tokens.bearer(renew=refused)
            except TetherError as exc:
                return DENIED, f"denied: {exc.description}"
            stale, refused = self.session_id, None
            headers = self._headers(message) | {"authorization": f"Bearer {bearer}"}
            try:
                async with self._http.stream(
                    "POST", self._endpoint, content=body, headers=headers
                ) as response:
                    if response.status_code == 401 and not renewed and self._tokens.renewable:
                        renewed, refused = True, bearer  # revoked or expired: once more
                        continue
                    ended = response.status_code == 404 and stale is not None
                    if not ended or reopened or message.get("method") == "initialize":
                        return await self._relay(message, response)
            except httpx2.HTTPError as exc:
                return UNAVAILABLE, f"cannot reach Tether: {exc}"
            reopened = True
            why = await self._reopen(stale)
            if why is not None and why.startswith("denied: "):
                return DENIED, why
            if why is not None:
                return UNAVAILABLE, f"the MCP session ended and could not be opened again: {why}"

    async def _reopen(self, stale: str | None) -> str | None:
        """Open a new session with the client's own ``initialize`` (and ``initialized``)
        in place of ``stale``; None when done (by this request or another), else why not."""
        async with self._reopening:
            if self.session_id != stale:
                return None
            if self._init is None:
                return "the client never opened one"
            self.session_id = None
            plain = {"accept": "application/json, text/event-stream"}
            plain["content-type"] = "application/json"
            try:
                opened, auth = await self._initialize(plain)
                sid = opened.headers.get(SESSION_HEADER)
                if opened.status_code != 200 or not sid:
                    return _refusal_of(opened.status_code, json_value(opened.content), False)[1]
                auth[SESSION_HEADER] = sid
                if self._version is not None:
                    auth[MCP_PROTOCOL_VERSION_HEADER] = self._version
                done = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
                await self._http.post(self._endpoint, content=done, headers=plain | auth)
            except TetherError as exc:
                return f"denied: {exc.description}"
            except httpx2.HTTPError as exc:
                return f"cannot reach Tether: {exc}"
            self.session_id = sid
            log.info("opened a new MCP session in place of one Tether ended")
            return None

    async def _initialize(self, plain: dict[str, str]) -> tuple[httpx2.Response, dict[str, str]]:
        """POST the client's ``initialize``, with a token renewed once on a 401."""
        body = json.dumps(self._init).encode()
        refused: str | None = None
        while True:
            bearer = await self._tokens.bearer(renew=refused)
            auth = {"authorization": f"Bearer {bearer}"}
            opened = await self._http.post(self._endpoint, content=body, headers=plain | auth)
            if opened.status_code != 401 or refused is not None or not self._tokens.renewable:
                return opened, auth
            refused = bearer

    def _headers(self, message: dict[str, Any]) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        if self.session_id is not None:
            headers[SESSION_HEADER] = self.session_id
        params = message.get("params")
        modern = _modern_version(message)
        if modern is not None and isinstance(params, dict):  # the per-request envelope
            method = str(message.get("method"))
            headers[MCP_PROTOCOL_VERSION_HEADER] = modern
            headers[MCP_METHOD_HEADER] = method
            named = params.get(NAME_BEARING_METHODS.get(method, ""))
            if isinstance(named, str):
                headers[MCP_NAME_HEADER] = encode_header_value(named)
            arguments = params.get("arguments")
            header_map = self._param_headers.get(str(named))
            if method == "tools/call" and header_map and isinstance(arguments, dict):
                headers |= mcp_param_headers(header_map, arguments)
        elif self._version is not None:
            headers[MCP_PROTOCOL_VERSION_HEADER] = self._version
        return headers

    def _cancels_modern(self, message: dict[str, Any]) -> bool:
        """In the per-request era a cancel is not POSTed: closing the request's stream is
        the signal (in the handshake era the server acts on the notification itself)."""
        if message.get("method") != "notifications/cancelled":
            return False
        params = message.get("params")
        cancelled = params.get("requestId") if isinstance(params, dict) else None
        entry = self._in_flight.get(_key(cancelled))
        if entry is None:
            return self._modern and self._version is None
        scope, modern = entry
        if modern:
            scope.cancel()
        return modern

    async def _relay(
        self, message: dict[str, Any], response: httpx2.Response
    ) -> tuple[int, str] | None:
        if response.status_code == 202:
            return None if "id" not in message else (UNAVAILABLE, "Tether sent no answer")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "text/event-stream" and response.is_success:
            return await self._relay_events(message, response)
        answer = json_value(await _read_capped(response))
        if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
            return _refusal_of(response.status_code, answer, self.session_id is not None)
        if "id" not in message:  # an error for a notification or a response: no one to tell
            error = answer.get("error")
            return (0, str(error.get("message"))) if isinstance(error, dict) else None
        if response.is_success and message.get("method") == "initialize":
            self.session_id = response.headers.get(SESSION_HEADER)
        await self._emit(answer, message)
        return None

    async def _relay_events(
        self, message: dict[str, Any], response: httpx2.Response
    ) -> tuple[int, str] | None:
        if message.get("method") == "initialize":
            self.session_id = response.headers.get(SESSION_HEADER)
        try:
            async for event in httpx2.EventSource(response, max_event_size=MAX_EVENT):
                answer = json_value(event.data.encode()) if event.data else None
                if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
                    continue
                await self._emit(answer, message)
                if isinstance(answer, dict) and "method" not in answer:
                    return None  # the response: this request is answered
        except httpx2.SSEError as exc:
            return UNAVAILABLE, f"Tether's answer broke off: {exc}"
        return None if "id" not in message else (UNAVAILABLE, "Tether's answer ended early")

    async def _emit(self, answer: Any, request: Any = None) -> None:
        if isinstance(answer, dict) and isinstance(request, dict) and "method" not in answer:
            if answer.get("id") is None and "id" in request:
                answer["id"] = request["id"]  # an error for a request the server could not parse
            self._learn(str(request.get("method")), answer.get("result"))
        line = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
        async with self._out_lock:
            await anyio.to_thread.run_sync(self._write, line)

    def _learn(self, method: str, result: Any) -> None:
        """Remember what later requests' headers need: the negotiated version, and which
        tool arguments travel as ``Mcp-Param-*`` headers."""
        if not isinstance(result, dict):
            return
        if method == "initialize" and isinstance(result.get("protocolVersion"), str):
            self._version = result["protocolVersion"]
        if method == "tools/list" and isinstance(result.get("tools"), list):
            for tool in result["tools"]:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self._param_headers[tool["name"]] = x_mcp_header_map(tool.get("inputSchema"))


async def serve_stdio(config: BridgeConfig) -> None:
    """Bridge this process's stdin/stdout to ``/mcp/NAME`` of the Tether at ``config.url``
    until the client leaves; fails before serving when the agent cannot get a token."""
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        tokens = AgentTokens(http, config)
        await tokens.discover()
        await tokens.bearer()  # fail now, not at the first request
        bridge = Bridge(http, tokens, f"{config.url}/mcp/{quote(config.name, safe='')}")
        await bridge.run(_lines(anyio.wrap_file(sys.stdin.buffer)))


def _stdout(line: bytes) -> None:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


async def _lines(stdin: Any) -> AsyncIterator[bytes]:
    async for line in stdin:
        yield bytes(line)


async def _read_capped(response: httpx2.Response) -> bytes:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_EVENT:
            return b""
    return data


def _modern_version(message: dict[str, Any]) -> str | None:
    """The protocol version a per-request era message carries in ``params._meta``."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _refusal_of(status: int, body: Any, in_session: bool) -> tuple[int, str]:
    """An HTTP answer without JSON-RPC, as (error code, text) for the MCP client."""
    why = f"HTTP {status}"
    if isinstance(body, dict):
        why = str(body.get("error_description") or body.get("error") or why)
    if status in (401, 403):
        return DENIED, f"denied: {why}"
    if status == 404 and in_session:
        return UNAVAILABLE, "the MCP session ended (Tether closed it): reconnect to start anew"
    return UNAVAILABLE, f"upstream unavailable: {why}"


def _refusal(request: dict[str, Any], code: int, text: str) -> dict[str, Any]:
    """The answer to a request the server refused without JSON-RPC: a tool result with
    ``isError`` for a tool call (as the gateway answers), a JSON-RPC error otherwise."""
    if request.get("method") == "tools/call":
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
        if _modern_version(request) is not None:
            result["resultType"] = "complete"  # the per-request era's results say so
        return {"jsonrpc": "2.0", "id": request["id"], "result": result}
    return _error(request["id"], code, text)


def _error(request_id: Any, code: int, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": text}}


def _key(request_id: Any) -> tuple[str, Any]:
    return (type(request_id).__name__, request_id)  # "1" and 1 are different requests


def _what(message: Any) -> str:
    return str(message.get("method") or "response") if isinstance(message, dict) else "message"
