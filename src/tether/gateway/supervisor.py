"""Keeping upstream sessions alive: one session (for a stdio upstream, one process) per
upstream, opened on first use, watched, restarted when it dies, closed cleanly.

Each upstream gets a supervising task in the caller's task group. It opens the session,
publishes it, and then watches it. A request that failed on the connection, a probe that
fails (a fresh tool listing, so that a process that died while idle is noticed too) or a
change of the upstream's configuration in the store (checked every ``WATCH`` seconds)
closes the session and opens a new one; a removed upstream is closed for good. The probe
runs ``WATCH`` seconds after the session opened and backs off while nothing changes: each
listing equal to the one before, or larger than ``gateway_max_items``, doubles the wait up
to ``PROBE_MAX``; a listing that changed brings it back to ``WATCH``. A session that fails
to open is retried with exponential backoff (0.25 s doubling up to 30 s); meanwhile
requests are refused at once with the reason rather than left waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio import to_thread

from tether import redact
from tether.core import Tether
from tether.errors import NotFound, TetherError, UpstreamUnavailable
from tether.gateway import scrub
from tether.gateway.upstream import UpstreamSession
from tether.upstreams.servers import Upstream

__all__ = ["Supervisor"]

log = logging.getLogger("tether.gateway")

WATCH = 2.0  # seconds between configuration checks of a session (and its first probe)
PROBE_MAX = 60.0  # the longest wait between two probes of a session that never changes
PROBE_TIMEOUT = 10.0  # a probe unanswered this long means the upstream is gone
START_TIMEOUT = 30.0  # how long a request waits for a session being (re)opened
_BACKOFF_FIRST, _BACKOFF_MAX = 0.25, 30.0


class _Slot:
    """What the supervisor of one upstream currently has: an open session, or the reason
    it has none (and when it tries again). ``changed`` fires on every change."""

    def __init__(self) -> None:
        self.session: UpstreamSession | None = None
        self.error: str | None = None
        self.retry_at = 0.0
        self.restarts = 0
        self.stop = anyio.Event()
        self.changed = anyio.Event()

    def publish(self, session: UpstreamSession | None, error: str | None = None) -> None:
        self.session, self.error = session, error
        self.changed.set()
        self.changed = anyio.Event()


class Supervisor:
    """``async with Supervisor(tether).running(): session = await sup.get(name)``"""

    def __init__(self, tether: Tether) -> None:
        self._tether = tether
        self._slots: dict[str, _Slot] = {}
        self._group: Any = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield self
            finally:
                self._group = None
                for slot in self._slots.values():
                    slot.stop.set()
                self._slots.clear()

    def opened(self, name: str) -> UpstreamSession | None:
        """The live session to ``name``, if there is one (without waiting)."""
        slot = self._slots.get(name)
        session = slot.session if slot is not None else None
        return session if session is not None and not session.broken else None

    def restarts(self, name: str) -> int:
        """How many times the session to ``name`` was opened again after the first."""
        slot = self._slots.get(name)
        return slot.restarts if slot is not None else 0

    async def get(self, name: str) -> UpstreamSession:
        """The live session to upstream ``name``; raises NotFound (no such upstream) or
        UpstreamUnavailable (it cannot be started now: why, and when it is tried again)."""
        slot = self._slots.get(name)
        if slot is None:
            if self._group is None:
                raise UpstreamUnavailable("the gateway is not running")
            upstream = await to_thread.run_sync(self._tether.upstreams.get, name)
            slot = self._slots.get(name)  # another request may have started it meanwhile
            if slot is None:
                slot = self._slots[name] = _Slot()
                self._group.start_soon(self._supervise, upstream, slot)
        with anyio.move_on_after(START_TIMEOUT):
            while True:
                session = slot.session
                if session is not None and not session.broken:
                    return session
                if slot.error is not None:
                    wait = max(0.0, slot.retry_at - time.monotonic())
                    raise UpstreamUnavailable(
                        f"upstream {name} is unavailable ({slot.error}); next try in {wait:.1f} s"
                    )
                if slot.stop.is_set():
                    raise NotFound(f"no upstream server {name}")
                await slot.changed.wait()
        raise UpstreamUnavailable(f"upstream {name} did not start within {START_TIMEOUT:.0f} s")

    async def _supervise(self, upstream: Upstream, slot: _Slot) -> None:
        failures = 0
        current: Upstream | None = upstream
        while current is not None and not slot.stop.is_set():
            try:
                prints = scrub.fingerprinter(self._tether.settings.home)
                async with UpstreamSession(
                    current, self._tether.vault, fingerprint=prints
                ) as session:
                    failures = 0
                    slot.publish(session)
                    current = await self._watch(session, slot)
                    if current is None:  # removed (or stopping): no session any more
                        slot.stop.set()
                    slot.publish(None)  # nobody is handed the session being closed
                if current is not None and not slot.stop.is_set():
                    slot.restarts += 1
                    log.warning("upstream %s: session ended, opening a new one", upstream.name)
            except Exception as exc:  # could not open (or close): back off and try again
                failures += 1
                delay = min(_BACKOFF_FIRST * 2 ** (failures - 1), _BACKOFF_MAX)
                slot.retry_at = time.monotonic() + delay
                why = exc.description if isinstance(exc, TetherError) else _describe(exc)
                log.warning("upstream %s failed: %s; retrying in %.2f s", upstream.name, why, delay)
                slot.publish(None, f"failed to start: {why}")
                with anyio.move_on_after(delay):
                    await slot.stop.wait()
                if not slot.stop.is_set():
                    slot.restarts += 1
                    current = await self._current(upstream.name)
                    slot.publish(None)  # waiting requests wait for this try
        if self._slots.get(upstream.name) is slot:
            del self._slots[upstream.name]
        slot.stop.set()
        slot.publish(None)

    async def _watch(self, session: UpstreamSession, slot: _Slot) -> Upstream | None:
        """Wait until the session must end; return the configuration to reopen with (None:
        the upstream was removed, or the supervisor stops)."""
        pace = WATCH  # seconds until the next probe, doubled while nothing changes
        probe_at = time.monotonic() + pace
        last: list[dict[str, Any]] | None = None
        while True:
            with anyio.move_on_after(WATCH):
                await _first(slot.stop, session.dead)
            if slot.stop.is_set():
                return None
            if session.broken:
                return await self._current(session.upstream.name)
            if time.monotonic() >= probe_at:
                try:
                    with anyio.fail_after(PROBE_TIMEOUT):
                        listing = await session.list_tools()
                except Exception:
                    log.warning("upstream %s stopped answering", session.upstream.name)
                    return await self._current(session.upstream.name)
                capped = len(listing) > self._tether.settings.gateway_max_items
                pace = min(pace * 2, PROBE_MAX) if capped or listing == last else WATCH
                probe_at, last = time.monotonic() + pace, listing
            current = await self._current(session.upstream.name)
            if current != session.upstream:
                return current

    async def _current(self, name: str) -> Upstream | None:
        """The upstream's configuration in the store now (None once removed)."""
        try:
            return await to_thread.run_sync(self._tether.upstreams.get, name)
        except NotFound:
            return None


async def _first(*events: anyio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


def _describe(exc: BaseException) -> str:
    """A failure's kind, and the first line of its message (an OS error naming a missing
    program, say), at most 200 characters; of a group, its first failure. Every secret
    in play is taken out before it is cut (:func:`tether.redact.describe`)."""
    return redact.describe(exc)
