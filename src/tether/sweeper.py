"""A background job that persists what time does to agents (expiry, unowned grace) and
runs other periodic chores (forgetting used token IDs that can no longer replay)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from tether.jobs import Periodic
from tether.registry import Registry
from tether.store.locks import StoreLock

__all__ = ["Sweeper", "every"]

log = logging.getLogger("tether.sweeper")


class Sweeper(Periodic):
    """Sweeps the registry and runs ``chores`` every ``interval`` seconds (once per store
    when given the store's ``lock``)."""

    def __init__(
        self,
        registry: Registry,
        interval: float,
        chores: Sequence[Callable[[], object]] = (),
        *,
        lock: StoreLock | None = None,
    ) -> None:
        self._registry = registry
        self._chores = tuple(chores)
        super().__init__("sweeper", interval, self.sweep, lock=lock)

    def sweep(self) -> None:
        for agent in self._registry.sweep():
            log.info("agent %s is now %s", agent.id, agent.state.value)
        for chore in self._chores:
            chore()


def every(seconds: float, chore: Callable[[], object]) -> Callable[[], object]:
    """``chore``, run at most once per ``seconds`` however often the sweeper ticks."""
    last = [float("-inf")]

    def run() -> object:
        now = time.monotonic()
        if now - last[0] < seconds:
            return None
        last[0] = now
        return chore()

    return run
