"""``first_use``: an agent uses a tool, resource, upstream server or token audience it has
never used, once its learning period is over; or, while it is still learning, one that
none of its peers has ever used.

**Catches** a hijacked agent reaching for capabilities outside its job (the "agent that
starts calling a tool it never used" of the threat model), an over-broad grant being
exercised for the first time, a token asked for a new audience (lateral movement towards
another server). Only *allowed* uses count: a denied attempt is the business of
``denial_burst`` and ``enumeration``.

**Resources by collection.** A resource is judged by its collection, the path without its
last segment (``docs/reports/q3.pdf`` -> ``docs/reports``; a path of two segments is its
own collection): a new document in a folder the agent reads is its job, a new folder is
news. Data paths grow every day; the places they live in do not. (``enumeration`` watches
the individual paths.)

**Peers.** An agent in its learning period has no history of its own; it is compared with
its peer group, the agents of the same kind and owner that are past learning. An item that
*no* peer ever used raises the finding (``detail.basis = "peer group"``); with no peers,
nothing is said while learning.

**Dedup.** Once per item: the item joins the baseline when first seen, so it never
alerts again. One event raises at most one finding (a new tool on a new server is one
finding naming both). A kind whose set is full (2,000 items) is *saturated* and silent.

**Parameters** ``[detect.detectors.first_use]``: ``kinds`` (tool, resource, server,
audience): which kinds report; every kind is learned.

**Severity** medium (legitimate change happens; the response policy may raise it).
**OWASP ASI** ASI02 Tool Misuse and Exploitation, ASI01 Agent Goal Hijack.
**MITRE ATLAS** AML.T0053 AI Agent Tool Invocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.config import DetectSettings
from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding, Severity
from tether.detect.observe import AUDIENCE, RESOURCE, SERVER, TOOL, Observation

__all__ = ["FirstUse", "collection"]

_ITEMS = frozenset({TOOL, RESOURCE, SERVER, AUDIENCE})
_ATTEMPTS = frozenset({TOOL, RESOURCE})  # amount 0.0: denied, an attempt and not a use


def collection(path: str) -> str:
    """The collection of a resource path: without its last segment, if it has three."""
    return path.rsplit("/", 1)[0] if path.count("/") >= 2 else path


class FirstUse(Detector):
    id: ClassVar[str] = "first_use"
    default: ClassVar[Severity] = "medium"
    kinds: ClassVar[frozenset[str]] = _ITEMS

    def __init__(self, settings: DetectSettings) -> None:
        super().__init__(settings)
        self.reported = frozenset(settings.detectors.first_use.kinds)

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        baseline = moment.baseline
        novel: list[tuple[str, str]] = []
        basis = "peer group" if moment.learning else "own history"
        for o in observations:
            kind = o.kind
            if kind not in _ITEMS or (kind in _ATTEMPTS and not o.amount):
                continue
            value = collection(o.value) if kind == RESOURCE else o.value
            if not baseline.learn(kind, value) or kind not in self.reported:
                continue
            if not moment.learning:
                novel.append((kind, value))
                continue
            peers = moment.peers()
            if peers and not any(p.knows(kind, value) for p in peers):
                novel.append((kind, value))
        if not novel:
            return None
        what = ", ".join(f"{kind} {value}" for kind, value in novel)
        summary = f"{short(moment.agent)} used {what} for the first time"
        if moment.learning:
            summary += " (none of its peers ever did)"
        detail = {"new": [{"kind": k, "value": v} for k, v in novel], "basis": basis}
        return self.finding(moment, summary, (moment.event.seq,), detail)
