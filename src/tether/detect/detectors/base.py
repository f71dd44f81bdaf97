"""What every detector is: a small unit that reads one agent's observations of one event,
updates its part of the agent's baseline, and may raise one :class:`Finding`.

A detector *always learns* (its part of the baseline is updated whether it is enabled or
not, so enabling it later does not flood) and *reports only when enabled*, at its own
severity or the ``severity`` override of its ``[detect.detectors.NAME]`` table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tether.config import DetectorParams, DetectSettings
from tether.detect.baseline import Baseline
from tether.detect.model import AgentFacts, Finding, Severity
from tether.detect.observe import Observation
from tether.model import Event

__all__ = ["Detector", "Moment", "short"]


@dataclass(slots=True)
class Moment:
    """One event as one agent's detectors see it.

    ``now`` is the event's time in unix seconds; ``learning`` whether the agent is in its
    learning period; ``previous`` its ``last_seen`` *before* this event (None: never
    active); ``peers`` the baselines of its peers (same kind and owner) that are past
    learning, computed on demand."""

    agent: str
    baseline: Baseline
    facts: AgentFacts | None
    event: Event
    now: float
    learning: bool
    previous: float | None
    peers: Callable[[], list[Baseline]]


def short(agent: str) -> str:
    """The agent's name, for one-line summaries (its SPIFFE ID's last segment)."""
    return agent.rsplit("/", 1)[-1]


class Detector:
    """The base of the ten detectors (``id`` is the key in ``[detect.detectors]``)."""

    id: ClassVar[str]
    default: ClassVar[Severity]
    kinds: ClassVar[frozenset[str]]  # the observation kinds it reads

    def __init__(self, settings: DetectSettings) -> None:
        params: DetectorParams = getattr(settings.detectors, self.id)
        self.settings = settings
        self.enabled = params.enabled
        self.severity: Severity = params.severity or self.default

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        raise NotImplementedError

    def finding(
        self,
        moment: Moment,
        summary: str,
        evidence: Iterable[int],
        detail: dict[str, Any],
        agent: str | None = None,
    ) -> Finding | None:
        """The finding, or None when the detector is disabled. It is about ``agent``
        (default: the agent whose observation it is)."""
        if not self.enabled:
            return None
        return Finding(
            detector=self.id,
            severity=self.severity,
            agent=agent or moment.agent,
            chain=moment.event.chain or (moment.agent,),
            summary=summary,
            evidence=tuple(evidence),
            at=moment.event.at,
            detail=detail,
        )
