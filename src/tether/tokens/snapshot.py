"""Agents, revoked token IDs, grants and gateway servers as of the current state epoch.

Every revocation, every agent change, every grant added or revoked and every gateway
server removed moves the epoch, so while it stands a cold verify, an audience check and
the scope of a new token read nothing from the store. Grants and servers are read lazily,
once per principal (or server) and epoch; a grant's expiry is not a change of the epoch,
so callers keep only the grants live at their own ``now`` (:meth:`Snapshots.grants_of`).
A server is remembered only once seen: one added since is found by the next read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Table, select

from tether.grants import Grant, Grants
from tether.model import Agent
from tether.registry import Registry
from tether.services import Services
from tether.store import egress_destinations, gateway_servers, issued_tokens
from tether.tokens.claims import SYSTEM

__all__ = ["Snapshot", "Snapshots"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    epoch: int
    agents: dict[str, Agent]
    revoked: frozenset[str]
    # filled lazily while the epoch stands: principal -> its unrevoked grants
    grants: dict[str, tuple[Grant, ...]] = field(default_factory=dict)
    servers: set[str] = field(default_factory=set)  # gateway servers seen to exist
    destinations: set[str] = field(default_factory=set)  # egress destinations seen to exist


class Snapshots:
    def __init__(self, services: Services, registry: Registry, grants: Grants) -> None:
        self._store = services.store
        self._settings = services.settings
        self._epoch = services.epoch
        self._clock = services.clock
        self._registry = registry
        self._grants = grants
        self._snap: Snapshot | None = None

    def current(self) -> Snapshot:
        """The snapshot of the current state epoch (read again once it has moved)."""
        epoch = self._epoch.current()
        snapshot = self._snap
        if snapshot is not None and snapshot.epoch == epoch:
            return snapshot
        horizon = self._clock() - self._settings.token_leeway
        agents: dict[str, Agent] = {str(a.id): a for a in self._registry.list(SYSTEM)}
        with self._store.read() as conn:
            revoked = frozenset(
                conn.execute(
                    select(issued_tokens.c.jti).where(
                        issued_tokens.c.revoked_at.is_not(None),
                        issued_tokens.c.expires_at > horizon,
                    )
                ).scalars()
            )
        snapshot = Snapshot(epoch, agents, revoked)
        self._snap = snapshot
        return snapshot

    def grants_of(self, principal: str, now: datetime) -> list[Grant]:
        """The grants of ``principal`` (an agent ID or ``user:<email>``) live at ``now``,
        oldest first, as :meth:`tether.grants.Grants.list` gives them."""
        cache = self.current().grants
        held = cache.get(principal)
        if held is None:
            every = self._grants.list(SYSTEM, principal=principal, include_inactive=True)
            held = cache[principal] = tuple(g for g in every if g.revoked_at is None)
        return [g for g in held if g.live(now)]

    def has_server(self, name: str) -> bool:
        """Whether the gateway server ``name`` exists (a removal moves the epoch)."""
        return self._exists(gateway_servers, name, self.current().servers)

    def has_destination(self, name: str) -> bool:
        """Whether the egress destination ``name`` exists (a removal moves the epoch)."""
        return self._exists(egress_destinations, name, self.current().destinations)

    def _exists(self, table: Table, name: str, seen: set[str]) -> bool:
        """Whether ``table`` holds a row named ``name``; one found is remembered in
        ``seen`` (the snapshot's: a removal moves the epoch, and the snapshot with it)."""
        if name in seen:
            return True
        with self._store.read() as conn:
            found = conn.execute(select(table.c.name).where(table.c.name == name)).first()
        if found is None:
            return False
        seen.add(name)
        return True
