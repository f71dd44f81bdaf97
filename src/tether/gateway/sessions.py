"""The open MCP sessions of the HTTP face, by agent: closed when an agent in their chain is
killed (at once, in this process) or when their token stops verifying (a kill, a
revocation or a suspension anywhere: checked whenever the state epoch moves).

A session belongs to the token chain that opened it, on the server it was opened on, in
the process that opened it: a request of another chain (another agent, or the same agent
for another person) naming its ID is answered as for an unknown session (404 "Session
not found", as MCP says), so no one can use, end or re-bind another's session, and a
kill always finds it. So is a request naming a session this process does not hold (it
ended, or another worker serving the same store opened it): the client starts a new one.

A session's every request is verified anyway; closing it also ends the client's session
(its next request is answered 404, so it must start over, with a token that verifies).

Sessions of the lean path (:mod:`tether.gateway.lean`) are held here too, bound and
closed the same way: they have no SDK transport, only their ID and binding, and end on
DELETE, on a kill, when their token stops verifying, or after :data:`IDLE_AFTER` seconds
without a request (as the SDK's own sessions do). At most :data:`MAX_OPEN` are open, and
at most :data:`MAX_PER_CHAIN` of them for one chain.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio import to_thread

from tether.core import Tether
from tether.errors import TetherError

__all__ = ["Sessions"]

log = logging.getLogger("tether.gateway")

SESSION_HEADER = b"mcp-session-id"
CHECK_EVERY = 0.5  # seconds between epoch checks of the open sessions
IDLE_AFTER = 30 * 60  # seconds a lean session may go without a request (the SDK's default)
MAX_OPEN = 10_000  # lean sessions open at once (the SDK's default for its own)
MAX_PER_CHAIN = 64  # of them, opened by one chain (one agent cannot take every slot)


@dataclass(frozen=True, slots=True)
class _Open:
    chain: tuple[str, ...]
    bearer: str
    resource: str

    @property
    def agents(self) -> frozenset[str]:
        return frozenset(c for c in self.chain if not c.startswith("user:"))


class Sessions:
    """Which agents each open session acts for; closes the SDK's sessions through its
    manager, and holds (and closes) the lean path's itself."""

    def __init__(
        self, tether: Tether, manager: Any, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tether = tether
        self._manager = manager  # the SDK's StreamableHTTPSessionManager
        self._open: dict[str, _Open] = {}
        self._lean: dict[str, tuple[float, str]] = {}  # lean session -> last used, version
        self._clock = clock
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def open_lean(
        self, chain: Sequence[str], bearer: str, resource: str, *, version: str
    ) -> str | None:
        """A new lean session bound to ``chain`` and ``resource``, speaking protocol
        ``version`` (its ID: 128 random bits), or None when :data:`MAX_OPEN` are open,
        or :data:`MAX_PER_CHAIN` of them were opened by ``chain``."""
        key = tuple(chain)
        with self._lock:
            if len(self._lean) >= MAX_OPEN:
                return None
            held = (self._open.get(sid) for sid in self._lean)
            if sum(1 for s in held if s is not None and s.chain == key) >= MAX_PER_CHAIN:
                return None
            sid = secrets.token_hex(16)
            self._lean[sid] = (self._clock(), version)
            self._open[sid] = _Open(key, bearer, resource)
        return sid

    def lean(self, session_id: str) -> str | None:
        """The protocol version of lean session ``session_id`` (marked used now), or None
        when it is not an open lean session."""
        with self._lock:
            known = self._lean.get(session_id)
            if known is None:
                return None
            self._lean[session_id] = (self._clock(), known[1])
            return known[1]

    def end(self, session_id: str) -> None:
        """End lean session ``session_id`` (its owner's DELETE)."""
        with self._lock:
            self._lean.pop(session_id, None)
            self._open.pop(session_id, None)

    def seen(self, session_id: str, chain: Sequence[str], bearer: str, resource: str) -> None:
        """A request of ``session_id`` was made with ``bearer`` (its chain verified): a new
        session is bound to that chain and resource; a known one keeps its binding and
        takes the newer bearer (a renewed token of the same chain)."""
        with self._lock:
            known = self._open.get(session_id)
            if known is None or (known.chain, known.resource) == (tuple(chain), resource):
                self._open[session_id] = _Open(tuple(chain), bearer, resource)

    def holds(self, session_id: str) -> bool:
        """Whether this process holds the session: an ID it does not hold (one that ended,
        or one that another worker serving the same store opened) is unknown here."""
        return session_id in self._lean or session_id in self._manager._server_instances

    def admits(self, session_id: str, chain: Sequence[str], resource: str) -> bool:
        """Whether a request of ``chain`` for ``resource`` may name ``session_id``, a
        session this process holds: only the chain that opened it, on its server (one
        held without a binding yet is refused, failing closed)."""
        with self._lock:
            known = self._open.get(session_id)
        if known is None:
            return False
        return (known.chain, known.resource) == (tuple(chain), resource)

    async def watching(self) -> None:
        """Run for the face's lifetime: register with the kill switch, and close sessions
        whose token no longer verifies whenever the epoch moves."""
        self._loop = asyncio.get_running_loop()
        unregister = self._tether.killswitch.on_kill(self.close_agents)
        seen = -1
        try:
            while True:
                await anyio.sleep(CHECK_EVERY)
                try:
                    epoch = await to_thread.run_sync(self._tether.epoch.current)
                except TetherError:
                    continue  # the store is away: every request is refused meanwhile anyway
                self._reap()
                if epoch != seen:
                    seen = epoch
                    await self._close(await to_thread.run_sync(self._invalid))
        finally:
            unregister()
            self._loop = None

    def close_agents(self, agent_ids: Collection[str]) -> int:
        """Close every session acting for one of ``agent_ids`` (the kill switch calls this
        from its own thread); returns how many."""
        killed = set(agent_ids)
        with self._lock:
            doomed = [sid for sid, s in self._open.items() if s.agents & killed]
        loop = self._loop
        if not doomed or loop is None:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._close(doomed), loop)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:  # wait, unless that would block the loop itself
            return future.result(timeout=10)
        return len(doomed)

    def _reap(self) -> int:
        """End the lean sessions idle for :data:`IDLE_AFTER` seconds; returns how many."""
        with self._lock:
            idle = self._clock() - IDLE_AFTER
            gone = [sid for sid, (used, _) in self._lean.items() if used < idle]
            for sid in gone:
                self._lean.pop(sid)
                self._open.pop(sid, None)
        for sid in gone:
            log.info("ended MCP session %s: idle", sid[:8])
        return len(gone)

    def _invalid(self) -> list[str]:
        with self._lock:
            current = dict(self._open)
            known = set(self._lean)
        known |= set(self._manager._server_instances)  # sessions the SDK still holds
        doomed = []
        for sid, session in current.items():
            if sid not in known:
                with self._lock:
                    self._open.pop(sid, None)  # ended by the client or timed out
                continue
            try:
                self._tether.tokens.verify(session.bearer, session.resource)
            except TetherError:
                doomed.append(sid)
        return doomed

    async def _close(self, session_ids: list[str]) -> int:
        closed = 0
        for sid in session_ids:
            with self._lock:
                self._open.pop(sid, None)
                lean = self._lean.pop(sid, None) is not None
            if lean:
                closed += 1
                log.info("closed MCP session %s: its token no longer holds", sid[:8])
                continue
            transport = self._manager._server_instances.get(sid)
            if transport is not None and not transport.is_terminated:
                await transport.terminate()
                closed += 1
                log.info("closed MCP session %s: its token no longer holds", sid[:8])
        return closed
