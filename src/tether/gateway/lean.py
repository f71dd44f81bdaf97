"""The lean path of the HTTP face: the frames that matter answered without the MCP SDK's
server machinery (``gateway_path = "lean"``, the default).

A POST's body is parsed once, strictly (:mod:`tether.gateway.frames`), its method
dispatched to the same answers the SDK server gives (:mod:`tether.gateway.handlers`,
through :class:`~tether.gateway.enforce.Gateway`: decided and recorded before anything is
forwarded), and answered with one ``application/json`` body. Only the parsed values that
were decided on go upstream (the upstream client serialises them again), never the bytes
the agent sent.

Handled here, in both protocol eras:

- the handshake era (``MCP-Protocol-Version`` absent or a handshake version): an
  ``initialize`` without a session opens a lean session (``Mcp-Session-Id``, bound to the
  token's chain and server by :class:`~tether.gateway.sessions.Sessions` exactly as the
  SDK's sessions are); in it ``ping``, ``tools/*``, ``resources/list``,
  ``resources/read``, ``prompts/*`` and ``initialize`` are answered, any other method is
  -32601, a notification or a client's answer is 202 (a cancellation too: each request is
  answered on its own POST, inline), DELETE ends it, GET is 405 (the gateway sends
  nothing outside a request's answer);
- the per-request era (a modern ``MCP-Protocol-Version``): ``tools/*``,
  ``resources/list``, ``resources/read`` and ``prompts/*``, after the SDK's own checks of
  the envelope and of the ``Mcp-Method``/``Mcp-Name``/``Mcp-Param-*`` headers (its
  functions, so the same rejections).

Everything else (a request of a session the SDK opened, a request without a session
other than ``initialize``, a modern notification or another modern method, a GET or a
request whose ``Accept`` the SDK refuses) goes to the SDK path unchanged, with its body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    Implementation,
    InitializeRequestParams,
    InitializeResult,
)
from mcp_types import methods as _methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from tether.gateway import handlers, inbound
from tether.gateway.frames import Frame, FrameError, envelope, parse
from tether.gateway.handlers import Opened
from tether.gateway.sessions import Sessions

__all__ = ["LeanPath"]

log = logging.getLogger("tether.gateway")

_SERVED: Final = frozenset(
    {"tools/list", "tools/call", "resources/list", "resources/read", "prompts/list"}
    | {"prompts/get"}
)
_USES: Final = frozenset({"tools/call", "resources/read", "prompts/get"})
_SESSION: Final = MCP_SESSION_ID_HEADER.encode()
_JSON: Final = (b"content-type", b"application/json")
_INVALID_BODY: Final = "Body must be a single JSON-RPC request or notification object"

Open = Callable[[], Awaitable[Opened]]  # the request's gateway, bearer and upstream
Caller = tuple[Sequence[str], str, str]  # a verified token's chain, the bearer, its resource


class LeanPath:
    """The lean answers of one face: :meth:`serve` a request, or hand it back."""

    def __init__(
        self,
        server: Server[Any],
        sessions: Sessions,
        input_schema: Callable[[str, str], Mapping[str, Any] | None],
        *,
        waits: bool = False,
    ) -> None:
        options = server.create_initialization_options()
        # held calls wait for their approval ([guard] approval_wait): a modern request that
        # asks for progress goes to the SDK path, which answers on an event stream
        self._waits = waits
        self._init = InitializeResult(
            protocol_version=LATEST_HANDSHAKE_VERSION,
            capabilities=options.capabilities,
            server_info=Implementation(name=options.server_name, version=options.server_version),
            instructions=options.instructions,
        )
        self._stamp = server.server_info_stamp
        self._sessions = sessions
        self._input_schema = input_schema

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        name: str,
        caller: Caller,
        opened: Open,
    ) -> Receive | None:
        """Answer the request (None), or give back what the SDK path must read instead of
        ``receive`` (the body, if it was read here) when this path does not handle it.
        ``caller``: the verified token's chain, the bearer and the resource it is for."""
        headers = Headers(scope=scope)
        method = scope["method"]
        sid = headers.get(MCP_SESSION_ID_HEADER)
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            # the per-request era, whatever session is named (as the SDK routes it)
            if method != "POST" or not inbound.accepts(headers, sse=True):
                return receive
            body = await inbound.read_body(receive)
            if body is None:
                await inbound.too_large(send)
                return None
            answered = await self._modern(body, headers, send, name=name, opened=opened)
            return None if answered else inbound.replayed(body, receive)
        session = None
        if sid is not None:
            spoken = self._sessions.lean(sid)
            if spoken is None:
                return receive  # a session the SDK opened (McpFace checked it is the caller's)
            self._sessions.seen(sid, *caller)
            if method != "POST":
                await self._other(sid, method, send)
                return None
            session = (sid, spoken)
        elif method != "POST":
            return receive
        body = await inbound.read_body(receive)
        if body is None:
            await inbound.too_large(send)
            return None
        again = inbound.replayed(body, receive)
        return await self._legacy(
            body, headers, session, send, caller=caller, opened=opened, again=again
        )

    # ---- the handshake era ------------------------------------------------------------

    async def _legacy(
        self,
        body: bytes,
        headers: Headers,
        session: tuple[str, str] | None,
        send: Send,
        *,
        caller: Caller,
        opened: Open,
        again: Receive,
    ) -> Receive | None:
        sid, spoken = session or (None, "")
        extra = ((_SESSION, sid.encode()),) if sid else ()
        if not inbound.accepts(headers, sse=True):
            why = "Not Acceptable: Client must accept both application/json and text/event-stream"
            await inbound.error(send, 406, None, -32600, why, extra)
            return None
        if not inbound.json_content(headers):
            why = "Unsupported Media Type: Content-Type must be application/json"
            await inbound.error(send, 415, None, -32600, why, extra)
            return None
        try:
            frame = envelope(parse(body))
        except FrameError as exc:
            kind = "Parse error" if exc.code == -32700 else "Invalid Request"
            await inbound.error(send, 400, None, exc.code, f"{kind}: {exc}", extra)
            return None
        if sid is None:
            if frame.method != "initialize" or frame.notification:
                return again  # no session: only the SDK path answers (it says why)
            await self._initialize(frame, send, caller)
            return None
        if frame.notification:  # a notification, or a client's answer: nothing to do
            await inbound.reply(send, 202, b"", inbound.JSON, *extra)
            return None
        if frame.method == "initialize":
            answer, _ = self._initialized(frame)
        else:
            answer = await _answer(frame, spoken, opened)
        await inbound.answer(send, 200, frame.id, answer, *extra)
        return None

    async def _initialize(self, frame: Frame, send: Send, caller: Caller) -> None:
        """Open a lean session (when the ``initialize`` is sound) and answer."""
        answer, agreed = self._initialized(frame)
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if "result" in answer:
            sid = self._sessions.open_lean(*caller, version=agreed)
            if sid is None:
                await inbound.error(send, 503, None, -32603, "Too many open sessions", ())
                return
            extra = ((_SESSION, sid.encode()),)
        await inbound.answer(send, 200, frame.id, answer, *extra)

    def _initialized(self, frame: Frame) -> tuple[dict[str, Any], str]:
        """The ``initialize`` answer (as the SDK server gives it) and the version agreed:
        the requested one if it is a handshake version, else the latest."""
        try:
            init = InitializeRequestParams.model_validate(frame.params, by_name=False)
        except ValidationError:
            return _failure(_invalid()), ""
        wanted = init.protocol_version
        agreed = wanted if wanted in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        result = self._init.model_copy(update={"protocol_version": agreed})
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {"result": _methods.serialize_server_result("initialize", agreed, dumped)}, agreed

    async def _other(self, sid: str, method: str, send: Send) -> None:
        if method == "DELETE":
            self._sessions.end(sid)
            await inbound.reply(send, 200, b"", inbound.JSON)
            return
        extra = ((_SESSION, sid.encode()), (b"allow", b"POST, DELETE"))
        await inbound.error(send, 405, None, -32600, "Method Not Allowed", extra)

    # ---- the per-request era ---------------------------------------------------------

    async def _modern(
        self, body: bytes, headers: Headers, send: Send, *, name: str, opened: Open
    ) -> bool:
        """Answer a modern request (True), or leave it to the SDK path (False)."""
        try:
            decoded = parse(body)
        except FrameError as exc:
            await inbound.error(send, 400, None, exc.code, f"Parse error: {exc}", ())
            return True
        if isinstance(decoded, dict) and "id" not in decoded:
            return False  # a notification: the SDK path acknowledges it
        try:
            frame = envelope(decoded)
        except FrameError:
            frame = None
        if frame is None or frame.method is None:
            await inbound.error(send, 400, None, -32600, _INVALID_BODY, ())
            return True
        if frame.method not in _SERVED:
            return False
        if self._waits and frame.method in _USES and _asks_progress(decoded):
            return False  # the SDK path can tell it, while a held call waits, that it waits
        rejection = self._rejection(decoded, frame, headers, name)
        if isinstance(rejection, InboundModernRoute):
            spoken = rejection.protocol_version
        else:
            code, why = rejection.code, rejection.message
            status = ERROR_CODE_HTTP_STATUS.get(code, 200)
            await inbound.error(send, status, frame.id, code, why, (), rejection.data)
            return True
        answer = await _answer(frame, spoken, opened)
        if "result" in answer:
            answer["result"] = self._stamped(answer["result"])
            status = 200
        else:
            status = ERROR_CODE_HTTP_STATUS.get(answer["error"]["code"], 200)
        await inbound.answer(send, status, frame.id, answer)
        return True

    def _rejection(
        self, decoded: dict[str, Any], frame: Frame, headers: Headers, name: str
    ) -> InboundLadderRejection | InboundModernRoute:
        """The SDK's checks of a modern request: its routing headers appear once and agree
        with the body, the envelope is whole, ``Mcp-Param-*`` agree with the arguments;
        the rejection, or the route (with the protocol version) when they pass."""
        duplicated = find_duplicated_routing_header(headers.items())
        if duplicated is not None:
            why = f"{duplicated} header appears more than once"
            return InboundLadderRejection(code=HEADER_MISMATCH, message=why)
        verdict = classify_inbound_request(decoded, headers=dict(headers))
        if isinstance(verdict, InboundLadderRejection):
            return verdict
        tool, arguments = frame.params.get("name"), frame.params.get("arguments")
        if frame.method != "tools/call" or not isinstance(tool, str):
            return verdict
        if arguments is not None and not isinstance(arguments, Mapping):
            return verdict
        arguments = arguments or {}
        if not arguments and not any(h.startswith("mcp-param-") for h in headers):
            return verdict
        schema = self._input_schema(name, tool)
        if schema is None:
            return verdict
        return validate_mcp_param_headers(schema, arguments, headers) or verdict

    def _stamped(self, result: dict[str, Any]) -> dict[str, Any]:
        """A modern result as the SDK sends it: ``resultType`` and the server's stamp."""
        result.setdefault("resultType", "complete")
        meta = result.get("_meta")
        if meta is None:
            result["_meta"] = {"io.modelcontextprotocol/serverInfo": self._stamp}
        elif isinstance(meta, dict) and meta.get("io.modelcontextprotocol/serverInfo") is None:
            result["_meta"] = {**meta, "io.modelcontextprotocol/serverInfo": self._stamp}
        return result


