"""``new_delegation``: an agent delegates to an agent it never delegated to, or is
delegated to by an agent it never worked for, once its learning period is over.

**Catches** a hijacked orchestrator handing work to an agent with other grants (the
confused deputy across agents), a rogue agent recruiting a privileged helper, a new
cross-team hop nobody designed. Read from allowed ``delegate`` decisions and from
``token.exchanged`` chains (``..., A, B``: A delegates to B).

**Dedup.** Once per pair: the pair joins both baselines (A's ``delegate_to``, B's
``delegated_by``). One hop raises one finding, when the delegator is past learning, or
else when the delegate is past learning and never saw the delegator (judged by the
delegate's baseline, ``detail.side = "delegated_by"``).

**About the delegator, always.** The finding -- hence the risk score it adds and any
automatic ``suspend`` or ``kill`` -- names the delegator, the agent that chose the hop.
Being delegated to is something done *to* the delegate: were the finding about it, any
agent allowed to hand work to a long-standing one (a new, still-learning agent above all)
could put that innocent agent under suspension by its first hand-off.

**Parameters** ``[detect.detectors.new_delegation]``: ``enabled``, ``severity`` only.

**Severity** high (delegation topologies are designed, and rarely change unannounced).
**OWASP ASI** ASI07 Insecure Inter-Agent Communication, ASI03 Identity and Privilege Abuse,
ASI08 Cascading Failures.
**MITRE ATLAS** none fits exactly (the hop is an authorised protocol step); its tactic is
Lateral Movement (AML.TA0015).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.config import DetectSettings
from tether.detect.detectors.base import Detector, Moment, short
from tether.detect.model import Finding, Severity
from tether.detect.observe import DELEGATE_TO, DELEGATED_BY, Observation

__all__ = ["NewDelegation"]


class NewDelegation(Detector):
    id: ClassVar[str] = "new_delegation"
    default: ClassVar[Severity] = "high"
    kinds: ClassVar[frozenset[str]] = frozenset({DELEGATE_TO, DELEGATED_BY})

    def __init__(self, settings: DetectSettings) -> None:
        super().__init__(settings)
        self._reported: tuple[int, str, str] | None = None  # (seq, delegator, delegate)

    def observe(self, moment: Moment, observations: Sequence[Observation]) -> Finding | None:
        found: Finding | None = None
        for o in observations:
            if o.kind == DELEGATE_TO:
                pair = (o.seq, moment.agent, o.value)
            elif o.kind == DELEGATED_BY:
                pair = (o.seq, o.value, moment.agent)
            else:
                continue
            new = moment.baseline.learn(o.kind, o.value)
            if not new or moment.learning or self._reported == pair or found is not None:
                continue
            self._reported = pair
            _, delegator, delegate = pair
            found = self.finding(
                moment,
                f"{short(delegator)} delegated to {short(delegate)} for the first time",
                (o.seq,),
                {"delegator": delegator, "delegate": delegate, "side": o.kind},
                agent=delegator,  # the one that acted (the module docstring)
            )
        return found
