"""``credential_spike``: an agent fetches far more credentials from the vault broker in a
window than it ever does.

**Catches** credential harvesting: a hijacked agent pulling every secret its grants
reach, or minting dynamic vault tokens in a loop to stockpile them. **Counts**
``credential.issued`` events (one per brokered secret or lease) per window.

**Parameters** ``[detect.detectors.credential_spike]``: ``window`` (15m), ``history``
(288), ``mad_k`` (8.0), ``factor`` (3.0), ``min_count`` (10): the spike rule of
:mod:`tether.detect.stats`; nothing before 8 windows of history.

**Severity** high. **OWASP ASI** ASI03 Identity and Privilege Abuse.
**MITRE ATLAS** AML.T0098 AI Agent Tool Credential Harvesting.
"""

from __future__ import annotations

from typing import ClassVar

from tether.detect.baseline import Baseline
from tether.detect.detectors._spike import SpikeDetector
from tether.detect.model import Severity
from tether.detect.observe import CREDENTIAL
from tether.detect.stats import Series

__all__ = ["CredentialSpike"]


class CredentialSpike(SpikeDetector):
    id: ClassVar[str] = "credential_spike"
    default: ClassVar[Severity] = "high"
    kinds: ClassVar[frozenset[str]] = frozenset({CREDENTIAL})
    kind: ClassVar[str] = CREDENTIAL
    unit: ClassVar[str] = "credential fetches"
    use_amount: ClassVar[bool] = False

    def series(self, baseline: Baseline) -> Series:
        return baseline.credentials
