"""``off_hours``: an agent is active at an hour of the day when it (almost) never is.

**Catches** a stolen agent credential used from another time zone, a hijacked agent
working through the night, an attacker who waits until nobody watches. The histogram is
of *active minutes* per hour of the day in ``[detect] timezone`` (a minute counts once,
however many events it holds), learned continuously and fading slowly (see
:class:`tether.detect.hours.Hours`).

**Parameters** ``[detect.detectors.off_hours]``: ``min_share`` (0.005) and ``neighbours``
(1): a minute is off-hours when the hour it falls in, with ``neighbours`` hours either
side, holds less than ``min_share`` of the agent's active minutes. Judged only past the
learning period and with at least :data:`MIN_MINUTES` active minutes learned.

**Dedup.** One finding, then silence for :data:`COOLDOWN` (one off-hours session is one
anomaly); the off-hours minutes are learned as they come, so a new shift that lasts
becomes the agent's usual hours.

**Severity** medium (people do work late). **OWASP ASI** ASI10 Rogue Agents, ASI03 Identity
and Privilege Abuse. **MITRE ATLAS** AML.T0012 Valid Accounts (a valid credential used
out of pattern).
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

__all__ = ["COOLDOWN", "MIN_MINUTES", "OffHours"]

COOLDOWN: Final = 6 * 3600.0  # seconds of silence after an off-hours finding
MIN_MINUTES: Final = 120  # active minutes learned before any hour is judged
_MARK: Final = "off_hours.until"


class OffHours(Detector):
    id: ClassVar[str] = "off_hours"
    default: ClassVar[Severity] = "medium"
    kinds: ClassVar[frozenset[str]] = ACTIVE

    def __init__(self, settings: DetectSettings) -> None:
        super().__init__(settings)
        params = settings.detectors.off_hours
        self.min_share = params.min_share
        self.neighbours = params.neighbours
        self.zone = zoneinfo.ZoneInfo(settings.timezone)

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        hours = moment.baseline.hours
        minute = int(moment.now // 60)
        if minute == hours.minute:
            return None  # this minute is counted already
        hours.minute = minute
        hour = datetime.fromtimestamp(moment.now, UTC).astimezone(self.zone).hour
        found: Finding | None = None
        marks = moment.baseline.marks
        if (
            not moment.learning
            and hours.total >= MIN_MINUTES
            and moment.now >= marks.get(_MARK, 0.0)
        ):
            share = hours.share(hour, self.neighbours)
            if share < self.min_share:
                marks[_MARK] = moment.now + COOLDOWN
                found = self.finding(
                    moment,
                    f"{short(moment.agent)} active at {hour:02d}h ({self.zone.key}), an hour "
                    f"that holds {share:.2%} of its activity",
                    (moment.event.seq,),
                    {
                        "hour": hour,
                        "timezone": self.zone.key,
                        "share": round(share, 6),
                        "min_share": self.min_share,
                        "hours": [round(c, 1) for c in hours.counts],
                    },
                )
        hours.add(hour)
        return found
