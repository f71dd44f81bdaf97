"""The detectors, one module each (see each module's docstring, and ``docs/detectors.md``
for the table): what it catches, its parameters, its severity, its OWASP ASI and MITRE
ATLAS mapping. :func:`build` makes the ten of them from the settings, in the order of
:data:`tether.config.DETECTORS`."""

from __future__ import annotations

from tether.config import DETECTORS, DetectSettings
from tether.detect.detectors.base import Detector, Moment
from tether.detect.detectors.call_rate import CallRate
from tether.detect.detectors.credential_spike import CredentialSpike
from tether.detect.detectors.denial_burst import DenialBurst
from tether.detect.detectors.dormant_wake import DormantWake
from tether.detect.detectors.enumeration import Enumeration
from tether.detect.detectors.first_use import FirstUse
from tether.detect.detectors.new_delegation import NewDelegation
from tether.detect.detectors.off_hours import OffHours
from tether.detect.detectors.result_volume import ResultVolume
from tether.detect.detectors.unowned_actor import UnownedActor

__all__ = ["CLASSES", "Detector", "Moment", "build"]

CLASSES: tuple[type[Detector], ...] = (
    FirstUse,
    NewDelegation,
    CallRate,
    ResultVolume,
    Enumeration,
    DenialBurst,
    OffHours,
    DormantWake,
    CredentialSpike,
    UnownedActor,
)
assert tuple(c.id for c in CLASSES) == DETECTORS


def build(settings: DetectSettings) -> tuple[Detector, ...]:
    """One of each detector, configured by ``settings`` (disabled ones still learn)."""
    return tuple(cls(settings) for cls in CLASSES)
