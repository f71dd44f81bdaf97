"""A :class:`~tether.gateway.wire.Wire` over MCP's streamable HTTP transport.

Each request is a POST of its JSON to the endpoint over one kept-alive
``httpx2.AsyncClient`` (which carries the credential headers); the answer comes back as
a JSON body, or as an event stream that may carry the server's notifications and
requests (each answered with a POST of its own) before the answer. The session ID the
server gives ``initialize`` (``Mcp-Session-Id``) and the protocol version agreed
(``MCP-Protocol-Version``) go with every later message; closing deletes the session.

What fails the connection (:meth:`Wire.fail`): a transport error, ``404`` once in a
session (the server ended it), ``401``/``403`` (the credentials were refused: a new
session fetches them again), a redirect (not followed), a request accepted without an
answer, another content type, a body or event larger than
:data:`~tether.gateway.wire.MAX_FRAME`, a malformed message, an answer to another
request, a stream that ends without the answer, a stream that carries more than
:data:`~tether.gateway.wire.MAX_SERVER_REQUESTS` requests of the server's own (each is
answered before the next event is read: a server that floods is not trusted further).
Any other HTTP error status is that request's failure (the server's JSON-RPC error if
its body is one).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
import httpx2
from httpx2 import EventSource

from tether.gateway import jsonrpc
from tether.gateway.jsonrpc import (
    Answer,
    Malformed,
    MCPError,
    Request,
    WireError,
    first_line,
    shown,
)
from tether.gateway.wire import MAX_FRAME, MAX_SERVER_REQUESTS, REQUEST_TIMEOUT, Wire

__all__ = ["Streamable", "connected"]

log = logging.getLogger("tether.gateway")

CLOSE_GRACE = 2.0  # seconds given to deleting the session on close
DRAIN_GRACE = 0.1  # seconds given to an event stream to end after its answer
INTERNAL_ERROR = -32603
_JSON, _EVENTS = "application/json", "text/event-stream"


class Streamable(Wire):
    """JSON-RPC over streamable HTTP to ``url`` (use :func:`connected`)."""

    def __init__(self, client: httpx2.AsyncClient, url: str, dead: anyio.Event, timeout: float):
        super().__init__(dead, timeout)
        self._client = client
        self.url = url
        self.session_id: str | None = None
        self._headers = {"accept": f"{_JSON}, {_EVENTS}", "content-type": _JSON}
        self._open: set[anyio.CancelScope] = set()  # the requests in flight

    def negotiated(self, version: str) -> None:
        super().negotiated(version)
        self._headers["mcp-protocol-version"] = version  # on every later message

    async def _exchange(self, request_id: int, method: str, frame: bytes) -> Answer:
        with anyio.CancelScope() as scope:  # cancelled when the connection fails
            self._open.add(scope)
            try:
                return await self._post_request(request_id, method, frame)
            finally:
                self._open.discard(scope)
        self._check()  # cancelled by a failure of the connection: which one
        raise WireError("the request was cancelled")

    async def _post_request(self, request_id: int, method: str, frame: bytes) -> Answer:
        try:
            async with self._client.stream(
                "POST", self.url, content=frame, headers=self._headers
            ) as response:
                if method == "initialize" and response.status_code == 200:
                    self._join(response)
                return await self._answer(response, request_id)
        except httpx2.HTTPError as exc:
            raise self.fail(WireError(f"HTTP to the upstream failed ({_why(exc)})")) from None
        except WireError as exc:
            raise self.fail(exc) from None

    def fail(self, cause: WireError) -> WireError:
        super().fail(cause)
        for scope in self._open:  # no answer on a failed connection is used
            scope.cancel()
        return cause

    async def _post(self, frame: bytes) -> None:
        self._check()
        try:
            async with self._client.stream(
                "POST", self.url, content=frame, headers=self._headers
            ) as response:
                self._refused(response)
                if response.status_code >= 400:
                    log.warning(
                        "upstream %s refused a message: HTTP %d", self.url, response.status_code
                    )
        except httpx2.HTTPError as exc:
            raise self.fail(WireError(f"HTTP to the upstream failed ({_why(exc)})")) from None
        except WireError as exc:
            raise self.fail(exc) from None

    def _join(self, response: httpx2.Response) -> None:
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.session_id = self._headers["mcp-session-id"] = session_id

    def _refused(self, response: httpx2.Response) -> None:
        """Raise WireError for a status that ends the session."""
        status = response.status_code
        if status == 404 and self.session_id is not None:
            raise WireError("the upstream ended the session (HTTP 404)")
        if status in (401, 403):
            raise WireError(f"the upstream refused the gateway's credentials (HTTP {status})")
        if 300 <= status < 400:
            where = shown(response.headers.get("location", ""), 200)
            raise WireError(f"the upstream redirects (HTTP {status} to {where}): not followed")

    async def _answer(self, response: httpx2.Response, request_id: int) -> Answer:
        self._refused(response)
        status, kind = response.status_code, _content_type(response)
        if status >= 400:
            if kind == _JSON:  # a JSON-RPC error at an HTTP error status is the server's answer
                with suppress(Malformed):
                    raise jsonrpc.parse_error(await _body(response))
            raise MCPError(INTERNAL_ERROR, f"the upstream answered HTTP {status}")
        if status != 200:
            raise Malformed(f"the upstream answered a request with HTTP {status} and no answer")
        if kind == _JSON:
            return _matched(jsonrpc.parse(await _body(response)), request_id)
        if kind == _EVENTS:
            return await self._events(response, request_id)
        raise Malformed(f"the upstream answered with content type {shown(kind)}")

    async def _events(self, response: httpx2.Response, request_id: int) -> Answer:
        """The answer from an event stream, after the server's own messages in it; the
        rest of the stream (the server should end it there) is read for
        :data:`DRAIN_GRACE` at most, so that the connection can be used again."""
        events = aiter(EventSource(response, max_event_size=MAX_FRAME))
        asked = 0  # requests of the server's own in this stream
        async for event in events:
            if not event.data:  # a priming event (for resumption, which is not used)
                continue
            if event.event != "message":
                log.debug("upstream event %s ignored", shown(event.event))
                continue
            message = jsonrpc.parse(event.data)
            if isinstance(message, Request):
                asked += 1
                if asked > MAX_SERVER_REQUESTS:
                    raise Malformed(
                        f"the upstream sent more than {MAX_SERVER_REQUESTS} requests of its "
                        "own in one answer's event stream"
                    )
                await self._answer_request(message)
            elif not isinstance(message, Answer):
                log.debug("upstream notification %s", shown(message.method))
            else:
                answer = _matched(message, request_id)
                with anyio.move_on_after(DRAIN_GRACE), suppress(httpx2.HTTPError):
                    async for _ in events:
                        log.debug("upstream event after the answer ignored")
                return answer
        raise WireError("the upstream's event stream ended without the answer")

    async def close(self) -> None:
        """Delete the session on the server (best effort, bounded)."""
        if self.session_id is None or self._failure is not None:
            return
        with suppress(httpx2.HTTPError), anyio.move_on_after(CLOSE_GRACE):
            await self._client.delete(self.url, headers=self._headers)


def _matched(message: jsonrpc.Incoming, request_id: int) -> Answer:
    if not isinstance(message, Answer):
        raise Malformed("the upstream answered a request with another request or a notification")
    if message.id != request_id or type(message.id) is not int:
        raise Malformed(f"an answer to another request (id {shown(message.id, 40)})")
    return message


async def _body(response: httpx2.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_FRAME:
            raise Malformed(f"an answer larger than {MAX_FRAME} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").partition(";")[0].strip().lower()


def _why(exc: Exception) -> str:
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@asynccontextmanager
async def connected(
    client: httpx2.AsyncClient, url: str, *, dead: anyio.Event, timeout: float = REQUEST_TIMEOUT
) -> AsyncIterator[Streamable]:
    """The connection to ``url`` through ``client``; its session deleted on exit."""
    wire = Streamable(client, url, dead, timeout)
    try:
        yield wire
    finally:
        with anyio.CancelScope(shield=True):
            await wire.close()
        wire.fail(WireError("the connection was closed"))
