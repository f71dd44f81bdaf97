"""``context.http``: what rules may read of an agent's API call through the egress proxy.

:func:`http_context` maps one request, once its target is normalised
(:func:`tether.egress.paths.normalise`), to the record the decision point hands Cedar as
``context.http`` (through ``AccessRequest.http``, :class:`tether.policy.inputs.Http`):

- ``method``: the HTTP method (``GET``...), as decided;
- ``path``: the normalised, percent-decoded path below the destination's base (the same
  path the resource ``NAME/<path>`` names);
- ``query``: ``{name: value}``, each decoded as the normaliser decodes it;
- ``headers``: ``{name: value}`` of the request headers named by ``[egress]
  context_headers`` only (lower-case names; ``content-type``, ``accept``,
  ``user-agent`` by default);
- ``body``: the request body's JSON object, when the body is one (see below); absent
  otherwise, so ``context.http has body`` is false.

What the upstream could read two ways is never decided on one of them: a query
parameter named twice, a selected header sent twice, or a JSON object with a repeated
member (at any depth) makes the request :class:`Undecidable` (the engine refuses it,
saying why) rather than choosing the first or the last, as upstreams differ on which
they take. So does a body that is or may be JSON (its ``content-type`` is
``application/json`` or ``*/*+json``, or it starts with ``{`` or ``[``) but does not parse
as strict JSON (``NaN`` included), or is larger than ``[egress] body_max_bytes``: a rule
about the body could not see what a lenient upstream will.

The body is read as JSON whatever its ``content-type`` says when it parses as a JSON
object (an API that ignores the header reads it so); a body that is a JSON array or
scalar, empty, or not JSON at all (form fields, bytes) is *absent*: a rule that must see
a body's fields should also require ``context.http has body`` (and a JSON
``content-type``), so that a request without one is not allowed by the rule's silence.

Only the cost of what is read is paid: the engine builds this record only when some
policy reads ``context.http`` (:meth:`tether.core.Tether.reads_context`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from tether.config import EgressSettings

__all__ = ["Undecidable", "http_context", "is_json"]

# the first bytes of a body that is (or may be) a JSON object or array
_JSON_START = frozenset(b"{[")
_BLANK = b" \t\r\n"


class Undecidable(Exception):
    """The request cannot be decided on: ``str(self)`` says why (never a value)."""


def http_context(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    body: bytes,
    settings: EgressSettings,
) -> dict[str, Any]:
    """``context.http`` for one request (see the module docstring); raises
    :class:`Undecidable` for a request a rule could read two ways."""
    context: dict[str, Any] = {
        "method": method,
        "path": path,
        "query": _unique(query, "query parameter"),
        "headers": _selected(headers, settings.context_headers),
    }
    found = _body(body, context["headers"].get("content-type"), settings.body_max_bytes)
    if found is not None:
        context["body"] = found
    return context


def is_json(content_type: str | None) -> bool:
    """Whether a ``content-type`` value names JSON (``application/json``, ``*/*+json``)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _unique(pairs: Iterable[tuple[str, str]], what: str) -> dict[str, str]:
    listed = list(pairs)
    found = dict(listed)
    if len(found) < len(listed):
        raise Undecidable(f"the {what} {_named(_repeated(listed))} is sent more than once")
    return found


def _repeated(pairs: Sequence[tuple[str, Any]]) -> str:
    """The first name that ``pairs`` hold twice."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return name
        seen.add(name)
    raise AssertionError("no name is repeated")


def _selected(headers: Iterable[tuple[str, str]], names: Sequence[str]) -> dict[str, str]:
    wanted = frozenset(names)
    return _unique(((k.lower(), v) for k, v in headers if k.lower() in wanted), "header")


def _body(body: bytes, content_type: str | None, limit: int) -> dict[str, Any] | None:
    """The body's JSON object, or None when it has none (see the module docstring)."""
    if not body:
        return None
    start = body.lstrip(_BLANK)[:1]
    maybe = is_json(content_type) or (bool(start) and start[0] in _JSON_START)
    if len(body) > limit:
        if maybe:
            raise Undecidable(
                f"the body ({len(body)} bytes) is larger than [egress] body_max_bytes "
                f"({limit}): rules on it cannot see it"
            )
        return None
    try:
        value = json.loads(body, object_pairs_hook=_object, parse_constant=_no_constant)
    except _Repeated as exc:
        raise Undecidable(str(exc)) from None
    except ValueError:  # not JSON (or not UTF-8): absent, unless it is JSON-like
        if maybe:
            raise Undecidable("the body is (or looks like) JSON and does not parse") from None
        return None
    except RecursionError:
        raise Undecidable("the body's JSON is nested too deep") from None
    return value if isinstance(value, dict) else None


class _Repeated(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        raise _Repeated(f"the body's JSON repeats the member {_named(_repeated(pairs))}")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _named(name: str) -> str:
    """A name fit for a reason: itself when it is short and plain, else its length."""
    if len(name) <= 64 and name.replace("-", "_").replace(".", "_").isidentifier():
        return repr(name)
    return f"of {len(name)} characters"
