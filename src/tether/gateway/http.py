"""The gateway's HTTP face: every upstream served at ``/mcp/NAME`` (streamable HTTP, in
both the handshake and the per-request protocol modes the MCP SDK speaks).

A request without a valid token for ``<issuer>/mcp/NAME`` is answered 401 with
``WWW-Authenticate: Bearer resource_metadata=...`` pointing at the RFC 9728 document, and
never reaches MCP handling; inside, every listing and call goes through :class:`Gateway`,
which verifies the token again on each call (so a revoked token or a suspended agent is
refused on its very next call). Upstream sessions are kept by a :class:`Supervisor`:
opened on first use, one per upstream, restarted when they die.

The setting ``gateway_path`` chooses who answers an authenticated request: ``"lean"`` (the
default) answers the frames that matter itself (:mod:`tether.gateway.lean`) and hands the
rest to the MCP SDK's server; ``"sdk"`` hands everything to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
from anyio import to_thread
from mcp.server.lowlevel import Server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.core import Tether
from tether.errors import TetherError
from tether.gateway.enforce import Gateway
from tether.gateway.handlers import Opened, build_server
from tether.gateway.lean import LeanPath
from tether.gateway.sessions import SESSION_HEADER, Sessions
from tether.gateway.supervisor import Supervisor
from tether.tokens import VerifiedToken
from tether.upstreams.servers import Upstream

__all__ = ["McpFace", "protected_resource_metadata"]

log = logging.getLogger("tether.gateway")

_UPSTREAM_TTL = 1.0  # seconds a removed upstream may still be found by this process
_SERVING: ContextVar[str] = ContextVar("tether_mcp_server", default="")  # this request's


def protected_resource_metadata(tether: Tether, name: str) -> dict[str, Any]:
    """RFC 9728 metadata of upstream ``name``: the resource, Tether as its authorization
    server, and the scopes (``tools/call:NAME/<tool>`` ...)."""
    upstream = tether.upstreams.get(name)
    issuer = tether.settings.issuer
    return {
        "resource": upstream.resource(issuer),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [
            f"{action}:{upstream.name}/*"
            for action in ("tools/call", "resources/read", "prompts/get")
        ],
        "resource_name": f"{upstream.name} (through Tether)",
    }


class McpFace:
    """The ASGI app for ``/mcp/{name}``; run :meth:`lifespan` around serving."""

    def __init__(self, tether: Tether) -> None:
        self.tether = tether
        self.pool = Supervisor(tether)
        self._known: dict[str, tuple[Upstream, float]] = {}
        self.server: Server[Any] = build_server(
            self._resolve, version=tether.version, input_schema=self._input_schema
        )
        # Every request is authenticated by its bearer token (no cookies), so the SDK's
        # localhost DNS-rebinding guard is not needed; "gateway" keeps it off.
        self._inner = self.server.streamable_http_app(
            streamable_http_path="/mcp/{name}", transport_security=None, host="gateway"
        )
        self.sessions = Sessions(tether, self.server.session_manager)
        self.lean: LeanPath | None = None
        if tether.settings.gateway_path == "lean":
            waits = tether.settings.guard.approval_wait.total_seconds() > 0
            self.lean = LeanPath(self.server, self.sessions, self._schema_of, waits=waits)

    @asynccontextmanager
    async def lifespan(self) -> Any:
        async with (
            self.server.session_manager.run(),
            self.pool.running(),
            anyio.create_task_group() as group,
        ):
            group.start_soon(self.sessions.watching)
            try:
                yield
            finally:
                group.cancel_scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        repeated = _repeated(scope.get("headers") or ())
        if repeated is not None:  # the checks and the serving must read the same value
            why = f"the {repeated} header is sent more than once"
            await _json(400, {"error": "invalid_request", "error_description": why})(
                scope, receive, send
            )
            return
        parts = scope["path"].split("/")
        name = parts[2] if len(parts) == 3 and parts[1] == "mcp" else ""
        verdict = await to_thread.run_sync(self._refusal, scope, name)
        if not isinstance(verdict, tuple):
            await verdict(scope, receive, send)
            return
        _SERVING.set(name)
        token, bearer = verdict
        headers = dict(scope.get("headers") or ())
        known = headers.get(SESSION_HEADER)
        audience = str(token.claims["aud"])
        if known and not self.sessions.holds(known.decode("latin-1")):
            await _session_not_found(scope, receive, send)  # ended, or another worker's
            return
        if known and not self.sessions.admits(known.decode("latin-1"), token.chain, audience):
            await to_thread.run_sync(self._not_yours, token, name)
            await _session_not_found(scope, receive, send)
            return

        if self.lean is not None:
            caller = (token.chain, bearer, audience)
            rest = await self.lean.serve(
                scope,
                receive,
                send,
                name=name,
                caller=caller,
                opened=lambda: self._opened(name, bearer),
            )
            if rest is None:
                return
            receive = rest

        async def tracked(message: Message) -> None:
            # a new session gets its ID here (bound only once the SDK accepted it)
            if message["type"] == "http.response.start" and message["status"] < 400:
                given = dict(message.get("headers") or ()).get(SESSION_HEADER) or known
                if given:
                    sid = given.decode("latin-1")
                    self.sessions.seen(sid, token.chain, bearer, audience)
            await send(message)

        await self._inner(scope, receive, tracked)

    def _refusal(self, scope: Scope, name: str) -> ASGIApp | tuple[VerifiedToken, str]:
        """The verified token (and the bearer) when the request carries a valid token for
        this server; else the answer."""
        try:
            upstream = self._upstream(name)
        except TetherError:
            return _json(404, {"error": "not_found", "error_description": "no such MCP server"})
        metadata = (
            f"{self.tether.settings.issuer}/.well-known/oauth-protected-resource/mcp/"
            f"{upstream.name}"
        )
        headers = dict(scope.get("headers") or ())
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        why = "send a bearer token for this server"
        if scheme.lower() == "bearer" and token.strip():
            try:
                return Gateway(self.tether, upstream.name).verify(token.strip()), token.strip()
            except TetherError as exc:
                why = exc.description
        self.tether.refused(
            "anonymous", why, "mcp", type="tool.refused", resource=f"{upstream.name}/*"
        )
        challenge = f'Bearer error="invalid_token", resource_metadata="{metadata}"'
        body = {"error": "invalid_token", "error_description": why}
        return _json(401, body, {"WWW-Authenticate": challenge})

    def _not_yours(self, token: VerifiedToken, name: str) -> None:
        self.tether.refused(
            token.client_id,
            "the MCP session was opened by another agent or chain",
            "mcp",
            type="tool.refused",
            resource=f"{name}/*",
        )

    def _upstream(self, name: str) -> Upstream:
        """The upstream named ``name``, read from the store at most once a second."""
        now = time.monotonic()
        cached = self._known.get(name)
        if cached is not None and now - cached[1] < _UPSTREAM_TTL:
            return cached[0]
        upstream = self.tether.upstreams.get(name)
        self._known[name] = (upstream, now)
        return upstream

    def _input_schema(self, tool: str) -> dict[str, Any] | None:
        """For the SDK's check of ``Mcp-Param-*`` headers in the per-request protocol: the
        schema of ``tool`` as the open upstream session last listed it, so that a call does
        not cost a listing (None when not known: the check is skipped, the call itself is
        still enforced by the gateway)."""
        return self._schema_of(_SERVING.get(), tool)

    def _schema_of(self, name: str, tool: str) -> dict[str, Any] | None:
        session = self.pool.opened(name)
        return session.input_schema(tool) if session is not None else None

    async def _opened(self, name: str, bearer: str) -> Opened:
        return Gateway(self.tether, name), bearer, await self.pool.get(name)

    async def _resolve(self, ctx: Any) -> Opened:
        return await self._opened(*_who(ctx))


def _who(ctx: Any) -> tuple[str, str]:
    request = ctx.request
    name = str(request.path_params.get("name", ""))
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return name, token.strip() if scheme.lower() == "bearer" else ""


_SINGLE = (b"authorization", SESSION_HEADER)  # headers a request may carry at most once


def _repeated(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The name of a header of :data:`_SINGLE` that ``headers`` carry more than once: one
    reader takes the first and another the last, so a session ID checked as the caller's
    could be served as another's (refused whole, whatever the values)."""
    seen: set[bytes] = set()
    for key, _ in headers:
        if key in _SINGLE:
            if key in seen:
                return key.decode("latin-1")
            seen.add(key)
    return None


async def _session_not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The SDK's own answer to an unknown session ID (MCP: 404), so that another's session
    cannot be told from one that does not exist."""
    from starlette.responses import JSONResponse

    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
    await JSONResponse(body, status_code=404)(scope, receive, send)


def _json(status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> ASGIApp:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)
