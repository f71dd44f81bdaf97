"""Which headers cross the egress proxy, each way.

**Out** (:func:`outbound`, the agent's headers before anything is injected): dropped are

- the hop-by-hop headers (RFC 9110 §7.6.1: ``connection``, ``keep-alive``,
  ``proxy-connection``, ``te``, ``trailer``, ``transfer-encoding``, ``upgrade``, every
  ``proxy-*`` header, and every header the ``Connection`` header names);
- the framing and the route, which Tether sets itself: ``host``, ``content-length``,
  ``expect``, ``accept-encoding`` (Tether asks for ``identity``: it must read the answer to
  take the credential out of it);
- what belongs to the agent's side of the proxy: ``authorization`` (in the reverse route
  it is the agent's Tether token; a destination's own credential is Tether's to inject),
  ``dpop`` (a proof for Tether), ``forwarded``, ``via``, ``x-forwarded-*``, ``x-real-ip``;
- ``cookie``: the proxy is cookie-less both ways (see below);
- and **any header whose value carries the agent's token**: as it is, percent-decoded,
  or base64-encoded in any word of the value (a ``Basic`` credential with the token as
  its password, an ``X-Api-Key`` the agent filled in): the agent's token never leaves.

**In** (:func:`inbound`, the destination's answer): dropped are the hop-by-hop headers,
``content-length`` and ``transfer-encoding`` (the face frames the body it sends), and
``set-cookie`` / ``set-cookie2``: a session cookie a destination hands out after
authenticating Tether's injected credential is a credential of its own, which an agent
could replay without the proxy; so none is passed on (and, for symmetry, no ``cookie``
goes out). Also dropped is every ``tether-*`` header: those are Tether's own
(``tether-refused`` marks its refusals, ``tether-approval`` a held request), and a
destination that sent them could pass its answer off as Tether's. The rest is kept,
names in lower case.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

__all__ = ["HOP_BY_HOP", "carries", "connection_named", "inbound", "outbound"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_OUT = frozenset(
    {
        "host",
        "content-length",
        "expect",
        "accept-encoding",
        "authorization",
        "dpop",
        "cookie",
        "forwarded",
        "via",
        "x-real-ip",
    }
)
_OUT_PREFIXES = ("proxy-", "x-forwarded-")
_IN = frozenset({"content-length", "transfer-encoding", "set-cookie", "set-cookie2"})
_TETHERS = "tether-"  # Tether's own answers' headers: never a destination's
_WORD_MAX = 16_384  # longer words are not base64-decoded (no token is that long)


def connection_named(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The hop-by-hop headers of ``headers``: the fixed ones and those its ``Connection``
    header(s) name (lower case)."""
    named = {
        option.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for option in value.split(",")
    }
    return HOP_BY_HOP | {n for n in named if n}


def outbound(agent_headers: Sequence[tuple[str, str]], token: str | None) -> list[tuple[str, str]]:
    """The agent's headers that may go to the destination (names in lower case, order
    kept; see the module doc): never a hop-by-hop or framing header, never a header that
    carries ``token`` (the agent's Tether token)."""
    drop = connection_named(agent_headers) | _OUT
    kept: list[tuple[str, str]] = []
    for name, value in agent_headers:
        lower = name.lower()
        if lower in drop or lower.startswith(_OUT_PREFIXES):
            continue
        if token and carries(value, token):
            continue
        kept.append((lower, value))
    return kept


def inbound(upstream_headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The destination's headers that may go back to the agent (names in lower case,
    order kept): no hop-by-hop header, no framing, no cookie, none of Tether's own (see
    the module doc)."""
    drop = connection_named(upstream_headers) | _IN
    return [
        (name.lower(), value)
        for name, value in upstream_headers
        if name.lower() not in drop and not name.lower().startswith(_TETHERS)
    ]


def carries(value: str, token: str) -> bool:
    """Whether the header value ``value`` holds ``token``: as it is, percent-decoded, or
    base64 (either alphabet) of text that holds it in any blank-separated word."""
    if token in value or token in unquote(value):
        return True
    for word in value.split():
        if len(word) < len(token) or len(word) > _WORD_MAX:
            continue
        decoded = _base64(word)
        if decoded is not None and token in decoded:
            return True
    return False


def _base64(word: str) -> str | None:
    padded = word + "=" * (-len(word) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        return raw.decode("latin-1")
    return None
