"""``unowned_actor``: an agent with no accountable owner (its owner was offboarded, or it
was discovered as a shadow agent and registered without one) is still acting.

**Catches** orphaned agents that keep running on valid credentials, and shadow agents in
use before anyone owns them: nobody would notice if they were hijacked. The registry's
facts are read through :class:`tether.detect.model.Facts` (refreshed when the agent's
lifecycle events go by).

**Parameters** ``[detect.detectors.unowned_actor]``: ``enabled``, ``severity`` only. Once
per agent per day (in ``[detect] timezone``); not silenced by the learning period.

**Severity** high (an unowned agent acting is a governance failure, whatever it does).
**OWASP ASI** ASI10 Rogue Agents, ASI03 Identity and Privilege Abuse.
**MITRE ATLAS** none (a governance gap, not an adversary technique).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar, Final

from tether.config import DetectSettings
from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding, Severity
from tether.detect.observe import ACTIVE, Observation

__all__ = ["UnownedActor"]

_MARK: Final = "unowned_actor.day"


class UnownedActor(Detector):
    id: ClassVar[str] = "unowned_actor"
    default: ClassVar[Severity] = "high"
    kinds: ClassVar[frozenset[str]] = ACTIVE

    def __init__(self, settings: DetectSettings) -> None:
        super().__init__(settings)
        self.zone = zoneinfo.ZoneInfo(settings.timezone)

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        facts = moment.facts
        if facts is None or (facts.owner is not None and not facts.shadow):
            return None
        marks = moment.baseline.marks
        day = float(datetime.fromtimestamp(moment.now, UTC).astimezone(self.zone).toordinal())
        if marks.get(_MARK) == day:
            return None
        marks[_MARK] = day
        why = "a shadow agent" if facts.shadow else "an unowned agent"
        return self.finding(
            moment,
            f"{short(moment.agent)}, {why}, is acting",
            (moment.event.seq,),
            {"owner": facts.owner, "shadow": facts.shadow, "state": facts.state},
        )
