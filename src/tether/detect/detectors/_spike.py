"""The shared shape of the three spike detectors (``call_rate``, ``result_volume``,
``credential_spike``): a per-window total against the agent's own median/MAD history
(:class:`tether.detect.stats.Series`), reported once per window."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.detect.baseline import Baseline
from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding
from tether.detect.observe import Observation
from tether.detect.stats import Series

__all__ = ["SpikeDetector"]


class SpikeDetector(Detector):
    kind: ClassVar[str]  # the one observation kind it sums
    unit: ClassVar[str]  # what it sums, for summaries
    use_amount: ClassVar[bool]  # sum the observations' amounts (bytes), else count them

    def series(self, baseline: Baseline) -> Series:
        raise NotImplementedError

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        series = self.series(moment.baseline)
        found = False
        for o in observations:
            if o.kind == self.kind:
                series.add(moment.now, o.amount if self.use_amount else 1.0, o.seq)
                found = True
        if not found or series.alerted or not series.spiking:
            return None
        series.alerted = True
        value = series.value
        return self.finding(
            moment,
            f"{short(moment.agent)}: {value:,.0f} {self.unit} in {series.window}s, usually "
            f"{series.median:,.0f} (threshold {series.threshold:,.0f})",
            series.evidence,
            {
                "value": value,
                "median": series.median,
                "mad": series.mad,
                "threshold": series.threshold,
                "window_seconds": series.window,
                "windows": len(series.history),
            },
        )
