"""A size limit on every request body, enforced while it is read, before any route runs.

A pure ASGI middleware: a ``Content-Length`` above the limit is answered at once; any
other body (chunked, or a length that lies) is read here, its bytes counted as they
arrive, and answered the moment the count passes the limit. Only a body within the limit
reaches the app (replayed as one message), so no authentication, parsing or audit work is
ever spent on a body that is too large, and a huge upload is never held whole in memory.

A route prefix may have a limit of its own (``per_prefix``): the egress proxy's
``/egress/`` takes bodies up to ``[egress] max_request_bytes``, not the admin API's."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit"]

_LENGTH = b"content-length"


class BodyLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, per_prefix: tuple[tuple[str, int], ...] = ()
    ) -> None:
        self._app = app
        self._max = max_bytes
        self._prefixes = per_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._max
        path = scope.get("path", "")
        for prefix, own in self._prefixes:
            if path.startswith(prefix):
                limit = own
                break
        declared = [v for k, v in scope.get("headers") or () if k.lower() == _LENGTH]
        if declared:
            text = declared[0].decode("latin-1").strip()
            if not text.isdigit() or len(set(declared)) > 1:
                await _answer(send, 400, "invalid_request", "invalid Content-Length header")
                return
            if int(text) > limit:
                await _answer(send, 413, "request_too_large", _too_large(limit))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, "request_too_large", _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: only http.disconnect comes

        await self._app(scope, replay, send)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


async def _answer(send: Send, status: int, error: str, description: str) -> None:
    body = json.dumps({"error": error, "error_description": description}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
