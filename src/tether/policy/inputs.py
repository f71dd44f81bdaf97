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

Two built-in inputs come from server-computed fields of the request, set by the gateway:
``args`` (:class:`Args`, the call's arguments mapped by :mod:`tether.policy.args`) and
``session`` (:class:`Session`, ``{labels: Set<String>}``: the labels the work has touched).
The decision point keys its cache by the request *without* those fields, so a call's
arguments or session key the cache only when a policy reads them (then: the arguments'
text, never cached above :data:`ARGS_CACHE_BYTES`; the session's set of labels).

Every input's name, and every name in :data:`RESERVED` (``risk``, the behaviour
detector's input :class:`tether.detect.risk.RiskInput` that :class:`tether.core.Tether`
passes in, reserved even where it is not), is server-computed: a caller that sets one in
its context is refused (:func:`check_caller_context`), never overridden and never
silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

from tether.errors import InvalidRequest
from tether.policy.args import DEFAULT_BOUNDS, Bounds, to_cedar
from tether.policy.decision import AccessRequest
from tether.principals import Principal

__all__ = [
    "ARGS_CACHE_BYTES",
    "BUILTIN_INPUTS",
    "RESERVED",
    "UNCACHABLE",
    "Args",
    "ChainDepth",
    "Clock",
    "DecisionInput",
    "Http",
    "OnBehalfOf",
    "ServerComputed",
    "Session",
    "Uncachable",
    "check_caller_context",
    "check_context_value",
    "reserved_names",
    "session_labels",
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


ARGS_CACHE_BYTES: Final = 4096  # decisions on larger arguments are never cached


class Args:
    """``args``: the call's arguments (``AccessRequest.args``) as a Cedar record, mapped by
    :func:`tether.policy.args.to_cedar` within ``bounds``; ``{}`` without arguments.
    Arguments that cannot be mapped raise :class:`tether.policy.args.Undecidable`, which
    the decision point answers with a deny that says why."""

    name = "args"
    cedar_type = "{}"

    def __init__(self, bounds: Bounds = DEFAULT_BOUNDS) -> None:
        self._bounds = bounds

    def key(self, request: AccessRequest, now: datetime) -> Hashable | Uncachable:
        if request.args is not None and len(request.args) > ARGS_CACHE_BYTES:
            return UNCACHABLE
        return request.args or ""

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> dict[str, Any]:
        return to_cedar(request.args, self._bounds)


class Http:
    """``http``: an API call's request through the egress proxy (``AccessRequest.http``)
    as a Cedar record, mapped like ``args`` within ``bounds``: ``method``, ``path`` (the
    normalised path below the destination), ``query`` and ``headers`` (records of
    Strings) and ``body`` (a JSON body's fields); ``{}`` for anything else. A request that
    cannot be mapped raises :class:`tether.policy.args.Undecidable` (a deny saying why)."""

    name = "http"
    cedar_type = "{}"

    def __init__(self, bounds: Bounds = DEFAULT_BOUNDS) -> None:
        self._bounds = bounds

    def key(self, request: AccessRequest, now: datetime) -> Hashable | Uncachable:
        if request.http is not None and len(request.http) > ARGS_CACHE_BYTES:
            return UNCACHABLE
        return request.http or ""

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> dict[str, Any]:
        return to_cedar(request.http, self._bounds, where="http")


def session_labels(request: AccessRequest) -> dict[str, dict[str, Any]]:
    """The request's session: ``{label: {"seq": N, "resource": R}}`` (``{}`` for none)."""
    if not request.session:
        return {}
    found = json.loads(request.session)
    if not isinstance(found, dict):  # the gateway's own field: a deny, not a caller's error
        raise ValueError("the request's session is not a JSON object of labels")
    return found


class Session:
    """``session``: ``{labels: Set<String>}``, the labels the work has touched (the keys
    of ``AccessRequest.session``); the set of labels keys the cache, not the events."""

    name = "session"
    cedar_type = "{ labels: Set<String> }"

    def key(self, request: AccessRequest, now: datetime) -> Hashable:
        return tuple(sorted(session_labels(request)))

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> dict[str, Any]:
        return {"labels": sorted(session_labels(request))}


BUILTIN_INPUTS: Final[tuple[DecisionInput, ...]] = (
    ChainDepth(),
    OnBehalfOf(),
    Clock("time"),
    Clock("hour"),
    Args(),
    Session(),
    Http(),
)

# Server-computed keys whose inputs live above this layer (risk); reserved so that no
# caller's context means something else where they are computed.
RESERVED: Final = frozenset({"risk", "args", "session", "http"})


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


_LONG = 2**63


def check_context_value(value: Any, where: str) -> None:
    """Context must be what Cedar can hold: strings (no NUL), booleans, 64-bit integers,
    lists and objects of those. Floats and nulls are refused, not silently denied."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_LONG <= value < _LONG:
            raise InvalidRequest(f"{where}: integer out of Cedar's 64-bit range")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidRequest(f"{where}: NUL is not allowed in context strings")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_context_value(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise InvalidRequest(f"{where}: NUL is not allowed in context keys")
            check_context_value(item, f"{where}.{key}")
        return
    kind = "null" if value is None else type(value).__name__
    raise InvalidRequest(f"{where}: {kind} values are not allowed in Cedar context")
