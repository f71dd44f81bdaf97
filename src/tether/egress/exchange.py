"""What the egress proxy's faces hand the engine, and what they get back.

A face (the reverse-proxy route ``/egress/NAME/...``, :mod:`tether.egress.reverse`; the
forward proxy, :mod:`tether.egress.forward`) reads an agent's request into an
:class:`Outbound`, takes the agent's token from its credentials header
(:func:`credentials_from`) and asks the engine (:class:`tether.egress.engine.EgressProxy`)
for the :class:`Answer` to send back. The engine decides, forwards and records; the faces
only speak HTTP.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.errors import InvalidToken, TetherError

__all__ = [
    "Answer",
    "Mode",
    "NotForEgress",
    "Outbound",
    "actor_of",
    "credentials_from",
    "refusal",
]

Mode = Literal["reverse", "forward"]


@dataclass(frozen=True, slots=True)
class Outbound:
    """An agent's request as a face received it.

    ``destination``: the NAME the route named (reverse) or the destination the host
    belongs to (forward). ``target``: the request target, raw as sent: in ``reverse``
    mode what follows ``/egress/NAME`` (``""``, or starting with ``/``), relative to the
    destination's base; in ``forward`` mode the origin-form target (``/path?query``) the
    agent sent to the host, the base's path included. ``headers``: as received, names in
    lower case, hop-by-hop ones included (the engine strips them)."""

    destination: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    mode: Mode


@dataclass(frozen=True, slots=True)
class Answer:
    """What goes back to the agent (``headers`` as sent, names in lower case).
    ``refused``: Tether answered itself (a deny, a bad request, an upstream failure), not
    the destination."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    refused: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def refusal(
    status: int,
    error: str,
    description: str,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    **extra: Any,
) -> Answer:
    """Tether's own answer: a JSON body ``{"error", "error_description", ...}`` with the
    ``tether-refused`` header, so an agent can tell it from the destination's."""
    body = json.dumps({"error": error, "error_description": description, **extra}).encode()
    head = (
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        ("tether-refused", error),
        *headers,
    )
    return Answer(status, head, body, refused=True, detail={"error": error, **extra})


def credentials_from(value: str | None) -> str | None:
    """The agent's Tether token from an ``Authorization`` or ``Proxy-Authorization``
    value: ``Bearer TOKEN``, or ``Basic`` of ``ANY:TOKEN`` (what a client given
    ``HTTPS_PROXY=http://agent:TOKEN@host:port`` sends); None when there is none."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return None
    if scheme.lower() == "bearer":
        return rest
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password or None if sep else None
    return None


class NotForEgress(InvalidToken):
    """A token that verified but may not be used here (another audience, another
    destination, bound to a key): ``actor`` is its agent, whom the refusal's record
    names (a token that does not verify at all is recorded as ``anonymous``)."""

    def __init__(self, description: str, actor: str) -> None:
        super().__init__(description)
        self.actor = actor


def actor_of(refused: TetherError) -> str:
    """Whom the record of a refused authentication names."""
    return refused.actor if isinstance(refused, NotForEgress) else "anonymous"
