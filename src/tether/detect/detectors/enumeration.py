"""``enumeration``: an agent touches many distinct tools or resources in a short window,
far more than it ever does.

**Catches** discovery and bulk collection: a hijacked agent walking a file tree or a
bucket, calling every tool of a server to see what answers, probing resources it may not
read. Attempts count, allowed or denied (a denied read of a new path is still a step of
the walk).

**Parameters** ``[detect.detectors.enumeration]``: ``window`` (10m), ``min_distinct``
(15), ``factor`` (3.0): a window is reported when it reaches
``max(min_distinct, factor * peak)`` distinct items, ``peak`` being the most the agent
touched in any of its last ``[detect.detectors.call_rate] history`` active windows;
nothing before 8 windows of history. Once per window.

**Severity** high. **OWASP ASI** ASI02 Tool Misuse and Exploitation, ASI10 Rogue Agents.
**MITRE ATLAS** AML.T0133 Discover AI Agent Runtime Capabilities; AML.T0085.001 Data from
AI Services: AI Agent Tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding, Severity
from tether.detect.observe import RESOURCE, TOOL, Observation

__all__ = ["Enumeration"]


class Enumeration(Detector):
    id: ClassVar[str] = "enumeration"
    default: ClassVar[Severity] = "high"
    kinds: ClassVar[frozenset[str]] = frozenset({TOOL, RESOURCE})

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        distinct = moment.baseline.distinct
        added = False
        for o in observations:
            if o.kind in self.kinds:
                added = distinct.add(moment.now, f"{o.kind}:{o.value}", o.seq) or added
        if not added or distinct.alerted or not distinct.spiking:
            return None
        distinct.alerted = True
        count = len(distinct.items)
        return self.finding(
            moment,
            f"{short(moment.agent)} touched {count} distinct tools/resources in "
            f"{distinct.window}s, at most {distinct.peak} before",
            distinct.evidence,
            {
                "distinct": count,
                "peak": distinct.peak,
                "threshold": distinct.threshold,
                "window_seconds": distinct.window,
                "sample": sorted(distinct.items)[:20],
            },
        )
