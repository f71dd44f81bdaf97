"""Attack injectors for the detector's scenario tests: each method makes the events of one
attack by one agent from a given time, for the tests to append after a benign workload
(:mod:`helpers.workload`) and number after it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from helpers.workload import Emitter, Profile, Raw

__all__ = ["Attacks"]


class Attacks:
    """The events of one attack by one agent from time ``at`` (to append to a workload and
    number after it). Each method returns the raws in time order."""

    def __init__(self, seed: int = 99) -> None:
        self.rng = random.Random(seed)

    def _emit(self) -> tuple[Emitter, list[Raw]]:
        out: list[Raw] = []
        return Emitter(self.rng, out), out

    def enumeration(self, p: Profile, at: datetime, n: int = 80) -> list[Raw]:
        """Reads of ``n`` distinct paths never read, two a second; a third denied."""
        emit, out = self._emit()
        server = p.servers[0]
        for i in range(n):
            emit.call(
                p,
                at + timedelta(seconds=i / 2),
                path=f"{server}/secret/dump{i}",
                read=True,
                deny=i % 3 == 0,
                size=2048,
            )
        return out

    def exfiltration(self, p: Profile, at: datetime, n: int = 5, size: float = 40e6) -> list[Raw]:
        """``n`` calls of its usual top tool returning ``size`` bytes each."""
        emit, out = self._emit()
        for i in range(n):
            emit.call(
                p,
                at + timedelta(seconds=20 * i),
                path=p.tools[0],
                read=False,
                deny=False,
                size=size,
            )
        return out

    def burst(self, p: Profile, at: datetime, n: int = 40) -> list[Raw]:
        """``n`` ordinary calls in ``n`` minutes (at an hour chosen by the caller)."""
        emit, out = self._emit()
        for i in range(n):
            emit.call(p, at + timedelta(seconds=60 * i + 1), deny=False)
        return out

    def flood(self, p: Profile, at: datetime, n: int = 400) -> list[Raw]:
        """``n`` ordinary calls in ``n / 4`` seconds (a runaway loop)."""
        emit, out = self._emit()
        for i in range(n):
            emit.call(p, at + timedelta(seconds=i / 4), path=p.tools[0], read=False, deny=False)
        return out

    def new_tool(
        self, p: Profile, at: datetime, tool: str = "admin/delete_everything"
    ) -> list[Raw]:
        emit, out = self._emit()
        emit.call(p, at, path=tool, read=False, deny=False)
        return out

    def new_delegation(self, p: Profile, target: Profile, at: datetime) -> list[Raw]:
        emit, out = self._emit()
        emit.delegate(p, target, at)
        return out

    def probing(self, p: Profile, at: datetime, n: int = 20) -> list[Raw]:
        """``n`` denied calls, two a second, on tools it has no grant for."""
        emit, out = self._emit()
        for i in range(n):
            emit.call(
                p,
                at + timedelta(seconds=i / 2),
                path=f"{p.servers[0]}/forbidden{i % 4}",
                read=False,
                deny=True,
            )
        return out

    def wake(self, p: Profile, at: datetime, n: int = 3) -> list[Raw]:
        return self.burst(p, at, n)

    def credentials(self, p: Profile, at: datetime, n: int = 30) -> list[Raw]:
        """``n`` vault fetches of distinct references within a few minutes."""
        emit, out = self._emit()
        for i in range(n):
            emit.credential(p, at + timedelta(seconds=6 * i), ref=f"vault/kv/prod/key{i}")
        return out

    def unowned(self, p: Profile, at: datetime, n: int = 3) -> list[Raw]:
        """The agent loses its owner (an ``agent.unowned`` event), then acts."""
        lost: Raw = (at, "agent.unowned", "admin", ("admin",), "agent.unowned", p.id, None, {})
        return [lost, *self.burst(p, at + timedelta(seconds=1), n)]
