"""``dormant_wake``: an agent that did nothing for a long time acts again.

**Catches** a forgotten agent (its owner moved on, its token or key still valid) being
picked up by someone else, and stale credentials of a decommissioned workload being
replayed. The gap is measured from the agent's last *active* observation (being delegated
to does not count) to this one.

**Parameters** ``[detect.detectors.dormant_wake]``: ``after`` (14d). Judged past the
learning period only. Once per wake: the waking event moves ``last_seen``.

**Severity** medium. **OWASP ASI** ASI03 Identity and Privilege Abuse, ASI10 Rogue Agents.
**MITRE ATLAS** AML.T0012 Valid Accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

from tether.config import DetectSettings
from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding, Severity
from tether.detect.observe import ACTIVE, Observation

__all__ = ["DormantWake"]


class DormantWake(Detector):
    id: ClassVar[str] = "dormant_wake"
    default: ClassVar[Severity] = "medium"
    kinds: ClassVar[frozenset[str]] = ACTIVE

    def __init__(self, settings: DetectSettings) -> None:
        super().__init__(settings)
        self.after = settings.detectors.dormant_wake.after.total_seconds()

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        previous = moment.previous
        if previous is None or moment.learning or moment.now - previous <= self.after:
            return None
        idle = moment.now - previous
        return self.finding(
            moment,
            f"{short(moment.agent)} acted after {idle / 86400:.1f} days without activity",
            (moment.event.seq,),
            {
                "idle_days": round(idle / 86400, 2),
                "last_seen": datetime.fromtimestamp(previous, UTC).isoformat(),
                "last_seq": moment.baseline.last_seq,
            },
        )
