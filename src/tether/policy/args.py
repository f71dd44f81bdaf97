"""A call's arguments as Cedar values: what guardrails and grant conditions see as
``context.args``.

The gateway hands the decision point a tool call's ``arguments`` (a prompt's
``arguments``; ``{"uri": ...}`` for a resource read) as canonical JSON
(``AccessRequest.args``). :func:`to_cedar` maps that JSON object to a Cedar record, value
by value:

- a string is a Cedar ``String``, compared exactly as given (no Unicode normalisation, no
  path normalisation: ``..``, symlinks and letter case are the upstream's to resolve).
  A string holding NUL is refused (an upstream written in C may stop reading at it, so the
  string Cedar judged would not be the one acted on), and so is one holding a lone
  surrogate (not text);
- ``true`` / ``false`` are ``Bool``;
- an integer is a ``Long`` when it is within Cedar's signed 64-bit range, refused otherwise;
- a whole number written as a fraction or with an exponent (``5.0``, ``5E+0``,
  ``50e-1``) is the same ``Long`` as ``5``: it is the same number to the upstream, and a
  rule ``context.args.n == 5`` must not be passed by spelling it ``5.0`` (a ``Long`` and
  a ``decimal`` are never equal in Cedar);
- any other number (a fraction or an exponent) is a Cedar ``decimal`` when it is exactly
  representable as one (at most 4 fractional digits, within
  -922337203685477.5808..922337203685477.5807), refused otherwise (``NaN``, ``Infinity``,
  ``0.00001``);
- an array is a Cedar ``Set``: its order and its duplicates are lost, so a rule cannot
  depend on them;
- an object is a record. A member whose value is ``null`` is left out (``has`` is false
  for it), and ``null`` anywhere else is refused. An object with a key ``__entity``,
  ``__extn`` or ``__expr`` is refused: those are the escapes of Cedar's JSON form, through
  which a caller could otherwise pass an entity reference, an extension value or an
  ``unknown()`` instead of data.

Bounds (``[guard]`` ``args_max_bytes``, ``args_max_depth``, ``args_max_values``): larger,
deeper or more numerous arguments are refused. A refused value makes the call
*undecidable* (:class:`Undecidable`, naming where and why, never the value: the reason
goes to the audit log; a member whose key is not a plain name is named by its length):
the decision point answers a deny with the reason ("the call's arguments cannot be
decided on: ..."), never an error and never a decision that skipped the arguments.
Arguments are mapped only when some policy reads ``context.args``; when none does they
cost nothing.

:func:`from_cedar` maps a record back to JSON (sets as lists), for the property tests that
hold the mapping to these rules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = ["DEFAULT_BOUNDS", "ESCAPES", "Bounds", "Undecidable", "from_cedar", "to_cedar"]

ESCAPES: Final = frozenset({"__entity", "__extn", "__expr"})

_LONG: Final = 2**63
_DECIMAL_MAX: Final = Decimal("922337203685477.5807")
_DECIMAL_MIN: Final = Decimal("-922337203685477.5808")
_QUANTUM: Final = Decimal("0.0001")


class Undecidable(ValueError):
    """The arguments cannot be put into Cedar as they are (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """How large, deep and numerous arguments may be (``[guard]`` settings)."""

    max_bytes: int = 1_048_576
    max_depth: int = 16
    max_values: int = 10_000


DEFAULT_BOUNDS: Final = Bounds()


def to_cedar(
    text: str | None, bounds: Bounds = DEFAULT_BOUNDS, *, where: str = "args"
) -> dict[str, Any]:
    """The Cedar record (in Cedar's JSON form) for a call's canonical JSON arguments
    (``where``: the context key they are, for the reasons); ``{}`` for none. Raises
    :class:`Undecidable` for what the rules refuse."""
    if text is None:
        return {}
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > bounds.max_bytes:
        raise Undecidable(f"{size} bytes, more than the {bounds.max_bytes} allowed")
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Undecidable(f"not JSON Cedar can hold: {exc}") from None
    if not isinstance(value, dict):
        raise Undecidable("the arguments are not a JSON object")
    mapper = _Mapper(bounds)
    return mapper.record(value, where, 1)


def from_cedar(value: Any) -> Any:
    """JSON for a Cedar value :func:`to_cedar` made: decimals as :class:`Decimal`, sets as
    lists (in no particular order)."""
    if isinstance(value, dict):
        extension = value.get("__extn")
        if isinstance(extension, dict) and extension.get("fn") == "decimal":
            return Decimal(str(extension["arg"]))
        return {key: from_cedar(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_cedar(item) for item in value]
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number Cedar has")


class _Mapper:
    """One mapping: counts the values it has seen against the bounds."""

    def __init__(self, bounds: Bounds) -> None:
        self._bounds = bounds
        self._values = 0

    def value(self, value: Any, where: str, depth: int) -> Any:
        self._values += 1
        if self._values > self._bounds.max_values:
            raise Undecidable(f"more than {self._bounds.max_values} values")
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            if not -_LONG <= value < _LONG:
                raise Undecidable(f"{where}: integer outside Cedar's 64-bit range")
            return value
        if isinstance(value, str):
            return _string(value, where)
        if isinstance(value, Decimal):
            return _number(value, where)
        if depth >= self._bounds.max_depth and isinstance(value, (list, dict)):
            raise Undecidable(f"{where}: nested deeper than {self._bounds.max_depth} levels")
        if isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                if item is None:
                    raise Undecidable(f"{where}[{index}]: null outside an object member")
                items.append(self.value(item, f"{where}[{index}]", depth + 1))
            return items
        if isinstance(value, dict):
            return self.record(value, where, depth + 1)
        if value is None:
            raise Undecidable(f"{where}: null outside an object member")
        raise Undecidable(f"{where}: {type(value).__name__} is not JSON")

    def record(self, value: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
        escapes = sorted(ESCAPES.intersection(value))
        if escapes:
            raise Undecidable(f"{where}: key {escapes[0]!r} is a Cedar JSON escape")
        record: dict[str, Any] = {}
        for key, item in value.items():
            _string(key, f"{where} key")
            if item is None:
                continue  # an absent member: `has` is false
            record[key] = self.value(item, _member(where, key), depth)
        return record


_NAME: Final = re.compile(r"[A-Za-z0-9_:@-]{1,64}")


def _member(where: str, key: str) -> str:
    """Where a member is, for a refusal's reason (which the audit log keeps): its key when
    it is a plain name, else only its length (a key is the caller's text: it may be long,
    or carry what the log must not)."""
    return f"{where}.{key}" if _NAME.fullmatch(key) else f"{where}[a key of {len(key)} chars]"


def _string(value: str, where: str) -> str:
    if "\x00" in value:
        raise Undecidable(f"{where}: a string holds NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Undecidable(f"{where}: a string holds a lone surrogate (not text)") from None
    return value


def _number(value: Decimal, where: str) -> int | dict[str, Any]:
    """A number JSON wrote as a fraction or with an exponent: a ``Long`` when it is whole
    (``5.0``, ``5E+0``, ``50e-1`` are 5), else a Cedar ``decimal``."""
    if value.is_finite() and -_LONG <= value < _LONG and value == value.to_integral_value():
        return int(value)
    return {"__extn": {"fn": "decimal", "arg": _decimal(value, where)}}


def _decimal(value: Decimal, where: str) -> str:
    """The Cedar ``decimal`` literal of ``value``, or :class:`Undecidable`."""
    if not value.is_finite():
        raise Undecidable(f"{where}: a number that is not finite")
    try:
        exact = value.quantize(_QUANTUM)
    except InvalidOperation:
        raise Undecidable(f"{where}: a number too large for a Cedar decimal") from None
    if exact != value:
        raise Undecidable(f"{where}: a number with more than 4 fractional digits")
    if not _DECIMAL_MIN <= exact <= _DECIMAL_MAX:
        raise Undecidable(f"{where}: a number outside a Cedar decimal's range")
    return f"{exact:f}"
