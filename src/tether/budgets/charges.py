"""Windows and charges: which window of a limit holds a moment, what a decision was
charged, and the answers a charge turns a decision into (an allow that says what is left,
a deny that says when the budget resets)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.limits import Limit, parse_limit
from tether.policy.decision import Decision, canonical

__all__ = [
    "Charge",
    "allowed",
    "denied",
    "exhausted",
    "iso",
    "limit_named",
    "metric_key",
    "window_start",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(now: datetime, limit: Limit) -> datetime:
    """The start of the window of ``limit`` that holds ``now``: aligned on the Unix epoch."""
    seconds = limit.seconds
    elapsed = math.floor((now - _EPOCH).total_seconds())
    return _EPOCH + timedelta(seconds=elapsed - elapsed % seconds)


def metric_key(limit: Limit) -> str:
    """The ``metric`` column of a limit's rows: the metric and its window in seconds (a
    grant may limit one metric over several windows whose starts coincide)."""
    return f"{limit.metric}/{limit.seconds}"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=256)
def limit_named(text: str) -> Limit:
    """A limit as a decision's budget names it (``str(Limit)``), parsed once."""
    return parse_limit(text)


@dataclass(frozen=True, slots=True)
class Charge:
    """One limit of a grant as a decision found it: ``used`` counts this call when it was
    charged; a limit found exhausted has ``used >= limit.amount``."""

    grant: str
    limit: Limit
    used: int
    start: datetime

    @property
    def left(self) -> int:
        return max(self.limit.amount - self.used, 0)

    @property
    def resets_at(self) -> datetime:
        return self.start + self.limit.window

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant": self.grant,
            "limit": str(self.limit),
            "used": self.used,
            "left": self.left,
            "window_start": iso(self.start),
            "resets_at": iso(self.resets_at),
        }


def denied(d: Decision, why: str) -> Decision:
    """``d`` as a deny for ``why`` (a charge that could not be made: fail closed)."""
    return replace(d, allowed=False, reasons=(why,), grants=(), cached=False, seq=None)


def allowed(d: Decision, charges: Sequence[Charge]) -> Decision:
    """``d`` charged: its reasons say what each limit has left, its budget what it took."""
    said = tuple(
        f"budget of grant {c.grant}: {c.limit} has {c.left} left until {iso(c.resets_at)}"
        for c in charges
    )
    return replace(d, reasons=d.reasons + said, budget=_json(charges))


def exhausted(d: Decision, short: Sequence[Charge], now: datetime) -> Decision:
    """The deny of a call no grant of an identity has budget left for: per grant, the
    limit, what is left (0) and when it resets, as a time and in seconds."""
    reasons = tuple(
        f"budget exhausted: grant {c.grant} allows {c.limit}; 0 left until "
        f"{iso(c.resets_at)} (in {math.ceil((c.resets_at - now).total_seconds())}s)"
        for c in short
    )
    return replace(d, allowed=False, reasons=reasons, grants=(), cached=False, budget=_json(short))


def _json(charges: Iterable[Charge]) -> str:
    return canonical([c.to_dict() for c in charges])
