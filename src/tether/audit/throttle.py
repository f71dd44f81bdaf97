"""A token bucket for audit events anyone can cause without credentials.

An unauthenticated refusal is recorded, but an attacker must not be able to grow the
log without bound: beyond ``rate`` events a second (bursts of ``burst``) they are only
counted, and the next one recorded carries how many were suppressed before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self._suppressed = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """None when this event must only be counted; else how many were suppressed
        since the last one recorded (to write into it)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                self._suppressed += 1
                return None
            self._tokens -= 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed
