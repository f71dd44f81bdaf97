"""Decision inputs: what the server, not the caller, puts into a decision's Cedar context.

A :class:`DecisionInput` is named for its Cedar context key (``context.<name>``). For a
request it gives two things:

- :meth:`~DecisionInput.key`, its part of the decision cache key: ``None`` when its value
  follows from the request alone (the request already keys the cache), a hashable value
  when it does not (a risk score, a session), or :data:`UNCACHABLE` when decisions that
  read it must never be cached (the clock);
- :meth:`~DecisionInput.value`, what Cedar sees as ``context.<name>``.

The decision point (:class:`tether.policy.pdp.DecisionPoint`) composes the context from
its inputs and keys its cache by the request *and* the key part of every input a policy
reads; an input no policy reads cannot change a decision and does not key the cache. The
inputs Tether always has are :data:`BUILTIN_INPUTS` (the schema's context record, see
:mod:`tether.policy.schema`); more are passed to the decision point's constructor. Grant
conditions and guardrails are validated against the schema, so an input they are to read
must also be declared there (as the built-in ones are, made from this tuple).

Every input's name, and every name in :data:`RESERVED` (``risk``, the behaviour
detector's input :class:`tether.detect.risk.RiskInput` that :class:`tether.core.Tether`
passes in, reserved even where it is not; and for inputs to come ``args`` for a tool
call's arguments, ``session`` for the MCP session), is server-computed: a caller that
sets one in its context is refused (:func:`check_caller_context`), never overridden and
never silently dropped.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

from tether.errors import InvalidRequest
from tether.policy.decision import AccessRequest
from tether.principals import Principal

__all__ = [
    "BUILTIN_INPUTS",
    "RESERVED",
    "UNCACHABLE",
    "ChainDepth",
    "Clock",
    "DecisionInput",
    "OnBehalfOf",
    "ServerComputed",
    "Uncachable",
    "check_caller_context",
    "reserved_names",
]


class ServerComputed(InvalidRequest):
    """A caller's context sets a key the server computes (a 400, exit code 2): a request
    error of the whole call, never one item's answer."""


class Uncachable:
    """The key part of an input whose decisions are never cached (see :data:`UNCACHABLE`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCACHABLE"


UNCACHABLE: Final = Uncachable()


@runtime_checkable
class DecisionInput(Protocol):
    """One server-computed key of the Cedar context (see the module docstring)."""

    @property
    def name(self) -> str:
        """The Cedar context key (``context.<name>``)."""
        ...

    @property
    def cedar_type(self) -> str:
        """Its type in the Cedar schema (``Long``, ``String``, ...)."""
        ...

    def key(self, request: AccessRequest, now: datetime) -> Hashable | Uncachable | None:
        """Its part of the decision cache key for ``request``: ``None`` when the value
        follows from the request, :data:`UNCACHABLE` when such decisions are never cached."""
        ...

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> Any:
        """What Cedar sees as ``context.<name>`` (``identities``: person first, acting
        agent last, as the decision point resolved them)."""
        ...


class ChainDepth:
    """``chain_depth``: the agents of the delegation chain, the acting one included."""

    name = "chain_depth"
    cedar_type = "Long"

    def key(self, request: AccessRequest, now: datetime) -> None:
        return None

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> int:
        return sum(1 for p in identities if p.kind == "agent")


class OnBehalfOf:
    """``on_behalf_of``: the person's email (``""`` without one)."""

    name = "on_behalf_of"
    cedar_type = "String"

    def key(self, request: AccessRequest, now: datetime) -> None:
        return None

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> str:
        return (request.on_behalf_of or "").removeprefix("user:").lower()


class Clock:
    """``time`` (Unix seconds) or ``hour`` (0-23, UTC) of the decision: a decision whose
    policies read either is never cached."""

    cedar_type = "Long"

    def __init__(self, name: str) -> None:
        if name not in ("time", "hour"):
            raise ValueError(f"the clock gives time or hour, not {name!r}")
        self.name = name

    def key(self, request: AccessRequest, now: datetime) -> Uncachable:
        return UNCACHABLE

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> int:
        return now.hour if self.name == "hour" else int(now.timestamp())


BUILTIN_INPUTS: Final[tuple[DecisionInput, ...]] = (
    ChainDepth(),
    OnBehalfOf(),
    Clock("time"),
    Clock("hour"),
)

# Server-computed keys whose inputs live above this layer (risk) or are still to come;
# reserved so that no caller's context means something else where they are computed.
RESERVED: Final = frozenset({"risk", "args", "session"})


def reserved_names(inputs: Iterable[DecisionInput] = ()) -> frozenset[str]:
    """Every context key a caller may not set: the built-in inputs', ``inputs``' and
    :data:`RESERVED`."""
    return RESERVED.union(i.name for i in (*BUILTIN_INPUTS, *inputs))


def check_caller_context(
    context: Mapping[str, Any], where: str = "context", reserved: frozenset[str] | None = None
) -> None:
    """Refuse a caller's context that sets a server-computed key, naming the key."""
    names = reserved_names() if reserved is None else reserved
    clash = sorted(names.intersection(context))
    if clash:
        raise ServerComputed(
            f"{where} key {clash[0]!r} is set by Tether (server-computed), not by the caller"
        )
