"""The decision point's compiled state for one epoch: agents, grants and guardrails as
parsed Cedar objects, built per delegation chain and kept until the epoch moves."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cedarpy

from tether.grants import Grant
from tether.model import Agent, AgentState
from tether.policy.decision import AccessRequest, Decision
from tether.principals import Principal

__all__ = ["CompiledChain", "PolicyState", "reads_the_clock"]

_MAX_CHAINS = 4096


_CONTEXT = '{"Var":"context"}'
_OTHER_ATTR = re.compile(r',"attr":"(?!(?:time|hour)")[^"]*"')


def reads_the_clock(policies: str) -> bool:
    """Whether any policy may read ``context.time`` or ``context.hour`` (however it is
    written: ``context["hour"]``, ``context has time``, or the whole context record).
    Decisions under such policies are never cached."""
    if "context" not in policies:
        return False
    document = cedarpy.policies_to_json_str(policies)
    start = document.find(_CONTEXT)
    while start != -1:
        after = start + len(_CONTEXT)
        if _OTHER_ATTR.match(document, after) is None:
            return True
        start = document.find(_CONTEXT, after)
    return False


@dataclass(frozen=True, slots=True)
class CompiledChain:
    policies: cedarpy.PolicySet
    entities: cedarpy.Entities


@dataclass
class PolicyState:
    epoch: int
    valid_until: datetime
    agents: dict[str, Agent]
    grants: dict[str, list[Grant]]  # by principal key
    guardrails: str  # built-in and organisation guardrails, as Cedar text
    time_sensitive: bool
    decisions: dict[AccessRequest, Decision] = field(default_factory=dict)
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
        guardrails: str,
        grace_deadline: Any,
    ) -> PolicyState:
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
        return cls(
            epoch=epoch,
            valid_until=min(future, default=datetime.max.replace(tzinfo=now.tzinfo)),
            agents=by_name,
            grants=by_principal,
            guardrails=guardrails,
            time_sensitive=reads_the_clock(guardrails + conditional),
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
        text = self.guardrails + "".join(
            grant.to_cedar() for p in principals for grant in self.grants.get(p.key, ())
        )
        entities = [self._entity(p, groups) for p in dict.fromkeys(principals)]
        compiled = CompiledChain(
            cedarpy.PolicySet.from_str(text),
            cedarpy.Entities.from_json_str(json.dumps(entities)),
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
