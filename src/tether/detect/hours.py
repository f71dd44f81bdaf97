"""An agent's active hours: the histogram ``off_hours`` judges by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Hours"]


class Hours:
    """The agent's active hours: how many *active minutes* fell in each hour of the day
    (local time). A minute counts once however many events it holds, so a burst weighs
    what it lasted, not how loud it was. Past ``cap`` minutes every count is halved: old
    habits fade with a half-life of about ``cap / 2`` active minutes."""

    __slots__ = ("cap", "counts", "minute", "total")

    def __init__(self, cap: int = 20_000) -> None:
        self.cap = cap
        self.counts = [0.0] * 24
        self.total = 0.0
        self.minute = -1  # the last active minute (unix time // 60)

    def share(self, hour: int, neighbours: int) -> float:
        """The share of active minutes in ``hour`` and ``neighbours`` hours either side."""
        if self.total <= 0:
            return 0.0
        counts = self.counts
        seen = sum(counts[(hour + d) % 24] for d in range(-neighbours, neighbours + 1))
        return seen / self.total

    def add(self, hour: int) -> None:
        self.counts[hour] += 1.0
        self.total += 1.0
        if self.total > self.cap:
            self.counts = [c / 2.0 for c in self.counts]
            self.total = sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "minute": self.minute}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Hours:
        made = cls()
        if data:
            counts = [float(c) for c in data["counts"]]
            if len(counts) != 24:
                raise ValueError(f"active hours: 24 counts expected, got {len(counts)}")
            made.counts = counts
            made.total = sum(counts)
            made.minute = int(data["minute"])
        return made
