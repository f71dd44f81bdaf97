"""``denial_burst``: a burst of denied attempts in a short window.

**Catches** an agent probing the edges of its grants: a hijacked agent trying tools,
resources, audiences or delegations it was never given, a stolen token tried against
everything. Counts denied ``decision`` events and ``*.refused`` events of the agent,
against all its decided actions in the same window.

**Parameters** ``[detect.detectors.denial_burst]``: ``window`` (5m), ``min_denials`` (5),
``min_ratio`` (0.5): the last ``window`` seconds (a *sliding* window, so a burst across a
clock boundary counts whole) are reported when their denials reach ``min_denials``, make at
least ``min_ratio`` of their decisions, and (once the agent has 8 windows with denials)
also stand out from its own history: ``>= factor * median`` and
``> median + mad_k * 1.4826 * MAD`` with the ``call_rate`` robustness settings. This
detector judges from the first event: probing does not wait for a baseline. One finding
per burst: none again within ``window`` of the last.

**Severity** high. **OWASP ASI** ASI03 Identity and Privilege Abuse, ASI10 Rogue Agents.
**MITRE ATLAS** AML.T0133 Discover AI Agent Runtime Capabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.config import DetectSettings
from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding, Severity
from tether.detect.observe import CALL, Observation
from tether.detect.stats import EVIDENCE_CAP

__all__ = ["DenialBurst"]

_UNTIL = "denial_burst.until"  # no second finding before this time (one per burst)


class DenialBurst(Detector):
    id: ClassVar[str] = "denial_burst"
    default: ClassVar[Severity] = "high"
    kinds: ClassVar[frozenset[str]] = frozenset({CALL})

    def __init__(self, settings: DetectSettings) -> None:
        super().__init__(settings)
        self.min_ratio = settings.detectors.denial_burst.min_ratio

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        baseline = moment.baseline
        denials, decisions = baseline.denials, baseline.decisions
        recent = baseline.recent_calls
        now, window = moment.now, denials.window
        denied = False
        for o in observations:
            if o.kind == CALL:
                decisions.add(now, 1.0, o.seq)  # the history, by fixed windows
                if o.amount:
                    denials.add(now, 1.0, o.seq)
                    denied = True
                recent.append((now, o.seq, bool(o.amount)))
        while recent and recent[0][0] <= now - window:
            recent.popleft()  # what is left is the last `window` seconds: a sliding window
        if not denied or now < baseline.marks.get(_UNTIL, float("-inf")):
            return None
        seqs = [seq for _, seq, was_denied in recent if was_denied]
        count, total = len(seqs), len(recent)
        if not denials.exceeds(count) or count / total < self.min_ratio:
            return None
        baseline.marks[_UNTIL] = now + window  # one finding per burst
        return self.finding(
            moment,
            f"{short(moment.agent)}: {count} denials out of {total} decisions in {window}s",
            tuple(seqs[-EVIDENCE_CAP:]),
            {
                "denials": count,
                "decisions": total,
                "ratio": round(count / total, 4),
                "median": denials.median,
                "threshold": denials.threshold,
                "window_seconds": window,
            },
        )
