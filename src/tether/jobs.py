"""Background jobs: work a running Tether does besides answering requests.

A job has a name and is started and stopped (:class:`Job`). Most are :class:`Periodic`:
a callable run every N seconds (or sooner, when woken) on a thread of its own. Given a
:class:`~tether.store.locks.StoreLock`, a periodic job runs only while this process
holds that lock, so it runs once per store however many processes share the store;
when its holder stops or dies, another process takes it over on its next try.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from tether.store.locks import StoreLock

__all__ = ["Job", "Periodic"]

log = logging.getLogger("tether.jobs")


class Job(Protocol):
    """Background work that the runtime starts, and stops in reverse order."""

    @property
    def name(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Periodic:
    """``tick`` every ``interval`` seconds (sooner after :meth:`wake`); with ``lock``, only
    while this process holds it. A failed tick is logged and tried again next time."""

    def __init__(
        self,
        name: str,
        interval: float,
        tick: Callable[[], object],
        *,
        lock: StoreLock | None = None,
    ) -> None:
        self._name = name
        self._interval = interval
        self._tick = tick
        self._lock = lock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tether-{name}", daemon=True)

    @property
    def name(self) -> str:
        return self._name

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._lock is not None:
            self._lock.release()  # the next process to try takes over at once

    def wake(self) -> None:
        """Run the next tick now rather than at the end of the interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._lock is not None and not self._lock.hold():
                continue  # another process runs this job
            try:
                self._tick()
            except Exception:  # retried next tick; what it reads stays correct
                log.exception("background job %s failed", self._name)
