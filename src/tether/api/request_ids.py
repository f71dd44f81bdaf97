"""Every request gets an ID (the caller's ``X-Request-ID`` when it is sane), returned in
the response and written into every audit event the request causes; the client's address
is noted for the per-caller refusal throttle (:mod:`tether.audit.throttle`)."""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.audit.record import REQUEST_ID
from tether.audit.throttle import CLIENT_ADDRESS

__all__ = ["RequestIds"]

_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HEADER = b"x-request-id"


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(_HEADER, b"").decode("latin-1")
        request_id = given if _SANE.fullmatch(given) else "r-" + secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)
        client = scope.get("client")
        address = CLIENT_ADDRESS.set(str(client[0]) if client else None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers") or ())
                headers.append((_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            CLIENT_ADDRESS.reset(address)
            REQUEST_ID.reset(token)
