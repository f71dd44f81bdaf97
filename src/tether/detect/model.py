"""The values the detector's parts pass each other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tether.config import SEVERITIES, Severity

__all__ = [
    "SEVERITIES",
    "SYSTEM_ACTOR",
    "AgentFacts",
    "Alert",
    "AlertAction",
    "Facts",
    "Finding",
    "Severity",
    "severity_rank",
]

SYSTEM_ACTOR = "system:detect"  # automatic actions and alerts are recorded as this actor


def severity_rank(severity: str) -> int:
    """0 (low) .. 3 (critical); an unknown severity ranks below low."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """What the registry says of an agent when its events are read."""

    id: str
    kind: str
    owner: str | None  # None: unowned
    state: str  # active, suspended, ... (AgentState values)
    shadow: bool = False  # found by discovery and registered without an accountable owner


class Facts(Protocol):
    """Looks agents up (the registry, through the runner); ``None`` for an unknown id."""

    def agent(self, agent_id: str) -> AgentFacts | None: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector raises: an alert before it is stored.

    ``agent`` is the agent the finding is about (the acting agent of the events);
    ``chain`` the delegation chain of the last evidence event, human first; ``evidence``
    the audit sequence numbers that triggered it, in order (``tether audit explain SEQ``);
    ``at`` the time of the last of them. ``detail`` holds the detector's figures (the
    value seen, the baseline, the threshold), JSON-ready and free of secrets."""

    detector: str
    severity: Severity
    agent: str
    chain: tuple[str, ...]
    summary: str
    evidence: tuple[int, ...]
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertAction:
    """An automatic response taken on an alert (or refused by the circuit breaker)."""

    action: str  # suspend, kill, kill-cascade
    at: datetime
    outcome: str  # done, unneeded (already stopped), failed, skipped (breaker), pending
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Alert:
    """A stored alert. ``state`` is open, acknowledged, resolved or suppressed; the
    ``state_*`` fields say who put it there, why and when (None while it is open)."""

    id: str
    created_at: datetime
    detector: str
    severity: Severity
    agent: str
    owner: str | None  # the agent's owner when it was raised (who may see it)
    chain: tuple[str, ...]
    summary: str
    evidence: tuple[int, ...]
    detail: Mapping[str, Any]
    state: str
    state_by: str | None = None
    state_reason: str | None = None
    state_at: datetime | None = None
    actions: tuple[AlertAction, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "detector": self.detector,
            "severity": self.severity,
            "agent": self.agent,
            "owner": self.owner,
            "chain": list(self.chain),
            "summary": self.summary,
            "evidence": list(self.evidence),
            "detail": dict(self.detail),
            "state": self.state,
            "state_by": self.state_by,
            "state_reason": self.state_reason,
            "state_at": self.state_at.isoformat() if self.state_at else None,
            "actions": [
                {
                    "action": a.action,
                    "at": a.at.isoformat(),
                    "outcome": a.outcome,
                    "detail": a.detail,
                }
                for a in self.actions
            ],
        }
