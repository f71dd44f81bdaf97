"""The decision point's compiled state for one epoch: agents, grants and guardrails as
parsed Cedar objects, built per delegation chain and kept until the epoch moves, with the
resources' labels as they were when it was built (one snapshot of the label source) and,
per guardrail, the context keys it reads and who may approve what it forbids
(``@approval``). A chain's compiled policies come twice when a guardrail holds calls for
approval: with every guardrail, and without those (:attr:`CompiledChain.unheld`), so the
decision point can tell a call that approval would let through from one it would not."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cedarpy

from tether.grants import Grant
from tether.model import Agent, AgentState
from tether.policy.decision import Decision
from tether.policy.labels import NO_LABELS, LabelView
from tether.principals import Principal

__all__ = ["CompiledChain", "PolicyState", "Rail", "context_reads", "reads", "resource_entity"]

_APPROVERS = ("owner", "admin")

_MAX_CHAINS = 4096


_CONTEXT = '{"Var":"context"}'
_ATTR = re.compile(r',"attr":("(?:[^"\\]|\\.)*")')


def context_reads(policies: str) -> frozenset[str] | None:
    """The context keys any policy may read, however it is written (``context.hour``,
    ``context["hour"]``, ``context has hour``), or ``None`` when a policy uses the whole
    context record (then it may read every key). Inputs no policy reads do not key the
    decision cache (see :mod:`tether.policy.inputs`)."""
    if "context" not in policies:
        return frozenset()
    document = cedarpy.policies_to_json_str(policies)
    keys: set[str] = set()
    start = document.find(_CONTEXT)
    while start != -1:
        after = start + len(_CONTEXT)
        attr = _ATTR.match(document, after)
        if attr is None:
            return None
        keys.add(json.loads(attr.group(1)))
        start = document.find(_CONTEXT, after)
    return frozenset(keys)


def reads(keys: frozenset[str] | None, name: str) -> bool:
    """Whether policies reading ``keys`` (see :func:`context_reads`) may read ``name``."""
    return keys is None or name in keys


@dataclass(frozen=True, slots=True)
class Rail:
    """What the decision point needs to know of one guardrail beyond its text."""

    reads: frozenset[str] | None  # the context keys it reads (None: any)
    approval: str | None  # owner | admin: what it forbids is held for their approval

    @classmethod
    def of(cls, text: str) -> Rail:
        document = json.loads(cedarpy.policies_to_json_str(text))
        held: str | None = None
        for est in document.get("staticPolicies", {}).values():
            value = est.get("annotations", {}).get("approval")
            held = value if value in _APPROVERS else None  # anything else: a plain forbid
        return cls(context_reads(text), held)


@dataclass(frozen=True, slots=True)
class CompiledChain:
    policies: cedarpy.PolicySet
    entities: cedarpy.Entities
    unheld: cedarpy.PolicySet | None = None  # without the @approval guardrails (if any)


@dataclass
class PolicyState:
    epoch: int
    valid_until: datetime
    agents: dict[str, Agent]
    grants: dict[str, list[Grant]]  # by principal key
    guardrails: str  # built-in and organisation guardrails, as Cedar text
    context_reads: frozenset[str] | None  # the context keys policies read (None: any)
    rails: dict[str, Rail] = field(default_factory=dict)  # by guardrail ID
    unheld: str | None = None  # the guardrails without @approval ones (None: there are none)
    labels: LabelView = NO_LABELS  # the resources' labels, one snapshot
    by_id: dict[str, Grant] = field(default_factory=dict)  # live grants by ID
    decisions: dict[Hashable, Decision] = field(default_factory=dict)  # by request + inputs
    _chains: dict[tuple[tuple[Principal, ...], tuple[str, ...]], CompiledChain] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(
        cls,
        epoch: int,
        now: datetime,
        agents: Iterable[Agent],
        grants: Iterable[Grant],
        guardrails: Sequence[tuple[str, str]],
        grace_deadline: Any,
        labels: LabelView = NO_LABELS,
    ) -> PolicyState:
        """``guardrails``: each guardrail's ID and Cedar text."""
        by_name: dict[str, Agent] = {str(agent.name): agent for agent in agents}
        by_principal: dict[str, list[Grant]] = {}
        live = [g for g in grants if g.live(now)]
        for grant in live:
            by_principal.setdefault(grant.principal.key, []).append(grant)
        deadlines = [g.expires_at for g in live]
        for agent in by_name.values():
            if agent.state in (AgentState.ACTIVE, AgentState.SUSPENDED):
                deadlines.append(agent.expires_at)
                if agent.unowned_since is not None:
                    deadlines.append(grace_deadline(agent.unowned_since))
        future = [d for d in deadlines if d > now]
        conditional = "".join(g.to_cedar() for g in live if g.condition)
        rails = {pid: Rail.of(text) for pid, text in guardrails}
        text = "".join(text for _, text in guardrails)
        held = any(rail.approval for rail in rails.values())
        unheld = "".join(t for pid, t in guardrails if not rails[pid].approval) if held else None
        return cls(
            epoch=epoch,
            valid_until=min(future, default=datetime.max.replace(tzinfo=now.tzinfo)),
            agents=by_name,
            grants=by_principal,
            guardrails=text,
            context_reads=context_reads(text + conditional),
            rails=rails,
            unheld=unheld,
            labels=labels,
            by_id={g.id: g for g in live},
        )

    def chain(
        self, principals: tuple[Principal, ...], groups: tuple[str, ...] = ()
    ) -> CompiledChain:
        """Parsed policies (guardrails + these principals' grants) and entities, cached
        per chain *and* the person's groups (the ``User`` entity holds them), so entities
        built for one set of groups are never used for another."""
        key = (principals, groups)
        compiled = self._chains.get(key)
        if compiled is not None:
            return compiled
        permits = "".join(
            grant.to_cedar() for p in principals for grant in self.grants.get(p.key, ())
        )
        entities = [self._entity(p, groups) for p in dict.fromkeys(principals)]
        compiled = CompiledChain(
            cedarpy.PolicySet.from_str(self.guardrails + permits),
            cedarpy.Entities.from_json_str(json.dumps(entities)),
            None if self.unheld is None else cedarpy.PolicySet.from_str(self.unheld + permits),
        )
        with self._lock:
            if len(self._chains) >= _MAX_CHAINS:
                self._chains.clear()
            self._chains[key] = compiled
        return compiled

    def _entity(self, principal: Principal, groups: tuple[str, ...]) -> dict[str, Any]:
        if principal.kind == "user":
            return {
                "uid": {"type": "User", "id": principal.id},
                "attrs": {"email": principal.id, "groups": list(groups), "state": "active"},
                "parents": [],
            }
        agent = self.agents[principal.id]
        return {
            "uid": {"type": "Agent", "id": agent.name},
            "attrs": {
                "owner": agent.owner or "",
                "state": agent.state.value,
                "kind": agent.kind.value,
                "parent": agent.parent or "",
            },
            "parents": [],
            "tags": dict(agent.labels),
        }


def resource_entity(resource: str, labels: tuple[str, ...]) -> str:
    """The request's resource entity, as Cedar JSON (resources and actions are checked to
    hold no characters that JSON would escape)."""
    depth = resource.count("/") + 1
    return (
        f'[{{"uid":{{"type":"Resource","id":"{resource}"}},'
        f'"attrs":{{"path":"{resource}","depth":{depth},"labels":{json.dumps(labels)}}},'
        '"parents":[]}]'
    )
