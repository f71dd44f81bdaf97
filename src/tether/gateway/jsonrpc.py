"""JSON-RPC 2.0 frames as the gateway's upstream client reads and writes them.

What an upstream sends is parsed once (:func:`parse`), strictly, into plain values: a
frame that is not one JSON object, that repeats a key, holds ``NaN``/``Infinity``, a lone
surrogate or a number too long to read, or is not a well-formed request, notification,
answer or error answer is refused with :class:`Malformed` (the connection that carried
it is not trusted further). What is sent is serialised from the values built here
(:func:`encode`), never passed through as bytes. A value of the upstream's is quoted
in a message whole or not at all (:func:`shown`): it may hold an injected credential,
which is redacted from the whole message later and would not be found in a part of it.

Errors::

    Exception
     +-- WireError        the connection failed (closed, broken, a malformed frame)
     |    +-- Malformed   a frame that is not well-formed JSON-RPC 2.0
     +-- MCPError         (the SDK's) the server answered a request with an error
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mcp.shared.exceptions import MCPError

__all__ = [
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "Answer",
    "Incoming",
    "MCPError",
    "Malformed",
    "Notification",
    "Request",
    "WireError",
    "encode",
    "error",
    "first_line",
    "notification",
    "parse",
    "parse_error",
    "request",
    "response",
    "shown",
]

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: maybe a lone half

RequestId = int | str


class WireError(Exception):
    """The connection to the upstream failed: it is closed, broken or untrustworthy."""


class Malformed(WireError):
    """A frame from the upstream that is not well-formed JSON-RPC 2.0."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one of our requests: ``result``, or the server's ``error``."""

    id: RequestId
    result: dict[str, Any] | None
    error: MCPError | None


@dataclass(frozen=True, slots=True)
class Request:
    """A request from the server (``ping``, ``roots/list``, ``sampling/createMessage`` ...)."""

    id: RequestId
    method: str
    params: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification from the server (progress, logging, list changed ...)."""

    method: str
    params: dict[str, Any] | None


Incoming = Answer | Request | Notification


def parse(frame: str | bytes) -> Incoming:
    """One frame from the server, checked; raises :class:`Malformed`."""
    value = _load(frame)
    if value.get("jsonrpc") != "2.0":
        raise Malformed('a frame without "jsonrpc": "2.0"')
    method, params = value.get("method"), value.get("params")
    if method is not None:
        if not isinstance(method, str) or not (params is None or isinstance(params, dict)):
            raise Malformed("a request whose method is not text or whose params are not an object")
        if "id" not in value:
            return Notification(method, params)
        return Request(_id(value["id"]), method, params)
    request_id = _id(value.get("id"))
    has_result, has_error = "result" in value, "error" in value
    if has_result == has_error:
        raise Malformed("an answer must carry exactly one of result and error")
    if has_result:
        result = value["result"]
        if not isinstance(result, dict):
            raise Malformed("an answer's result must be an object")
        return Answer(request_id, result, None)
    return Answer(request_id, None, _error(value["error"]))


def parse_error(frame: str | bytes) -> MCPError:
    """The error in an error answer whose id may be ``null`` (a server that refused a
    request before reading its id); raises :class:`Malformed`."""
    value = _load(frame)
    if value.get("jsonrpc") != "2.0" or "error" not in value or "result" in value:
        raise Malformed("not a JSON-RPC error answer")
    if value.get("id") is not None:
        _id(value["id"])
    return _error(value["error"])


def _load(frame: str | bytes) -> dict[str, Any]:
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        value = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
        if _SURROGATE_ESCAPE.search(text):  # only an escape can make a lone surrogate
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # UnicodeError and JSONDecodeError too
        raise Malformed(f"not JSON ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(value, dict):
        raise Malformed(f"a frame must be one JSON object, not {type(value).__name__}")
    return value


def _error(failure: Any) -> MCPError:
    if not (
        isinstance(failure, dict)
        and _is_int(failure.get("code"))
        and isinstance(failure.get("message"), str)
    ):
        raise Malformed("an error answer needs an integer code and a text message")
    return MCPError(failure["code"], failure["message"], failure.get("data"))


def _id(value: Any) -> RequestId:
    if isinstance(value, str) or _is_int(value):
        return value  # type: ignore[no-any-return]
    raise Malformed("a message id must be a string or an integer")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"duplicate key {shown(twice)}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def shown(value: object, limit: int = 100) -> str:
    """``value`` (the upstream's) as a message quotes it: its ``repr``, whole, or not at
    all if longer than ``limit``. It may hold an injected credential, redacted from the
    whole message later (:mod:`tether.redact`): cut, the rest of it would not be found."""
    text = repr(value)
    return text if len(text) <= limit else f"<{len(text)} characters, not shown>"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message, whole, or not at all (as :func:`shown`)."""
    line = str(exc).split("\n", 1)[0]
    return line if len(line) <= limit else f"<{len(line)} characters, not shown>"


def encode(message: dict[str, Any]) -> bytes:
    """A message as sent: compact UTF-8 JSON, no ``NaN``; raises ValueError for a value
    JSON cannot carry (a lone surrogate, a float that is not a number)."""
    text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def request(request_id: int, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def response(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error(request_id: RequestId, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
