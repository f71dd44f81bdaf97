"""One agent's baseline: what it normally does, bounded, and persisted as a JSON-ready dict.

A :class:`Baseline` holds

* ``first_seen`` / ``last_seen`` (unix seconds) and ``last_seq``: the learning period
  runs from ``first_seen``; ``last_seen`` is its last *active* observation (what a
  dormant agent wakes from);
* the sets it has used: ``tool``, ``resource`` (resource *collections*, see
  :mod:`~tether.detect.detectors.first_use`), ``server``, ``audience``, ``delegate_to``,
  ``delegated_by``;
* per-window series (:mod:`tether.detect.stats`): ``calls``, ``results`` (bytes),
  ``credentials``, ``denials`` and ``decisions`` (the denial ratio), and ``distinct``
  (distinct tools and resources per window);
* ``hours``: its active hours, in ``[detect] timezone`` (:mod:`tether.detect.hours`);
* ``marks``: the detectors' dedup state (when a cooldown ends, which day was reported),
  so one anomaly raises one finding across restarts.

**Bounds.** Each set holds at most :data:`SET_CAP` items. At the cap an item is not added
and the kind is marked *saturated*: ``first_use`` and ``new_delegation`` stay silent for
it (an agent that touches thousands of distinct paths has no "usual" set to leave; the
``enumeration`` detector is what watches it) and the saturation is reported in
:meth:`Baseline.to_dict`. Series histories are rings of ``history`` values; the hours
histogram halves itself past its cap. A persisted baseline is therefore a few hundred
kilobytes at most, whatever the agent does.

**Format.** :meth:`Baseline.to_dict` is versioned (``"version": 1``); :meth:`from_dict`
refuses a version it does not know, or a document it cannot read whole (``ValueError``),
rather than silently starting over, which would restart the learning period and blind the
novelty detectors. The engine then starts that agent afresh *and says so* (a
``detect.baseline_reset`` event, see :mod:`tether.detect.engine`): one unreadable row
never stops the detector for every other agent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from tether.config import DetectSettings, SpikeParams
from tether.detect.hours import Hours
from tether.detect.observe import AUDIENCE, DELEGATE_TO, DELEGATED_BY, RESOURCE, SERVER, TOOL
from tether.detect.stats import Distinct, Limits, Series, Volume

__all__ = ["SETS", "SET_CAP", "VERSION", "Baseline"]

VERSION: Final = 1
SET_CAP: Final = 2_000
RECENT_CAP: Final = 512  # decided calls remembered for the sliding denial window
SETS: Final = (TOOL, RESOURCE, SERVER, AUDIENCE, DELEGATE_TO, DELEGATED_BY)
_NEVER: Final = Limits(mad_k=float("inf"), factor=1.0, min_count=float("inf"))


def _seconds(params: SpikeParams) -> int:
    return max(1, int(params.window.total_seconds()))


def _limits(params: SpikeParams) -> Limits:
    return Limits(params.mad_k, params.factor, params.min_count)


class Baseline:
    """What one agent normally does (see the module docstring)."""

    __slots__ = (
        "agent",
        "calls",
        "credentials",
        "decisions",
        "denials",
        "distinct",
        "first_seen",
        "hours",
        "last_seen",
        "last_seq",
        "marks",
        "recent_calls",
        "results",
        "saturated",
        "sets",
    )

    def __init__(self, agent: str, settings: DetectSettings) -> None:
        self.agent = agent
        self.first_seen: float | None = None
        self.last_seen: float | None = None
        self.last_seq = 0
        self.sets: dict[str, set[str]] = {kind: set() for kind in SETS}
        self.saturated: set[str] = set()
        self.marks: dict[str, float] = {}
        # the last window's decided calls, (time, seq, denied): a sliding window for bursts
        self.recent_calls: deque[tuple[float, int, bool]] = deque(maxlen=RECENT_CAP)
        self.hours = Hours()
        self._series(settings, {})

    def _series(self, settings: DetectSettings, data: Mapping[str, Any]) -> None:
        d = settings.detectors
        rate, volume, creds = d.call_rate, d.result_volume, d.credential_spike
        self.calls = Series.from_dict(
            data.get("calls"), _seconds(rate), rate.history, _limits(rate)
        )
        self.results = Volume.from_dict(
            data.get("results"), _seconds(volume), volume.history, _limits(volume)
        )
        self.credentials = Series.from_dict(
            data.get("credentials"), _seconds(creds), creds.history, _limits(creds)
        )
        denial = d.denial_burst
        window = max(1, int(denial.window.total_seconds()))
        # Denials are judged against the agent's own history too: a burst must also stand
        # out from its usual denials (the call-rate detector's robustness settings).
        mine = Limits(rate.mad_k, rate.factor, float(denial.min_denials))
        self.denials = Series.from_dict(data.get("denials"), window, rate.history, mine, cold=True)
        self.decisions = Series.from_dict(data.get("decisions"), window, rate.history, _NEVER)
        enum = d.enumeration
        self.distinct = Distinct.from_dict(
            data.get("distinct"),
            max(1, int(enum.window.total_seconds())),
            rate.history,
            enum.min_distinct,
            enum.factor,
            SET_CAP,
        )

    # ---- learning ------------------------------------------------------------------------

    def learning(self, now: float, period: float) -> bool:
        """True while the agent is within ``period`` seconds of its first observation."""
        return self.first_seen is None or now < self.first_seen + period

    def knows(self, kind: str, value: str) -> bool:
        return value in self.sets[kind]

    def learn(self, kind: str, value: str) -> bool:
        """Add ``value`` to the ``kind`` set; True when it was new and is now known. False
        when it was known, or the set is full (the kind is then marked saturated)."""
        items = self.sets[kind]
        if value in items:
            return False
        if len(items) >= SET_CAP:
            self.saturated.add(kind)
            return False
        items.add(value)
        return True

    def seen(self, now: float, seq: int, active: bool) -> None:
        """Record an observation at ``now``: ``active`` ones move ``last_seen``."""
        if self.first_seen is None:
            self.first_seen = now
        if active and (self.last_seen is None or now > self.last_seen):
            self.last_seen = now
        self.last_seq = max(self.last_seq, seq)

    # ---- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The baseline as JSON-ready data (see :meth:`from_dict`)."""
        return {
            "version": VERSION,
            "agent": self.agent,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "last_seq": self.last_seq,
            "sets": {kind: sorted(items) for kind, items in self.sets.items()},
            "saturated": sorted(self.saturated),
            "marks": dict(self.marks),
            "recent_calls": [[t, seq, denied] for t, seq, denied in self.recent_calls],
            "hours": self.hours.to_dict(),
            "calls": self.calls.to_dict(),
            "results": self.results.to_dict(),
            "credentials": self.credentials.to_dict(),
            "denials": self.denials.to_dict(),
            "decisions": self.decisions.to_dict(),
            "distinct": self.distinct.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], settings: DetectSettings) -> Baseline:
        """A baseline persisted by :meth:`to_dict`, under today's settings (a series whose
        window length changed starts afresh). ``ValueError`` for an unknown version or a
        malformed document."""
        if not isinstance(data, Mapping):
            raise ValueError(f"malformed baseline: a {type(data).__name__}, not an object")
        if data.get("version") != VERSION:
            raise ValueError(f"baseline version {data.get('version')!r} unknown ({VERSION})")
        try:
            made = cls(str(data["agent"]), settings)
            made.first_seen = _unix(data["first_seen"])
            made.last_seen = _unix(data["last_seen"])
            made.last_seq = int(data["last_seq"])
            for kind in SETS:
                made.sets[kind] = {str(v) for v in data["sets"].get(kind, ())[:SET_CAP]}
            made.saturated = {str(k) for k in data["saturated"]}
            made.marks = {str(k): float(v) for k, v in data["marks"].items()}
            made.recent_calls.extend(
                (float(t), int(seq), bool(denied))
                for t, seq, denied in data.get("recent_calls", ())[-RECENT_CAP:]
            )
            made.hours = Hours.from_dict(data["hours"])
            made._series(settings, data)
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise ValueError(f"malformed baseline: {exc!r}"[:300]) from None
        return made


def _iso(unix: float | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC).isoformat()


def _unix(text: Any) -> float | None:
    return None if text is None else datetime.fromisoformat(str(text)).timestamp()
