"""Strict parsing of the JSON-RPC frames an agent POSTs to ``/mcp/NAME`` (the lean path).

The body is parsed once, with the standard library, and refused whole (nothing of it is
decided or forwarded) unless it has exactly one meaning: the gateway decides on the
parsed value and the upstream client re-serialises that same value, so a body that two
JSON parsers could read differently must not get through. Refused, as a JSON-RPC parse
error (-32700):

- a body that is not UTF-8, or not one JSON text;
- an object with a duplicate key (parsers disagree on which one wins);
- ``NaN``, ``Infinity``, ``-Infinity``, and a number literal too large for a double
  (``1e400`` reads as infinity);
- an integer outside ±(2**53 - 1), the range every JSON parser reads exactly (RFC 7493,
  I-JSON);
- a lone surrogate (``"\\ud800"``) in any string, key or value: it is not text, and a
  parser may drop, replace or reject it;
- nesting deeper than :data:`MAX_DEPTH`.

A body larger than :data:`MAX_BODY` (the MCP SDK's own limit) is refused before it is
parsed (HTTP 413). The frame's JSON-RPC shape is checked by :func:`envelope`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "INVALID_REQUEST",
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_INT",
    "PARSE_ERROR",
    "Frame",
    "FrameError",
    "envelope",
    "parse",
]

MAX_BODY: Final = 4 * 1024 * 1024  # bytes (the SDK's DEFAULT_MAX_REQUEST_BODY_SIZE)
MAX_DEPTH: Final = 64  # nested arrays and objects
MAX_INT: Final = 2**53 - 1
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600

_SURROGATE = re.compile("[\ud800-\udfff]")


class FrameError(ValueError):
    """The body was refused: ``code`` is its JSON-RPC error code, ``str()`` says why."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


@dataclass(frozen=True, slots=True)
class Frame:
    """One JSON-RPC message, as parsed: a request has an ``id``, a notification has
    none, a response (the client answering) has ``method`` None."""

    method: str | None
    id: int | str | None
    params: dict[str, Any]
    notification: bool


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FrameError(PARSE_ERROR, f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise FrameError(PARSE_ERROR, f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text) > 17 or abs(number := int(text)) > MAX_INT:
        raise FrameError(PARSE_ERROR, f"integer {text[:24]} is outside ±(2**53 - 1)")
    return number


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise FrameError(PARSE_ERROR, f"number {text[:24]} is too large")
    return number


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_float
)


def parse(body: bytes) -> Any:
    """The JSON value of ``body``; raises :class:`FrameError` (see the module docstring)."""
    if len(body) > MAX_BODY:
        raise FrameError(PARSE_ERROR, f"the body is larger than {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
        value = _DECODER.decode(text)
    except FrameError:
        raise
    except UnicodeDecodeError:
        raise FrameError(PARSE_ERROR, "the body is not UTF-8") from None
    except RecursionError:
        raise FrameError(PARSE_ERROR, f"nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise FrameError(PARSE_ERROR, str(exc)) from None
    if "\\u" in text:  # only an escape can make a lone surrogate (UTF-8 cannot hold one)
        _check(value)
    else:
        _check_depth(value)
    return value


def _check(value: Any) -> None:
    """Refuse lone surrogates and too deep nesting (iteratively: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise FrameError(PARSE_ERROR, "a string holds a lone surrogate")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise FrameError(PARSE_ERROR, f"nested deeper than {MAX_DEPTH}")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise FrameError(PARSE_ERROR, f"nested deeper than {MAX_DEPTH}")
            values = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))


def envelope(value: Any) -> Frame:
    """``value`` as one JSON-RPC 2.0 message; raises :class:`FrameError` (-32600) for a
    batch, a wrong ``jsonrpc``, an ``id`` that is not a string or an integer (a boolean,
    a fraction, null), a non-string method or params that are not an object."""
    if not isinstance(value, dict):
        raise FrameError(INVALID_REQUEST, "the body must be one JSON-RPC message object")
    if value.get("jsonrpc") != "2.0":
        raise FrameError(INVALID_REQUEST, 'jsonrpc must be "2.0"')
    has_id = "id" in value
    ident = value.get("id")
    if has_id and (isinstance(ident, bool) or not isinstance(ident, int | str)):
        raise FrameError(INVALID_REQUEST, "id must be a string or an integer")
    if "method" not in value:
        if has_id and ("result" in value or "error" in value):
            return Frame(None, ident, {}, notification=True)  # a client's answer
        raise FrameError(INVALID_REQUEST, "a request must name its method")
    method, params = value["method"], value.get("params")
    if not isinstance(method, str):
        raise FrameError(INVALID_REQUEST, "method must be a string")
    if params is not None and not isinstance(params, dict):
        raise FrameError(INVALID_REQUEST, "params must be an object")
    return Frame(method, ident, params or {}, notification=not has_id)
