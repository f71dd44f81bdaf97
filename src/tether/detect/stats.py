"""Robust statistics over bounded histories: how much an agent does per window, and when.

**Why median/MAD, not EWMA.** A spike detector learns from the very stream it watches, so
the statistic must not be moved by the outliers it hunts:

* *Robustness.* The median and the median absolute deviation (MAD) have a 50 % breakdown
  point: an attacker who floods one window, or a dozen, moves neither. An EWMA mean and
  variance absorb every burst (one 100x window lifts the mean and, far more, the variance),
  so the next burst looks normal; the attacker can *train* it by ramping up.
* *No warm-up drift.* An EWMA starts from a guess and needs many half-lives to forget it;
  its answer depends on the order of the past. The median of the last ``history`` windows
  is the same whatever came first, and is defined as soon as there are a few windows
  (we wait for :data:`MIN_WINDOWS`).
* *Bounded memory.* The history is a ring of the last ``history`` values (288 five-minute
  windows by default: one day of activity), a few kilobytes per series, persisted as is.

A window *spikes* when its total is ``>= max(min_count, factor * median)`` **and**
``> median + mad_k * 1.4826 * MAD`` (1.4826 * MAD estimates the standard deviation of a
normal distribution). The three terms guard three failure modes: ``min_count`` ignores
tiny absolute numbers (3 calls where there is usually 1), ``factor`` ignores relative noise
when the MAD is wide, and the MAD term ignores what is within the agent's own spread.

**Active windows only.** The history holds the windows in which the agent did something;
idle windows (nights, weekends, an agent that runs once an hour) are not zeros in it. The
question asked is "when this agent works, does it ever work this hard?", so an agent idle
two thirds of the day does not get a median of 0 and a threshold of ``min_count``.

**O(1) per event.** The median, MAD and thresholds are computed once, when a window closes
(``O(history log history)``, once per window per series); an event only adds to the open
window and compares with two precomputed numbers. Windows are aligned on the epoch
(``floor(unix time / window)``), and time comes from the events, never from a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

__all__ = [
    "EVIDENCE_CAP",
    "MAD_SCALE",
    "MIN_WINDOWS",
    "Distinct",
    "Limits",
    "Series",
    "Volume",
    "median_mad",
]

MAD_SCALE: Final = 1.4826  # MAD -> standard deviation, for normally distributed data
MIN_WINDOWS: Final = 8  # a series judges nothing before it has seen this many active windows
EVIDENCE_CAP: Final = 50  # the most recent event seqs a window keeps as evidence


def median_mad(values: Iterable[float]) -> tuple[float, float]:
    """The median of ``values`` and their median absolute deviation (unscaled).
    ``(0.0, 0.0)`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0
    med = _median_sorted(ordered)
    return med, _median_sorted(sorted(abs(v - med) for v in ordered))


def _median_sorted(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    """When a window spikes (see the module docstring)."""

    mad_k: float
    factor: float
    min_count: float


class Series:
    """A per-window total (calls, bytes, fetches...) judged against the last ``history``
    active windows. Before :data:`MIN_WINDOWS` of them, a *cold* series judges by
    ``min_count`` alone; any other judges nothing."""

    __slots__ = (
        "above",
        "alerted",
        "cold",
        "evidence",
        "floor",
        "history",
        "index",
        "limits",
        "mad",
        "median",
        "stale",
        "value",
        "window",
    )

    def __init__(self, window: int, history: int, limits: Limits, cold: bool = False) -> None:
        self.window = window  # seconds
        self.limits = limits
        self.cold = cold
        self.index = -1  # the open window (unix time // window); -1: none yet
        self.value = 0.0
        self.alerted = False
        self.evidence: deque[int] = deque(maxlen=EVIDENCE_CAP)
        self.history: deque[float] = deque(maxlen=history)
        self.median = 0.0
        self.mad = 0.0
        self.floor = float("inf")
        self.above = float("inf")
        self.stale = True  # the history changed since the thresholds were computed

    @property
    def ready(self) -> bool:
        return len(self.history) >= MIN_WINDOWS

    def add(self, t: float, amount: float, seq: int) -> None:
        """Add ``amount`` at unix time ``t`` (event ``seq``). A late event (of an earlier
        window than the open one) counts in the open window."""
        index = int(t // self.window)
        if index > self.index:
            self._roll(index)
        self.value += amount
        self.evidence.append(seq)

    @property
    def spiking(self) -> bool:
        """The open window is over its threshold (the caller sets :attr:`alerted` when it
        reports it, so a window is reported once)."""
        return self._over(self.value)

    def exceeds(self, value: float) -> bool:
        """Whether a total of ``value`` over one window would spike (a sliding window's
        total is judged against the same history)."""
        return self._over(value)

    def _over(self, value: float) -> bool:
        if value < self.limits.min_count:
            return False  # below every threshold: no need to look at the history
        if self.stale:
            self._recompute()
        return value >= self.floor and value > self.above

    @property
    def threshold(self) -> float:
        """The smallest total that spikes (for reports)."""
        if self.stale:
            self._recompute()
        return max(self.floor, self.above)

    def _roll(self, index: int) -> None:
        if self.value > 0:
            self.history.append(self.value)
            self.stale = True
        self.index = index
        self.value = 0.0
        self.alerted = False
        self.evidence.clear()

    def _recompute(self) -> None:
        self.stale = False
        limits = self.limits
        if len(self.history) < MIN_WINDOWS:
            cold = self.cold
            self.floor = limits.min_count if cold else float("inf")
            self.above = float("-inf") if cold else float("inf")
            return
        self.median, self.mad = median_mad(self.history)
        self.floor = max(limits.min_count, limits.factor * self.median)
        self.above = self.median + limits.mad_k * MAD_SCALE * self.mad

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "index": self.index,
            "value": self.value,
            "alerted": self.alerted,
            "evidence": list(self.evidence),
            "history": list(self.history),
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        window: int,
        history: int,
        limits: Limits,
        cold: bool = False,
    ) -> Self:
        """The series as persisted, under today's parameters. A series persisted with
        another window length starts afresh: its history measures something else."""
        series = cls(window, history, limits, cold)
        if not data or data.get("window") != window:
            return series
        series.history.extend(float(v) for v in data["history"][-history:])
        series.index = int(data["index"])
        series.value = float(data["value"])
        series.alerted = bool(data["alerted"])
        series.evidence.extend(int(s) for s in data["evidence"])
        return series


class Volume(Series):
    """A :class:`Series` of bytes that knows the agent's results are heavy-tailed.

    Result sizes are roughly log-normal: an agent whose results are usually kilobytes
    now and then returns a megabyte, legitimately. So the series also keeps the log sizes
    of the agent's last :data:`SIZES` results and their robust spread: a result up to
    ``exp(median + TAIL * 1.4826 * MAD)`` of the logs is *plausible* for this agent. A
    window is judged without its largest result when that result is plausible: one large
    result of the agent's own kind is not a spike; one far outside it (a dump), or many
    large ones, are."""

    __slots__ = ("largest", "plausible", "sizes", "sizes_stale")

    SIZES: Final = 512
    TAIL: Final = 6.0

    def __init__(self, window: int, history: int, limits: Limits, cold: bool = False) -> None:
        super().__init__(window, history, limits, cold)
        self.sizes: deque[float] = deque(maxlen=self.SIZES)
        self.sizes_stale = True
        self.largest = 0.0  # the open window's largest result
        self.plausible = 0.0  # the largest plausible result (bytes); 0 before any history

    def add(self, t: float, amount: float, seq: int) -> None:
        index = self.index
        super().add(t, amount, seq)
        if self.index != index:
            self.largest = 0.0
        self.largest = max(self.largest, amount)
        self.sizes.append(math.log1p(amount))
        self.sizes_stale = True

    @property
    def spiking(self) -> bool:
        if not self._over(self.value):
            return False
        if self.sizes_stale:
            self.sizes_stale = False
            if len(self.sizes) >= MIN_WINDOWS:
                med, mad = median_mad(self.sizes)
                self.plausible = math.expm1(med + self.TAIL * MAD_SCALE * mad)
        discount = self.largest if self.largest <= self.plausible else 0.0
        return self._over(self.value - discount)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "largest": self.largest, "sizes": list(self.sizes)}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        window: int,
        history: int,
        limits: Limits,
        cold: bool = False,
    ) -> Self:
        made = super().from_dict(data, window, history, limits, cold)
        if data and data.get("window") == window:
            made.sizes.extend(float(v) for v in data["sizes"][-cls.SIZES :])
            made.largest = float(data["largest"])
        return made


class Distinct:
    """How many distinct items an agent touches per window, against the most it touched
    in any of its last ``history`` active windows. The open window's set is capped at
    ``cap`` items (past it, the window has spiked already or the cap is the answer)."""

    __slots__ = (
        "alerted",
        "cap",
        "evidence",
        "factor",
        "history",
        "index",
        "items",
        "minimum",
        "peak",
        "threshold",
        "window",
    )

    def __init__(self, window: int, history: int, minimum: int, factor: float, cap: int) -> None:
        self.window = window
        self.minimum = minimum
        self.factor = factor
        self.cap = cap
        self.index = -1
        self.items: set[str] = set()
        self.alerted = False
        self.evidence: deque[int] = deque(maxlen=EVIDENCE_CAP)
        self.history: deque[int] = deque(maxlen=history)
        self.peak = 0
        self.threshold = float("inf")

    def add(self, t: float, item: str, seq: int) -> bool:
        """Count ``item`` at unix time ``t``; True when it is new in the open window (its
        ``seq`` is then evidence)."""
        index = int(t // self.window)
        if index > self.index:
            self._roll(index)
        items = self.items
        if item in items or len(items) >= self.cap:
            return False
        items.add(item)
        self.evidence.append(seq)
        return True

    @property
    def spiking(self) -> bool:
        """The open window reached ``max(minimum, factor * peak)`` distinct items (never
        before :data:`MIN_WINDOWS` active windows of history)."""
        return len(self.items) >= self.threshold

    def _roll(self, index: int) -> None:
        if self.items:
            self.history.append(len(self.items))
            self._recompute()
        self.index = index
        self.items = set()
        self.alerted = False
        self.evidence.clear()

    def _recompute(self) -> None:
        self.peak = max(self.history, default=0)
        if len(self.history) >= MIN_WINDOWS:
            self.threshold = max(self.minimum, self.factor * self.peak)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "index": self.index,
            "items": sorted(self.items),
            "alerted": self.alerted,
            "evidence": list(self.evidence),
            "history": list(self.history),
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        window: int,
        history: int,
        minimum: int,
        factor: float,
        cap: int,
    ) -> Distinct:
        made = cls(window, history, minimum, factor, cap)
        if not data or data.get("window") != window:
            return made
        made.history.extend(int(v) for v in data["history"][-history:])
        made._recompute()
        made.index = int(data["index"])
        made.items = {str(i) for i in data["items"][:cap]}
        made.alerted = bool(data["alerted"])
        made.evidence.extend(int(s) for s in data["evidence"])
        return made
