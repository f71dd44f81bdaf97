"""A background thread that persists what time does to agents (expiry, unowned grace)
and runs other periodic chores (forgetting used token IDs that can no longer replay)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from tether.registry import Registry

__all__ = ["Sweeper", "every"]

log = logging.getLogger("tether.sweeper")


class Sweeper:
    def __init__(
        self, registry: Registry, interval: float, chores: Sequence[Callable[[], object]] = ()
    ) -> None:
        self._registry = registry
        self._chores = tuple(chores)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tether-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                for agent in self._registry.sweep():
                    log.info("agent %s is now %s", agent.id, agent.state.value)
                for chore in self._chores:
                    chore()
            except Exception:  # a failed sweep is retried next tick; reads stay correct
                log.exception("sweep failed")


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
