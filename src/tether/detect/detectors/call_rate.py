"""``call_rate``: an agent makes far more calls in a window than it ever does.

**Catches** a hijacked or runaway agent driving its tools in a loop (goal hijack, a
prompt-injected "do this for every record"), scripted abuse of a stolen agent token,
denial-of-wallet. **Counts** every decided action (``decision`` events, allowed or denied,
and refusals) per window.

**Parameters** ``[detect.detectors.call_rate]``: ``window`` (5m), ``history`` (288
active windows), ``mad_k`` (8.0), ``factor`` (3.0), ``min_count`` (30): a window spikes at
``>= max(min_count, factor * median)`` and ``> median + mad_k * 1.4826 * MAD`` of the
agent's last ``history`` active windows; nothing before 8 windows of history.

**Severity** medium (volume alone is a weak signal: batch days are real).
**OWASP ASI** ASI10 Rogue Agents, ASI01 Agent Goal Hijack.
**MITRE ATLAS** AML.T0053 AI Agent Tool Invocation.
"""

from __future__ import annotations

from typing import ClassVar

from tether.detect.baseline import Baseline
from tether.detect.detectors._spike import SpikeDetector
from tether.detect.model import Severity
from tether.detect.observe import CALL
from tether.detect.stats import Series

__all__ = ["CallRate"]


class CallRate(SpikeDetector):
    id: ClassVar[str] = "call_rate"
    default: ClassVar[Severity] = "medium"
    kinds: ClassVar[frozenset[str]] = frozenset({CALL})
    kind: ClassVar[str] = CALL
    unit: ClassVar[str] = "calls"
    use_amount: ClassVar[bool] = False

    def series(self, baseline: Baseline) -> Series:
        return baseline.calls
