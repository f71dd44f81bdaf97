"""The HTTP side of the lean path (:mod:`tether.gateway.lean`), what an agent POSTs: the
SDK's checks of ``Accept`` and ``Content-Type``, a request body read under the MCP limit
and replayed to the SDK path when the lean path leaves a request to it, and JSON answers
written straight to ASGI (always ASCII JSON, so any string the upstream sent can be encoded)."""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.datastructures import Headers
from starlette.types import Message, Receive, Send

from tether.gateway.frames import MAX_BODY

__all__ = [
    "JSON",
    "accepts",
    "answer",
    "error",
    "json_content",
    "read_body",
    "replayed",
    "reply",
    "too_large",
]

JSON: Final = (b"content-type", b"application/json")


def accepts(headers: Headers, *, sse: bool) -> bool:
    """The SDK's Accept check: JSON (and an event stream, when ``sse``) acceptable."""
    kinds = {t.strip().split(";")[0].strip().lower() for t in headers.get("accept", "").split(",")}
    anything = "*/*" in kinds
    json_ok = anything or bool(kinds & {"application/json", "application/*"})
    sse_ok = anything or bool(kinds & {"text/event-stream", "text/*"})
    return json_ok and (sse_ok or not sse)


def json_content(headers: Headers) -> bool:
    kind = headers.get("content-type", "").split(";")[0]
    return any(part.strip() == "application/json" for part in kind.split(","))


async def read_body(receive: Receive) -> bytes | None:
    """The request body, or None when it is larger than :data:`MAX_BODY`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def too_large(send: Send) -> None:
    """The SDK's answer to a body over its limit (Tether's API caps bodies before this)."""
    await reply(send, 413, b"Request body too large", (b"content-type", b"text/plain"))


def replayed(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` first, then the connection's own messages."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _dumps(message: dict[str, Any]) -> bytes:
    """``message`` as compact JSON bytes."""
    return json.dumps(message, separators=(",", ":")).encode()  # ASCII: any string encodes


async def answer(
    send: Send,
    status: int,
    ident: int | str | None,
    outcome: dict[str, Any],
    *headers: tuple[bytes, bytes],
) -> None:
    """The JSON-RPC answer to request ``ident``: ``outcome`` is its result or error."""
    await reply(send, status, _dumps({"jsonrpc": "2.0", "id": ident, **outcome}), JSON, *headers)


async def error(
    send: Send,
    status: int,
    ident: int | str | None,
    code: int,
    why: str,
    extra: tuple[tuple[bytes, bytes], ...],
    data: Any = None,
) -> None:
    """A JSON-RPC error answer (``code``, ``why``, ``data`` if any) with HTTP ``status``."""
    failure: dict[str, Any] = {"code": code, "message": why}
    if data is not None:
        failure["data"] = data
    await answer(send, status, ident, {"error": failure}, *extra)


async def reply(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """One whole HTTP response."""
    head = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
