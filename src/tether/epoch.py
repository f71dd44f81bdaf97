"""The state epoch: one number that moves whenever agents, grants or policies change.

Every change bumps it in the same transaction. A decision point trusts its compiled state
while the epoch is unchanged; it re-reads the number from the store at most every
``staleness`` seconds, and at once after a change committed in this process.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Connection, select, update

from tether.store import Store, state_epoch

__all__ = ["StateEpoch"]


class StateEpoch:
    def __init__(self, store: Store, staleness: float) -> None:
        self._store = store
        self._staleness = staleness
        self._value = 0
        self._checked = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    def bump(self, conn: Connection) -> None:
        """Move the epoch inside the caller's write transaction."""
        conn.execute(
            update(state_epoch).where(state_epoch.c.id == 1).values(value=state_epoch.c.value + 1)
        )
        Store.after_commit(conn, self.invalidate)

    def invalidate(self) -> None:
        """Forget the cached value: the next :meth:`current` reads the store."""
        with self._lock:
            self._generation += 1
            self._checked = float("-inf")

    def current(self) -> int:
        """The epoch, read from the store when the cached value is older than the bound."""
        started = time.monotonic()
        if started - self._checked < self._staleness:
            return self._value
        with self._lock:
            generation = self._generation
        with self._store.read() as conn:
            value = conn.execute(
                select(state_epoch.c.value).where(state_epoch.c.id == 1)
            ).scalar_one()
        with self._lock:
            self._value = int(value)
            if generation == self._generation:
                self._checked = started
        return self._value
