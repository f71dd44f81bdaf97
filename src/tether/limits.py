"""Budgets on a grant: ``calls=100/1m``, ``bytes=10MB/1h``.

A limit is a metric (``calls``: decisions the grant allowed; ``bytes``: the size of the
results those calls returned), an amount and a fixed window (a duration: ``90s``,
``15m``, ``8h``, ``30d``). Windows are aligned on the Unix epoch, so every process that
shares the store counts into the same window. Sizes take ``B``, ``KB``, ``MB``, ``GB``
(powers of 1000) or ``KiB``, ``MiB``, ``GiB`` (powers of 1024).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tether.durations import format_duration, parse_duration
from tether.errors import InvalidRequest

__all__ = ["MAX_LIMITS", "METRICS", "Limit", "parse_limit", "parse_limits"]

METRICS = ("calls", "bytes")
MAX_LIMITS = 4
_MAX_AMOUNT = 2**53 - 1
_FORM = re.compile(
    r"(?P<metric>[a-z]+)=(?P<amount>[0-9]{1,16})(?P<unit>[A-Za-z]{0,3})/(?P<window>\S+)"
)
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_LARGEST_FIRST = sorted((u for u in _UNITS if u not in ("", "B")), key=_UNITS.__getitem__)[::-1]


@dataclass(frozen=True, slots=True)
class Limit:
    metric: str  # calls | bytes
    amount: int
    window: timedelta

    @property
    def seconds(self) -> int:
        return int(self.window.total_seconds())

    def __str__(self) -> str:
        """The form :func:`parse_limit` reads back, bytes in the largest exact unit."""
        amount = str(self.amount)
        if self.metric == "bytes":
            unit = next((u for u in _LARGEST_FIRST if self.amount % _UNITS[u] == 0), "")
            amount = f"{self.amount // _UNITS[unit]}{unit}" if unit else amount
        return f"{self.metric}={amount}/{format_duration(self.window)}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "amount": self.amount, "window": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limit:
        return cls(str(data["metric"]), int(data["amount"]), timedelta(seconds=int(data["window"])))


def parse_limit(text: str) -> Limit:
    """``METRIC=AMOUNT[UNIT]/WINDOW``; raises :class:`InvalidRequest` naming the form."""
    form = "METRIC=AMOUNT/WINDOW, e.g. calls=100/1m or bytes=10MB/1h"
    match = _FORM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequest(f"invalid limit {text!r}: use {form}")
    metric, unit = match["metric"], match["unit"]
    if metric not in METRICS:
        raise InvalidRequest(f"invalid limit {text!r}: the metric is one of {', '.join(METRICS)}")
    if unit not in _UNITS or (metric == "calls" and unit):
        units = "no unit" if metric == "calls" else ", ".join(u for u in _UNITS if u)
        raise InvalidRequest(f"invalid limit {text!r}: {metric} takes {units}")
    amount = int(match["amount"]) * _UNITS[unit]
    if not 0 < amount <= _MAX_AMOUNT:
        raise InvalidRequest(f"invalid limit {text!r}: the amount must be from 1 to 2^53-1")
    try:
        window = parse_duration(match["window"])
    except InvalidRequest as exc:
        raise InvalidRequest(f"invalid limit {text!r}: {exc.description}") from None
    return Limit(metric, amount, window)


def parse_limits(texts: Iterable[str]) -> tuple[Limit, ...]:
    """Several limits: at most :data:`MAX_LIMITS`, no metric and window twice."""
    limits = tuple(parse_limit(t) for t in texts)
    if len(limits) > MAX_LIMITS:
        raise InvalidRequest(f"at most {MAX_LIMITS} limits on a grant")
    seen = {(limit.metric, limit.window) for limit in limits}
    if len(seen) != len(limits):
        raise InvalidRequest("a limit names the same metric and window twice")
    return limits
