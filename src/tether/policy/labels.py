"""Where the decision point gets a resource's labels (``resource.labels`` in Cedar).

A label source (:class:`LabelSource`; Tether's is :class:`tether.upstreams.labels.Labels`)
gives a :class:`LabelView` once per compiled state (:meth:`LabelSource.snapshot`, called
when the state epoch moves): a change of labels bumps the epoch, so the labels a decision
saw are those of its state, and cached decisions never outlive them. Without a source every
resource has no labels (:data:`NO_LABELS`). What the labels mean, and the words reasons use
for them, are here too.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["NO_LABELS", "LabelSource", "LabelView", "NoLabels", "touched"]


class LabelView(Protocol):
    """The labels of every item at one moment."""

    def of(self, action: str, resource: str) -> frozenset[str]:
        """The labels of ``resource`` as reached by ``action`` (``tools/call``...)."""
        ...


class LabelSource(Protocol):
    """Gives the decision point a :class:`LabelView` per compiled state."""

    def snapshot(self) -> LabelView:
        """The labels now (called once per state build; an error there is a deny)."""
        ...


class NoLabels:
    """No labels anywhere: the source of a decision point that was given none."""

    def of(self, action: str, resource: str) -> frozenset[str]:
        return frozenset()

    def snapshot(self) -> LabelView:
        return self


NO_LABELS: Final = NoLabels()

_TOUCHED: Final = {
    "sensitive": "read sensitive data",
    "untrusted": "took in untrusted content",
    "egress": "sent data out",
    "destructive": "made a destructive change",
    "plain": "touched plain data",
}


def touched(label: str) -> str:
    """What the work did to carry ``label``, as a reason says it (``read sensitive data``)."""
    return _TOUCHED.get(label, f"touched {label!r} data")
