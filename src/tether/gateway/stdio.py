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
or from the ``Agent:`` line that ``tether agent register`` writes into the key file.

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
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

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

from tether.agent_keys import client_assertion, key_file_agent, load_private_key
from tether.errors import InvalidRequest, TetherError, error_for_code

__all__ = ["AgentTokens", "Bridge", "BridgeConfig", "serve_stdio"]

log = logging.getLogger("tether.gateway")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 §2.2
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"  # the per-request era's
SESSION_HEADER = "mcp-session-id"
DENIED = -32003  # as the gateway's own refusals (tether.gateway.handlers)
UNAVAILABLE = -32004
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
RENEW_BEFORE = 30.0  # seconds of life left when a token is renewed
TIMEOUT = httpx2.Timeout(30.0, read=None)  # a tool call may take long; connecting may not
MAX_EVENT = 16 * 1024 * 1024  # bytes in one answer (an SSE event or a JSON body)


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """What the bridge is given: the server, the upstream's name and the agent's credential."""

    url: str
    name: str
    key_file: Path | None = None
    agent_id: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str]) -> BridgeConfig:
        """Read ``TETHER_URL``, ``TETHER_AGENT_KEY`` / ``TETHER_AGENT_TOKEN`` and
        ``TETHER_AGENT_ID`` (only these: ``TETHER_HOME`` is never looked at)."""
        url = (environ.get("TETHER_URL") or "").strip().rstrip("/")
        if not url:
            raise InvalidRequest(
                "TETHER_URL is not set: the stdio bridge is a client of a running Tether "
                "(e.g. TETHER_URL=http://127.0.0.1:8700)"
            )
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise InvalidRequest(f"TETHER_URL must be an http(s) URL, not {url!r}")
        if not name or "/" in name:
            raise InvalidRequest(f"invalid MCP server name {name!r}")
        token = (environ.get("TETHER_AGENT_TOKEN") or "").strip() or None
        key = (environ.get("TETHER_AGENT_KEY") or "").strip() or None
        if token is None and key is None:
            raise InvalidRequest(
                "the agent's credential is missing: set TETHER_AGENT_KEY (its key file) "
                "or TETHER_AGENT_TOKEN"
            )
        agent_id = (environ.get("TETHER_AGENT_ID") or "").strip() or None
        key_file = Path(key) if key is not None and token is None else None
        return cls(url, name, key_file, agent_id, token)


class AgentTokens:
    """The agent's bearer tokens for ``<issuer>/mcp/NAME``, got and renewed from the server."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        config: BridgeConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._config = config
        self._clock = clock
        self._lock = anyio.Lock()
        self._token = config.token or ""
        self._expires = float("inf") if config.token else 0.0
        self._agent_id = ""
        self._key: Any = None
        self.resource = ""
        self._token_path = ""
        self._audience = ""

    @property
    def renewable(self) -> bool:
        return self._config.token is None

    async def discover(self) -> None:
        """Read the key and learn the resource, the issuer and the token endpoint."""
        config = self._config
        if config.key_file is not None:
            self._key = load_private_key(config.key_file)
            agent_id = config.agent_id or key_file_agent(config.key_file)
            if agent_id is None:
                raise InvalidRequest(
                    f"{config.key_file} does not name its agent: set TETHER_AGENT_ID to the "
                    "agent's SPIFFE ID (key files written by `tether agent register` name it)"
                )
            self._agent_id = agent_id
        name = quote(config.name, safe="")
        resource = await self._document(f"/.well-known/oauth-protected-resource/mcp/{name}")
        if resource is None:
            raise InvalidRequest(f"Tether at {config.url} has no MCP server {config.name!r}")
        self.resource = str(resource.get("resource") or "")
        issuers = resource.get("authorization_servers") or [""]
        server = await self._document("/.well-known/oauth-authorization-server") or {}
        if not self.resource or server.get("issuer") != issuers[0]:
            raise TetherError(f"{config.url} does not describe /mcp/{config.name} as Tether does")
        self._audience = str(server.get("token_endpoint") or "")
        self._token_path = urlsplit(self._audience).path or "/oauth2/token"

    async def _document(self, path: str) -> dict[str, Any] | None:
        """The JSON document at ``path`` (None when there is none: 404)."""
        url = self._config.url
        try:
            response = await self._http.get(url + path)
        except httpx2.HTTPError as exc:
            raise TetherError(f"cannot reach Tether at {url}: {exc}") from None
        body = _json_object(response.content)
        if response.status_code == 404:
            return None
        if response.status_code != 200 or body is None:
            raise TetherError(f"unexpected answer (HTTP {response.status_code}) from {url}{path}")
        return body

    async def bearer(self, *, renew: str | None = None) -> str:
        """A token with at least 30 s to live; ``renew``: a token the server refused, to
        be replaced (once, however many requests met the refusal at the same time)."""
        if not self.renewable:
            return self._token
        async with self._lock:
            if renew == self._token or self._clock() > self._expires - RENEW_BEFORE:
                self._token, lifetime = await self._issue()
                self._expires = self._clock() + lifetime
            return self._token

    async def _issue(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self._agent_id, self._audience, self._key),
            "resource": self.resource,
        }
        try:
            response = await self._http.post(self._config.url + self._token_path, data=form)
        except httpx2.HTTPError as exc:
            raise TetherError(f"cannot reach Tether at {self._config.url}: {exc}") from None
        body = _json_object(response.content) or {}
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200 or not isinstance(token, str):
            code = str(body.get("error") or "")
            why = body.get("error_description") or code or f"HTTP {response.status_code}"
            refused = error_for_code(code, response.status_code)
            raise refused(f"Tether refused the agent a token: {why}")
        return token, float(lifetime) if isinstance(lifetime, int | float) else 60.0


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
        server answered without JSON-RPC (error code, text), else None."""
        body = json.dumps(message, separators=(",", ":")).encode()
        bearer = ""
        for attempt in range(2):
            try:
                bearer = await self._tokens.bearer(renew=bearer if attempt else None)
            except TetherError as exc:
                return DENIED, f"denied: {exc.description}"
            headers = self._headers(message) | {"authorization": f"Bearer {bearer}"}
            try:
                async with self._http.stream(
                    "POST", self._endpoint, content=body, headers=headers
                ) as response:
                    if response.status_code == 401 and attempt == 0 and self._tokens.renewable:
                        continue  # the token may have just been revoked or expired: once more
                    return await self._relay(message, response)
            except httpx2.HTTPError as exc:
                return UNAVAILABLE, f"cannot reach Tether: {exc}"
        return DENIED, "denied: Tether refused a fresh token too"

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
        answer = _json_value(await _read_capped(response))
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
                answer = _json_value(event.data.encode()) if event.data else None
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


def _json_value(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _json_object(data: bytes) -> dict[str, Any] | None:
    value = _json_value(data)
    return value if isinstance(value, dict) else None


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
