"""Prometheus metrics in the text exposition format (version 0.0.4), without a client
library: a few counters kept in process and gauges read from the registry on scrape."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Metrics"]


class Metrics:
    """Counters of this process (decisions, tokens, refusals)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        with self._lock:
            self._counts[(name, tuple(sorted(labels.items())))] += amount

    def render(self, gauges: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> str:
        """The exposition text: this process's counters, then the given gauges."""
        lines: list[str] = []
        with self._lock:
            counts = dict(self._counts)
        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (name, labels), value in sorted(counts.items()):
            by_name.setdefault(name, []).append((labels, value))
        for name, rows in by_name.items():
            lines.append(f"# TYPE {name} counter")
            lines.extend(f"{name}{_labels(labels)} {value}" for labels, value in rows)
        for name, series in sorted(gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            lines.extend(
                f"{name}{_labels(labels)} {value}" for labels, value in sorted(series.items())
            )
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
