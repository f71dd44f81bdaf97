"""What an audit event says about the agents in it: the detector's only view of the log.

:func:`observe` turns one :class:`~tether.model.Event` into :class:`Observation` values,
each about one agent, each carrying the event's ``seq`` and time. The detectors and the
baselines see nothing else, so this module is the whole contract between the audit
vocabulary and the detector.

What is observed (an agent is a SPIFFE ID, ``spiffe://...``; people, ``admin``,
``anonymous`` and ``system:*`` actors are not agents and are not observed):

=================================  =========================================================
event                              observations (agent = the event's actor unless said)
=================================  =========================================================
``decision`` (allow or deny)       ``call`` (value: the action; amount 1 for a deny, else 0);
                                   for ``tools/call`` / ``prompts/get`` a ``tool``, for
                                   ``resources/read`` and any other action on a path a
                                   ``resource`` (amount 1 when allowed, 0 when denied); an
                                   allowed MCP action adds its ``server`` (first path
                                   segment), and so does an allowed API call through the
                                   egress proxy (an HTTP method: its destination)
``decision`` ``delegate`` allowed  ``delegate_to`` B for the actor A, ``delegated_by`` A for B
``*.refused`` by an agent          ``call`` with amount 1 (a refusal is a denied attempt)
``tool.result``                    ``result`` (amount: ``detail.size`` in bytes)
``egress.result``                  ``result`` (amount: ``detail.size`` + ``detail.sent``,
                                   the bytes that crossed the proxy either way: a request
                                   that sends much out is an exfiltration's volume, as an
                                   answer that brings much in is a scrape's)
``token.issued``                   ``audience`` (``detail.aud``)
``token.exchanged``                ``audience``, and for a chain ``(..., A, B)`` of two agents
                                   ``delegate_to`` B for A and ``delegated_by`` A for B
``credential.issued``              ``credential`` (value: the vault reference's resource)
=================================  =========================================================

Everything else (lifecycle, grants, policies, the detector's own ``alert.*`` and
``detect.*`` events) holds no observation. A ``delegated_by`` observation is *passive*: it
is something done to the agent, not by it, so it neither wakes a dormant agent nor counts
as activity in its active hours.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final, NamedTuple

from tether.model import Event
from tether.permissions import HTTP_ACTIONS

__all__ = [
    "ACTIVE",
    "AGENT_PREFIX",
    "AUDIENCE",
    "CALL",
    "CREDENTIAL",
    "DELEGATED_BY",
    "DELEGATE_TO",
    "KINDS",
    "RESOURCE",
    "RESULT",
    "SERVER",
    "TOOL",
    "VALUE_MAX",
    "Observation",
    "bounded",
    "is_agent",
    "observe",
]

AGENT_PREFIX: Final = "spiffe://"

CALL: Final = "call"
TOOL: Final = "tool"
RESOURCE: Final = "resource"
SERVER: Final = "server"
AUDIENCE: Final = "audience"
DELEGATE_TO: Final = "delegate_to"
DELEGATED_BY: Final = "delegated_by"
RESULT: Final = "result"
CREDENTIAL: Final = "credential"

KINDS: Final = frozenset(
    {CALL, TOOL, RESOURCE, SERVER, AUDIENCE, DELEGATE_TO, DELEGATED_BY, RESULT, CREDENTIAL}
)
ACTIVE: Final = KINDS - {DELEGATED_BY}  # kinds that are the agent's own doing

_TOOL_ACTIONS: Final = frozenset({"tools/call", "prompts/get"})
_MCP_ACTIONS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})
_SERVED: Final = _MCP_ACTIONS | frozenset(HTTP_ACTIONS)  # actions on a server or destination
_IGNORED_PREFIXES: Final = ("alert.", "detect.")
VALUE_MAX: Final = 256  # longer values are kept as a prefix and a hash of the whole


def bounded(value: str) -> str:
    """``value``, or for one longer than :data:`VALUE_MAX` characters its first 200 and a
    hash of the whole (``...#<16 hex>``): still one distinct value per distinct input, but a
    baseline holding 2,000 of them stays small however long the paths an agent invents."""
    if len(value) <= VALUE_MAX:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[:200]}\u2026#{digest}"


class Observation(NamedTuple):
    """One thing an event says about one agent: ``kind`` (see the module docstring),
    ``value`` (the item: a tool path, an audience, the other agent...), ``amount`` (bytes
    for a result; 1.0/0.0 flags for calls and items) and the event's ``seq`` and time."""

    agent: str
    kind: str
    value: str
    amount: float
    seq: int
    at: datetime


def is_agent(principal: str | None) -> bool:
    return principal is not None and principal.startswith(AGENT_PREFIX)


def observe(event: Event) -> tuple[Observation, ...]:
    """The observations ``event`` holds (empty for events about no agent's behaviour)."""
    kind = event.type
    actor = event.actor
    if not actor.startswith(AGENT_PREFIX) or kind.startswith(_IGNORED_PREFIXES):
        return ()
    if kind == "decision":
        return _decision(event, actor)
    if kind in ("tool.result", "egress.result"):
        size = _size(event, "size") + (_size(event, "sent") if kind == "egress.result" else 0.0)
        value = bounded(event.resource or "")
        return (Observation(actor, RESULT, value, size, event.seq, event.at),)
    if kind == "token.issued":
        return (Observation(actor, AUDIENCE, _audience(event), 0.0, event.seq, event.at),)
    if kind == "token.exchanged":
        audience = Observation(actor, AUDIENCE, _audience(event), 0.0, event.seq, event.at)
        chain = event.chain
        if len(chain) >= 2 and chain[-1] == actor and is_agent(chain[-2]) and chain[-2] != actor:
            return (*_delegation(chain[-2], actor, event), audience)  # the delegator first
        return (audience,)
    if kind == "credential.issued":
        value = bounded(event.resource or "")
        return (Observation(actor, CREDENTIAL, value, 1.0, event.seq, event.at),)
    if kind.endswith(".refused"):
        return (Observation(actor, CALL, bounded(event.action or kind), 1.0, event.seq, event.at),)
    return ()


def _decision(event: Event, actor: str) -> tuple[Observation, ...]:
    allowed = event.decision == "allow"
    action = bounded(event.action or "")
    seq, at = event.seq, event.at
    call = Observation(actor, CALL, action, 0.0 if allowed else 1.0, seq, at)
    resource = bounded(event.resource) if event.resource else None
    if not resource:
        return (call,)
    if action == "delegate":
        if allowed and is_agent(resource) and resource != actor:
            return (call, *_delegation(actor, resource, event))
        return (call,)
    item = TOOL if action in _TOOL_ACTIONS else RESOURCE
    touched = Observation(actor, item, resource, 1.0 if allowed else 0.0, seq, at)
    if allowed and action in _SERVED:
        server = resource.split("/", 1)[0]
        return (call, touched, Observation(actor, SERVER, server, 1.0, seq, at))
    return (call, touched)


def _delegation(delegator: str, delegate: str, event: Event) -> tuple[Observation, Observation]:
    return (
        Observation(delegator, DELEGATE_TO, delegate, 1.0, event.seq, event.at),
        Observation(delegate, DELEGATED_BY, delegator, 1.0, event.seq, event.at),
    )


def _size(event: Event, key: str) -> float:
    size = event.detail.get(key)
    if isinstance(size, bool) or not isinstance(size, int | float) or size < 0:
        return 0.0
    return float(size)


def _audience(event: Event) -> str:
    aud = event.detail.get("aud")
    return bounded(aud if isinstance(aud, str) else event.resource or "")
