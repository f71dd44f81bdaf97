"""The egress proxy's reverse-proxy route: ``/egress/NAME`` and ``/egress/NAME/<path>``,
for clients that cannot use a forward proxy (the agent points its API client's base URL
at ``<tether>/egress/NAME``).

The face only speaks HTTP; the engine (:class:`tether.egress.engine.EgressProxy`)
decides, forwards and records. What it hands the engine:

- the target exactly as the agent sent it: the bytes of the request line's path after
  ``/egress/NAME`` (the ASGI scope's ``raw_path``, never the server's decoded ``path``:
  the normaliser must see what the agent wrote, ``%2e%2e`` and ``%2F`` included) and its
  query string. ``NAME`` itself must be written plainly (no percent-escape); a server
  that does not give the raw path is refused (500: it cannot be decided on safely);
- the agent's token from ``Authorization: Bearer`` (sent more than once: refused, and
  recorded as ``anonymous``);
- the body, read up to ``[egress] max_request_bytes`` (a larger ``Content-Length`` is
  answered 413 before anything is read, a longer body as soon as it passes the limit).
"""

from __future__ import annotations

import logging

from anyio import to_thread
from starlette.types import Receive, Scope, Send

from tether.egress.engine import EgressProxy
from tether.egress.exchange import Answer, Outbound, credentials_from, refusal
from tether.permissions import HTTP_ACTIONS

__all__ = ["PREFIX", "ReverseFace"]

log = logging.getLogger("tether.egress")

PREFIX = b"/egress/"


class _TooLarge(Exception):
    pass


class ReverseFace:
    """The ASGI app for ``/egress/{name}`` and ``/egress/{name}/{path:path}``."""

    def __init__(self, proxy: EgressProxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self._answer(scope, receive)
        except Exception as exc:  # never a traceback to the agent
            log.exception("egress route failed: %s", type(exc).__name__)
            answer = refusal(500, "server_error", "the egress proxy failed on this request")
        if answer is not None:
            await _send(send, answer)

    async def _answer(self, scope: Scope, receive: Receive) -> Answer | None:
        raw = scope.get("raw_path")
        if not isinstance(raw, bytes) or not raw.startswith(PREFIX):
            return refusal(500, "server_error", "the server did not give the raw request path")
        # the path alone (a server may leave the query on it: it starts at the first "?")
        name, slash, rest = raw[len(PREFIX) :].partition(b"?")[0].partition(b"/")
        headers = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
        )
        method = str(scope["method"]).upper()
        authorization = [v for k, v in headers if k == "authorization"]
        if len(authorization) > 1:  # which one is the agent's? (recorded: no token chosen)
            why = "the Authorization header is sent more than once"
            destination = f"{name.decode('latin-1')[:64]}/*"
            await to_thread.run_sync(
                lambda: self.proxy.refuse("anonymous", why, destination, action=method[:16])
            )
            return refusal(400, "invalid_request", why)
        query = scope.get("query_string") or b""
        target = (slash + rest).decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        limit = self.proxy.tether.settings.egress.max_request_bytes
        try:
            body = await _body(receive, headers, limit)
        except _TooLarge:
            why = f"the request body is larger than {limit} bytes ([egress] max_request_bytes)"
            return refusal(413, "request_too_large", why)
        if body is None:
            return None  # the client went away
        outbound = Outbound(
            destination=name.decode("latin-1"),
            method=method if method in HTTP_ACTIONS else method[:16],
            target=target,
            headers=headers,
            body=body,
            mode="reverse",
        )
        return await self.proxy.exchange(
            credentials_from(authorization[0] if authorization else None), outbound
        )


async def _body(receive: Receive, headers: tuple[tuple[str, str], ...], limit: int) -> bytes | None:
    """The request body, at most ``limit`` bytes (:class:`_TooLarge` beyond); None when
    the client went away."""
    declared = [v.strip() for k, v in headers if k == "content-length"]
    if declared and declared[0].isdigit() and int(declared[0]) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, answer: Answer) -> None:
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in answer.headers
        if k not in ("content-length", "transfer-encoding", "connection")
    ]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
