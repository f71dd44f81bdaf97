"""``denial_burst``: a burst of denied attempts in a short window.

**Catches** an agent probing the edges of its grants: a hijacked agent trying tools,
resources, audiences or delegations it was never given, a stolen token tried against
everything. Counts denied ``decision`` events and ``*.refused`` events of the agent,
against all its decided actions in the same window.

**Parameters** ``[detect.detectors.denial_burst]``: ``window`` (5m), ``min_denials`` (5),
``min_ratio`` (0.5): a window is reported when its denials reach ``min_denials``, make at
least ``min_ratio`` of its decisions, and (once the agent has 8 windows with denials)
also stand out from its own history: ``>= factor * median`` and
``> median + mad_k * 1.4826 * MAD`` with the ``call_rate`` robustness settings. This
detector judges from the first event: probing does not wait for a baseline. Once per
window.

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

__all__ = ["DenialBurst"]


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
        denied = False
        for o in observations:
            if o.kind == CALL:
                decisions.add(moment.now, 1.0, o.seq)
                if o.amount:
                    denials.add(moment.now, 1.0, o.seq)
                    denied = True
        if not denied or denials.alerted or not denials.spiking:
            return None
        ratio = denials.value / max(decisions.value, denials.value)
        if ratio < self.min_ratio:
            return None
        denials.alerted = True
        return self.finding(
            moment,
            f"{short(moment.agent)}: {denials.value:.0f} denials out of "
            f"{decisions.value:.0f} decisions in {denials.window}s",
            denials.evidence,
            {
                "denials": denials.value,
                "decisions": decisions.value,
                "ratio": round(ratio, 4),
                "median": denials.median,
                "threshold": denials.threshold,
                "window_seconds": denials.window,
            },
        )
