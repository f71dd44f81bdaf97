"""Token buckets for refusals: the audit log records them, but no caller can flood it.

Every refusal is recorded, up to ``rate`` a second (bursts of ``burst``) *per caller*: an
authenticated identity, or for an unauthenticated request the client's address. Beyond
that a caller's refusals are only counted, and the count is recorded all the same: the
caller's next recorded refusal carries it, or, when that caller's bucket has refilled, a
summary event written on anyone's next refusal, by the server's sweeper, or when Tether
closes. One caller's flood thus neither grows the log without bound nor hides another
caller's refusals."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from tether.audit.record import Entry

if TYPE_CHECKING:
    from tether.audit.log import AuditLog

__all__ = ["CLIENT_ADDRESS", "RefusalLog", "Refusals", "Throttle"]

# The address of the client being served (set by the API for each request).
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("tether_client_address", default=None)


class Throttle:
    """One token bucket."""

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
            self._refill()
            if self._tokens < 1:
                self._suppressed += 1
                return None
            self._tokens -= 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed

    def settle(self, *, force: bool = False) -> int:
        """How many were suppressed, if the bucket has refilled enough to record a summary
        of them (or ``force``); that summary takes a token. 0: nothing to record now."""
        with self._lock:
            self._refill()
            if not self._suppressed or (self._tokens < 1 and not force):
                return 0
            self._tokens = max(0.0, self._tokens - 1)
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now


class Refusals:
    """One :class:`Throttle` per caller, for at most ``max_callers`` callers at a time (the
    least recently refused is forgotten first, its pending count handed out to record)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._max = max_callers
        self._buckets: OrderedDict[str, Throttle] = OrderedDict()
        self._pending: set[str] = set()  # callers with suppressed refusals not yet recorded
        self._forgotten: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def take(self, caller: str) -> int | None:
        """As :meth:`Throttle.take`, in ``caller``'s own bucket."""
        with self._lock:
            bucket = self._buckets.pop(caller, None) or Throttle(
                self._rate, self._burst, self._clock
            )
            self._buckets[caller] = bucket
            if len(self._buckets) > self._max:
                oldest, old = self._buckets.popitem(last=False)
                self._pending.discard(oldest)
                if count := old.settle(force=True):
                    self._forgotten.append((oldest, count))
        suppressed = bucket.take()
        with self._lock:
            if suppressed is None:
                self._pending.add(caller)
            else:  # this refusal is recorded and carries the count
                self._pending.discard(caller)
        return suppressed

    def settled(self, *, skip: str | None = None, force: bool = False) -> list[tuple[str, int]]:
        """``(caller, count)`` of suppressed refusals now due to be recorded as a summary:
        callers whose bucket has refilled (every one with ``force``), but ``skip`` (whose
        own next refusal carries its count)."""
        with self._lock:
            due, self._forgotten = self._forgotten, []
            for caller in sorted(self._pending):
                if caller == skip:
                    continue
                count = self._buckets[caller].settle(force=force)
                if count:
                    due.append((caller, count))
                    self._pending.discard(caller)
        return due


class RefusalLog:
    """Where every face and service records a refusal: per-caller buckets over the log.

    ``buckets`` may be replaced (tests give it a hand-moved clock); ``on_suppressed`` is
    called for each refusal only counted (the process's metric)."""

    def __init__(
        self,
        log: AuditLog,
        buckets: Refusals,
        on_suppressed: Callable[[], object] = lambda: None,
    ) -> None:
        self._log = log
        self.buckets = buckets
        self._on_suppressed = on_suppressed

    def record(
        self,
        actor: str,
        reason: str,
        op: str,
        *,
        type: str = "access.refused",
        subject: str | None = None,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Record a refusal of ``actor`` (``anonymous``: keyed by the client's address), or
        only count it when that caller is over its rate."""
        caller = actor if actor != "anonymous" else f"anonymous@{_network(CLIENT_ADDRESS.get())}"
        self.summarise(self.buckets.settled(skip=caller))
        suppressed = self.buckets.take(caller)
        if suppressed is None:
            self._on_suppressed()
            return
        body: dict[str, Any] = {"op": op}
        if suppressed:
            body["suppressed_before"] = suppressed
        body.update(detail or {})
        self._log.record(
            Entry.of(type, actor=actor, subject=subject, reason=reason, detail=body, **fields)
        )

    def settle(self) -> None:
        """Record the counts of callers whose buckets have refilled (a periodic chore, so a
        flood that stops is on record without waiting for the next refusal)."""
        self.summarise(self.buckets.settled())

    def flush(self) -> None:
        """Record every count still pending (at close)."""
        self.summarise(self.buckets.settled(force=True))

    def summarise(self, counts: Sequence[tuple[str, int]]) -> None:
        """One summary event per caller whose refusals were counted but not recorded."""
        for caller, count in counts:
            actor = "anonymous" if caller.startswith("anonymous@") else caller
            self._log.record(
                Entry.of(
                    "access.refused",
                    actor=actor,
                    subject=None,
                    reason=f"{count} more refusals of this caller were counted, not recorded "
                    "(rate limit)",
                    detail={"op": "refusals.suppressed", "suppressed": count, "caller": caller},
                )
            )


def _network(address: str | None) -> str:
    """The bucket of an anonymous client: its IPv4 address, or its IPv6 /64 (one host
    holds a whole /64, so a bucket per IPv6 address would be a bucket per attempt)."""
    if not address:
        return "-"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6 and parsed.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed.ipv4_mapped or parsed) if parsed.version == 6 else str(parsed)
