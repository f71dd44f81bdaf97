"""Agents and revoked token IDs as of the current state epoch: every revocation and every
agent change moves the epoch, so a cold verify (and an audience or lifetime check) reads
nothing from the store while it stands."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from tether.model import Agent
from tether.registry import Registry
from tether.services import Services
from tether.store import issued_tokens
from tether.tokens.claims import SYSTEM

__all__ = ["Snapshot", "Snapshots"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    epoch: int
    agents: dict[str, Agent]
    revoked: frozenset[str]


class Snapshots:
    def __init__(self, services: Services, registry: Registry) -> None:
        self._store = services.store
        self._settings = services.settings
        self._epoch = services.epoch
        self._clock = services.clock
        self._registry = registry
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
