"""The gateway's own MCP client connection to an upstream: JSON-RPC 2.0 over a process's
pipes (:mod:`tether.gateway.pipe`) or over streamable HTTP (:mod:`tether.gateway.streamable`),
with results as plain dicts, parsed once (:mod:`tether.gateway.jsonrpc`).

A :class:`Wire` sends requests, many at a time, and returns each one's result; the
server's error answer is raised as :class:`~mcp.shared.exceptions.MCPError` and leaves the
connection open. A request unanswered within ``timeout`` seconds (:data:`REQUEST_TIMEOUT`)
fails alone with :class:`NoAnswer` (the server is told it was cancelled; a late answer is
dropped). Anything else that goes wrong on the connection (the process exits, the HTTP
connection fails, the session is gone, a frame is malformed or answers no open request,
the server asks more than :data:`MAX_SERVER_REQUESTS` of its own at once, a process does
not take in what is written to it within :data:`WRITE_TIMEOUT`) is a
:class:`~tether.gateway.jsonrpc.WireError`: the connection is done, its ``dead`` event is
set, and every open request fails with it.

The server's own requests are answered as the MCP SDK's client answers them when it
has no callbacks: ``ping`` with an empty result, sampling, elicitation and roots with
``-32600`` (not supported), anything else with ``-32601``. Its notifications are logged
at debug level and otherwise ignored.

:func:`handshake` opens the connection the legacy way (``initialize`` offering
:data:`~mcp_types.LATEST_HANDSHAKE_VERSION`, then ``notifications/initialized``) and
refuses a server that answers with a version the SDK does not know for that handshake.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from contextlib import suppress
from typing import Any

import anyio
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from tether.gateway import jsonrpc
from tether.gateway.jsonrpc import Answer, Request, WireError

__all__ = [
    "CLIENT_INFO",
    "MAX_FRAME",
    "MAX_SERVER_REQUESTS",
    "REQUEST_TIMEOUT",
    "WRITE_TIMEOUT",
    "NoAnswer",
    "Wire",
    "handshake",
    "reply_to",
]

log = logging.getLogger("tether.gateway")

REQUEST_TIMEOUT = 300.0  # seconds a request may wait for its answer (the SDK's HTTP read bound)
MAX_FRAME = 16 * 1024 * 1024  # bytes of one message from the upstream (a line, a body, an event)
# requests of the server's own the gateway answers at once (stdio), or in one answer's
# event stream (HTTP): a server that asks more is flooding, and is not trusted further
MAX_SERVER_REQUESTS = 32
WRITE_TIMEOUT = 10.0  # seconds a process has to take in what is written to it (or: jammed)
CANCEL_GRACE = 2.0  # seconds given to telling the server a request was abandoned
CLIENT_INFO = {"name": "tether-gateway", "version": "1"}

# what the SDK's client answers to a server's request it has no callback for
_UNSUPPORTED = {
    "sampling/createMessage": "Sampling not supported",
    "elicitation/create": "Elicitation not supported",
    "roots/list": "List roots not supported",
}


class NoAnswer(Exception):
    """A request the upstream did not answer in time (the connection stays open)."""


class Wire(ABC):
    """One JSON-RPC connection to an upstream; ``dead`` is set once it has failed."""

    def __init__(self, dead: anyio.Event, timeout: float) -> None:
        self.dead = dead
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._failure: WireError | None = None
        self.version: str | None = None  # the protocol version agreed

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result of ``method``; raises MCPError (the server's error answer),
        NoAnswer or WireError. A value JSON cannot carry raises ValueError, unsent."""
        self._check()
        request_id = next(self._ids)
        frame = jsonrpc.encode(jsonrpc.request(request_id, method, params))
        try:
            with anyio.fail_after(self.timeout):
                answer = await self._exchange(request_id, method, frame)
        except TimeoutError:
            await self._cancel(request_id)
            raise NoAnswer(f"{method}: no answer within {self.timeout:g} s") from None
        if answer.error is not None:
            raise answer.error
        assert answer.result is not None  # jsonrpc.parse: one of the two
        return answer.result

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self._check()
        frame = jsonrpc.encode(jsonrpc.notification(method, params))
        with anyio.fail_after(self.timeout):
            await self._post(frame)

    def negotiated(self, version: str) -> None:
        """The protocol version the handshake settled on."""
        self.version = version

    def fail(self, cause: WireError) -> WireError:
        """Mark the connection failed for ``cause`` (the first cause wins); returns it."""
        if self._failure is None:
            self._failure = cause
            log.debug("upstream connection failed: %s", cause)
            self.dead.set()
        return cause

    def _check(self) -> None:
        if self._failure is not None:
            raise WireError(f"the connection to the upstream failed: {self._failure}")

    async def _cancel(self, request_id: int) -> None:
        """Tell the server a request was given up (best effort: the answer is dropped)."""
        params = {"requestId": request_id, "reason": "no answer in time"}
        frame = jsonrpc.encode(jsonrpc.notification("notifications/cancelled", params))
        with suppress(WireError), anyio.move_on_after(CANCEL_GRACE):
            await self._post(frame)

    async def _answer_request(self, request: Request) -> None:
        await self._post(jsonrpc.encode(reply_to(request)))

    @abstractmethod
    async def _exchange(self, request_id: int, method: str, frame: bytes) -> Answer:
        """Send request ``frame`` and return its answer (raising WireError)."""

    @abstractmethod
    async def _post(self, frame: bytes) -> None:
        """Send a message that is not answered (a notification, a reply)."""


def reply_to(request: Request) -> dict[str, Any]:
    """The answer to a request from the server, as the SDK's client gives it without
    callbacks."""
    if request.method == "ping":
        return jsonrpc.response(request.id, {})
    unsupported = _UNSUPPORTED.get(request.method)
    if unsupported is not None:
        return jsonrpc.error(request.id, jsonrpc.INVALID_REQUEST, unsupported)
    log.debug("upstream asked for %s: not supported", jsonrpc.shown(request.method))
    return jsonrpc.error(request.id, jsonrpc.METHOD_NOT_FOUND, "Method not found")


async def handshake(wire: Wire) -> str:
    """Initialize ``wire``; the protocol version agreed. Raises WireError for a server
    that answers with a version the gateway does not speak."""
    params = {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": {},
        "clientInfo": CLIENT_INFO,
    }
    result = await wire.request("initialize", params)
    version = result.get("protocolVersion")
    if not isinstance(version, str) or version not in HANDSHAKE_PROTOCOL_VERSIONS:
        raise wire.fail(
            WireError(
                "the upstream answered initialize with protocol version "
                f"{jsonrpc.shown(version, 40)}, "
                f"which the gateway does not speak ({', '.join(HANDSHAKE_PROTOCOL_VERSIONS)})"
            )
        )
    wire.negotiated(version)
    await wire.notify("notifications/initialized")
    return version