# ---- the answers ---------------------------------------------------------------------


async def _answer(frame: Frame, version: str, opened: Open) -> dict[str, Any]:
    """``{"result": ...}`` or ``{"error": ...}`` for a request, as the SDK server gives
    it at protocol ``version``: its params checked by the SDK's own validator for that
    version (-32602 when they do not fit; only checked, the parsed values are used), the
    result passed through the SDK's sieve for that version (what the version does not
    define is left out)."""
    method, params = frame.method or "", frame.params
    try:
        if method in _methods.SPEC_CLIENT_METHODS:
            try:
                _methods.validate_client_request(method, version, params)
            except KeyError:
                raise MCPError(METHOD_NOT_FOUND, "Method not found", data=method) from None
            except ValidationError:
                raise _invalid() from None
        result = {**_DEFAULTS.get(method, {}), **await _dispatch(method, params, opened)}
        try:
            return {"result": _methods.serialize_server_result(method, version, result)}
        except ValidationError:
            log.warning("upstream answer to %s does not fit protocol %s", method, version)
            raise MCPError(INTERNAL_ERROR, "Handler returned an invalid result") from None
    except MCPError as exc:
        return _failure(exc)


async def _dispatch(method: str, params: dict[str, Any], opened: Open) -> dict[str, Any]:
    """The answer to ``method`` (its params already checked); raises MCPError."""
    if method == "tools/call":
        return await handlers.call(opened(), params["name"], params.get("arguments") or {})
    if method == "ping":
        return {}
    kind = _LISTINGS.get(method)
    if kind is not None:
        return {f"{kind}s": await handlers.listing(opened(), kind)}
    if method == "resources/read":
        return await handlers.read(opened(), params["uri"])
    if method == "prompts/get":
        return await handlers.get_prompt(opened(), params["name"], params.get("arguments") or {})
    raise MCPError(METHOD_NOT_FOUND, "Method not found", data=method)


_LISTINGS: Final = {"tools/list": "tool", "resources/list": "resource", "prompts/list": "prompt"}

# What the SDK server's result models add to an answer (cache fields, resultType ...),
# before its sieve keeps what the request's protocol version defines.
_DEFAULTS: Final = {
    method: model(**{field: []}).model_dump(mode="json", by_alias=True, exclude_none=True)
    for method, model, field in [
        ("tools/list", types.ListToolsResult, "tools"),
        ("tools/call", types.CallToolResult, "content"),
        ("resources/list", types.ListResourcesResult, "resources"),
        ("resources/read", types.ReadResourceResult, "contents"),
        ("prompts/list", types.ListPromptsResult, "prompts"),
        ("prompts/get", types.GetPromptResult, "messages"),
    ]
}


def _asks_progress(decoded: Any) -> bool:
    """Whether a request names a progress token (``params._meta.progressToken``)."""
    params = decoded.get("params") if isinstance(decoded, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and "progressToken" in meta


def _invalid() -> MCPError:
    return MCPError(INVALID_PARAMS, "Invalid request parameters", data="")


def _failure(exc: MCPError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.error.code, "message": exc.error.message}
    if exc.error.data is not None:
        error["data"] = exc.error.data
    return {"error": error}
