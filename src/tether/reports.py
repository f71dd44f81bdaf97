"""Least-privilege reports: unused, expiring and broad grants, and the owner review."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.callers import Caller
from tether.durations import format_duration
from tether.grants import Grant, Grants
from tether.model import AgentState
from tether.registry import Registry
from tether.services import Services

__all__ = ["GrantReport", "Reports"]


@dataclass(frozen=True, slots=True)
class GrantReport:
    grant: Grant
    last_used: datetime | None
    suggestion: str

    def to_dict(self, trust_domain: str) -> dict[str, Any]:
        return {
            **self.grant.to_dict(trust_domain),
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "suggestion": self.suggestion,
        }


class Reports:
    def __init__(self, services: Services, registry: Registry, grants: Grants) -> None:
        self._settings = services.settings
        self._registry = registry
        self._grants = grants
        self._log = services.events
        self._clock = services.clock

    def last_uses(self, since: datetime) -> dict[str, datetime]:
        """When each grant last allowed a decision, from the decision record since ``since``."""
        return self._grants.last_uses(since)

    def grants(
        self,
        by: Caller,
        *,
        principal: str | None = None,
        unused: timedelta | None = None,
        expiring: timedelta | None = None,
        broad: bool = False,
    ) -> list[GrantReport]:
        now = self._clock()
        window = unused or self._settings.review_window
        if unused is not None:  # none of these was used in the window: no last use to show
            found = self._grants.list(by, principal=principal, unused_since=now - window)
            uses: dict[str, datetime] = {}
        else:
            found = self._grants.list(by, principal=principal)
            uses = self.last_uses(now - window)
        if expiring is not None:
            found = [g for g in found if g.expires_at <= now + expiring]
        if broad:
            found = [g for g in found if g.broad]
        named = {g.principal.id for g in found if g.principal.kind == "agent"}
        states = self._registry.states(by, named)
        return [self._report(g, uses.get(g.id), states, window, now) for g in found]

    def _report(
        self,
        grant: Grant,
        last_used: datetime | None,
        states: dict[str, AgentState],
        window: timedelta,
        now: datetime,
    ) -> GrantReport:
        state = states.get(grant.principal.id) if grant.principal.kind == "agent" else None
        if state is not None and state is not AgentState.ACTIVE:
            suggestion = f"revoke: the agent is {state.value}"
        elif grant.broad:
            suggestion = "narrow: a broad grant"
        elif last_used is None:
            suggestion = f"revoke: unused for {format_duration(window)}"
        elif grant.expires_at <= now + timedelta(days=7):
            suggestion = f"keep: renew before {grant.expires_at.date().isoformat()}"
        else:
            suggestion = "keep"
        return GrantReport(grant, last_used, suggestion)

    def review(self, by: Caller, owner: str | None = None) -> list[dict[str, Any]]:
        """Per owner, each agent with its grants, last use and a keep/revoke suggestion."""
        td = self._settings.trust_domain
        reports = {r.grant.id: r for r in self.grants(by)}
        by_principal: dict[str, list[GrantReport]] = {}
        for report in reports.values():
            by_principal.setdefault(report.grant.principal.key, []).append(report)
        owners: dict[str, list[dict[str, Any]]] = {}
        for agent in self._registry.list(by, owner=owner):
            if agent.state in (AgentState.RETIRED, AgentState.KILLED):
                continue
            rows = by_principal.get(f"agent:{agent.name}", [])
            owners.setdefault(agent.owner or "(unowned)", []).append(
                {
                    "agent": agent.id,
                    "state": agent.state.value,
                    "grants": [r.to_dict(td) for r in rows],
                }
            )
        return [{"owner": name, "agents": owners[name]} for name in sorted(owners)]
