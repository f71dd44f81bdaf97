"""``result_volume``: an agent receives far more bytes of tool results in a window than
it ever does.

**Catches** exfiltration through tools: a hijacked agent dumping a table, a mailbox or a
repository through a tool it is allowed to use (the call is legitimate, the volume is
not). **Sums** ``detail.size`` of ``tool.result`` events per window.

**Parameters** ``[detect.detectors.result_volume]``: ``window`` (5m), ``history`` (288),
``mad_k`` (8.0), ``factor`` (3.0), ``min_count`` (1,000,000 bytes): the spike rule of
:mod:`tether.detect.stats`; nothing before 8 windows of history.

**Severity** high (a megabyte-scale jump over a robust baseline is a strong signal).
**OWASP ASI** ASI02 Tool Misuse and Exploitation, ASI01 Agent Goal Hijack.
**MITRE ATLAS** AML.T0086 Exfiltration via AI Agent Tool Invocation;
AML.T0085.001 Data from AI Services: AI Agent Tools.
"""

from __future__ import annotations

from typing import ClassVar

from tether.detect.baseline import Baseline
from tether.detect.detectors._spike import SpikeDetector
from tether.detect.model import Severity
from tether.detect.observe import RESULT
from tether.detect.stats import Series

__all__ = ["ResultVolume"]


class ResultVolume(SpikeDetector):
    id: ClassVar[str] = "result_volume"
    default: ClassVar[Severity] = "high"
    kinds: ClassVar[frozenset[str]] = frozenset({RESULT})
    kind: ClassVar[str] = RESULT
    unit: ClassVar[str] = "bytes of tool results"
    use_amount: ClassVar[bool] = True

    def series(self, baseline: Baseline) -> Series:
        return baseline.results
