"""One HTTP/1.1 server connection on asyncio streams, parsed by ``h11``, with limits.

The forward proxy (:mod:`tether.egress.forward`) reads an agent's requests through a
:class:`Http1`: on its plain connection, and again inside each ``CONNECT`` tunnel once TLS
is up. Nothing here parses HTTP by hand; what it adds to ``h11`` is what a server facing
hostile clients needs:

- a request head (request line and headers) larger than ``max_head_bytes`` is refused
  (431), and so is any request ``h11`` cannot parse (400);
- deadlines: the first byte of a request within ``idle`` seconds, then its whole head
  within ``head_timeout`` (a client dripping its headers is cut off), its whole body
  within ``body_timeout``, and each answer taken by the client within ``body_timeout``;
- a body larger than the limit is refused (413) before it is read when its
  ``Content-Length`` says so, and as soon as it passes the limit otherwise; a request
  with both ``Content-Length`` and ``Transfer-Encoding`` is refused (400), as RFC 9112
  §6.3 allows, and never forwarded (``h11`` would read it by its chunks).

Every failure is a :class:`Refused` carrying the :class:`~tether.egress.exchange.Answer`
to send (when one can still be sent) before the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass

import h11

from tether.egress.exchange import Answer, refusal

__all__ = ["Http1", "Limits", "Refused", "Request"]

_READ = 65_536
# framing and hop-by-hop headers an answer must not carry as they came: the framing is
# this connection's own (see RFC 9110 §7.6.1)
_HOP = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The forward proxy's limits (seconds, bytes, connections)."""

    idle: float = 60.0  # a kept-alive connection waits this long for its next request
    head_timeout: float = 10.0  # a request's head, from its first byte
    body_timeout: float = 30.0  # a request's body, and writing each answer
    tls_timeout: float = 10.0  # the TLS handshake inside a tunnel
    max_head_bytes: int = 32_768
    max_connections: int = 1_024


@dataclass(frozen=True, slots=True)
class Request:
    """A whole request: ``headers`` as received (names in lower case, values latin-1),
    without its framing headers (the body is whole)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[0] if len(values) == 1 else None


class Refused(Exception):  # it is the answer, not a failure of ours
    """The request cannot be served: send ``answer`` (if not None) and close."""

    def __init__(self, answer: Answer | None) -> None:
        super().__init__(answer.status if answer else "closed")
        self.answer = answer


class Http1:
    """The server side of one connection (see the module docstring)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits,
        max_body: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.max_body = max_body
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        self.method = ""

    async def requests(self) -> AsyncGenerator[Request, None]:
        """The connection's requests, whole, one after the other (keep-alive): the next
        is read once the caller has answered this one; the iteration ends when the client
        closes, goes idle, or the connection cannot carry another."""
        first = True
        while True:
            head = await self.head(first=first)
            if head is None:
                return
            first = False
            yield await self.body(head)
            if not self.next_cycle():
                return

    async def head(self, *, first: bool) -> h11.Request | None:
        """The next request's head; None when the client closed (or went idle) between
        requests. ``first``: the first request of the connection (or of a tunnel)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (self.limits.head_timeout if first else self.limits.idle)
        begun = False
        while True:
            event = self._next()
            if isinstance(event, h11.Request):
                self.method = event.method.decode("ascii")
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:
                raise Refused(refusal(400, "invalid_request", "expected a request"))
            data = await self._read(deadline - loop.time(), idle=not begun)
            if data is None:
                return None
            if data and not begun:
                begun = True
                deadline = min(deadline, loop.time() + self.limits.head_timeout)
            self.h11.receive_data(data)

    async def body(self, request: h11.Request) -> Request:
        """The whole request whose head is ``request``."""
        headers = _headers(request.headers)
        names = {k for k, _ in headers}
        if "content-length" in names and "transfer-encoding" in names:
            raise Refused(
                refusal(400, "invalid_request", "Content-Length and Transfer-Encoding together")
            )
        length = next((v for k, v in headers if k == "content-length"), None)
        if length is not None and int(length) > self.max_body:  # h11 checked it is a number
            raise Refused(self._too_large())
        if self.h11.they_are_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._next()
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body:
                    raise Refused(self._too_large())
                chunks.append(bytes(event.data))
                continue
            if event is not h11.NEED_DATA:
                raise Refused(None)  # the client closed half way
            data = await self._read(deadline - loop.time(), idle=False)
            if data is None:
                raise Refused(None)
            self.h11.receive_data(data)
        kept = tuple((k, v) for k, v in headers if k not in ("content-length", "transfer-encoding"))
        target = request.target.decode("ascii")  # h11 allows visible ASCII only
        return Request(self.method, target, kept, b"".join(chunks))

    async def respond(self, answer: Answer, *, reason: bytes = b"") -> None:
        """Send ``answer`` (its framing is this connection's: a ``Content-Length`` of its
        body; no body where HTTP allows none)."""
        status = answer.status if 200 <= answer.status <= 599 else 502
        bodiless = self.method == "HEAD" or status in (204, 304)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in _sendable(answer)]
        if self.method == "HEAD":
            headers += [
                (b"content-length", v.encode("latin-1"))
                for k, v in answer.headers
                if k.lower() == "content-length"
            ][:1]
        elif not bodiless:
            headers.append((b"content-length", str(len(answer.body)).encode()))
        await self.send(h11.Response(status_code=status, headers=headers, reason=reason))
        if answer.body and not bodiless:
            await self.send(h11.Data(data=answer.body))
        await self.send(h11.EndOfMessage())

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            try:
                await asyncio.wait_for(self.writer.drain(), self.limits.body_timeout)
            except TimeoutError:
                raise Refused(None) from None

    def next_cycle(self) -> bool:
        """Ready for the next request on this connection (keep-alive), or False."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    async def refuse(self, refused: Refused) -> None:
        """Send a refusal's answer if the connection can still carry one."""
        if refused.answer is None or self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        if self.h11.their_state is h11.IDLE:  # h11 answers only a request it has seen
            return
        answer = refused.answer
        closing = Answer(
            answer.status,
            (*answer.headers, ("connection", "close")),
            answer.body,
            answer.refused,
        )
        with contextlib.suppress(Refused, h11.LocalProtocolError, OSError):
            await self.respond(closing)

    def _next(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            why = "request head too large" if status == 431 else f"malformed request: {exc}"
            raise Refused(refusal(status, "invalid_request", why)) from None

    async def _read(self, timeout: float, *, idle: bool) -> bytes | None:
        """Up to 64 KiB; b"" at end of stream; None (or Refused when a request has begun)
        when the deadline passed."""
        try:
            if timeout > 0:
                return await asyncio.wait_for(self.reader.read(_READ), timeout)
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            return b""
        if idle:
            return None
        raise Refused(refusal(408, "request_timeout", "the request did not arrive in time"))

    def _too_large(self) -> Answer:
        return refusal(
            413,
            "request_too_large",
            f"the request body is larger than {self.max_body} bytes",
        )


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)


def _sendable(answer: Answer) -> list[tuple[str, str]]:
    """The answer's headers but its framing and hop-by-hop ones; Tether's own refusals
    keep their ``Connection`` and ``Proxy-Authenticate`` (a destination's never do)."""
    own = ("connection", "proxy-authenticate") if answer.refused else ()
    return [(k, v) for k, v in answer.headers if k.lower() not in _HOP or k.lower() in own]
