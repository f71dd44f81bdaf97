"""The egress proxy's open connections, by the token chain they act for: closed when an
agent in the chain is killed (at once, in this process: the kill switch calls
:meth:`Connections.close_agents`) or when their token stops verifying (a kill, a
suspension or a revocation anywhere: checked whenever the state epoch moves, by
:meth:`Connections.watching`).

A connection is anything that would otherwise outlive the decision that let it in: an
exchange in flight (the engine registers each one; closing it cancels the exchange, so
nothing more is forwarded and the agent is answered 403 ``agent_killed``), or a face's
long-lived connection (a forward-proxy tunnel) registered with :meth:`Connections.open`.
Closing one calls the closer it was registered with, once, on the event loop; a closer
that fails is logged (the connection's next request is refused anyway: its token no
longer verifies).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import anyio
from anyio import to_thread

from tether.core import Tether
from tether.errors import TetherError
from tether.tokens import VerifiedToken

__all__ = ["CHECK_EVERY", "Authenticated", "Closer", "Connection", "Connections"]

log = logging.getLogger("tether.egress")

CHECK_EVERY = 0.5  # seconds between looks at the state epoch
Closer = Callable[[], Awaitable[None]] | Callable[[], None]


@dataclass(frozen=True, slots=True)
class Authenticated(VerifiedToken):
    """A verified token with the bearer it was verified from (never shown: ``repr`` leaves
    it out), so that a connection it opened can be verified again when the epoch moves."""

    bearer: str = field(default="", repr=False)


class Connection:
    """One open connection of ``chain``; :meth:`close` is the face's own end of it (it
    unregisters the connection, without calling its closer)."""

    def __init__(self, owner: Connections, key: int, token: Authenticated, closer: Closer) -> None:
        self._owner = owner
        self._key = key
        self.token = token
        self.closer = closer
        self.closed_by_tether = False  # set when Tether closed it (a kill, a dead token)

    @property
    def agents(self) -> frozenset[str]:
        return frozenset(c for c in self.token.chain if not c.startswith("user:"))

    def close(self) -> None:
        self._owner.forget(self._key)


class Connections:
    """The open connections of one egress proxy (see the module docstring)."""

    def __init__(self, tether: Tether) -> None:
        self._tether = tether
        self._open: dict[int, Connection] = {}
        self._keys = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, token: VerifiedToken, close: Closer) -> Connection:
        """Register a connection of ``token`` (one :meth:`tether.egress.engine.EgressProxy.
        authenticate` returned); ``close`` is called, once, when Tether closes it."""
        if not isinstance(token, Authenticated):
            raise TypeError("a connection is opened with a token EgressProxy.authenticate gave")
        with self._lock:
            key = next(self._keys)
            connection = Connection(self, key, token, close)
            self._open[key] = connection
        return connection

    def forget(self, key: int) -> None:
        with self._lock:
            self._open.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    async def watching(self) -> None:
        """Run for the proxy's lifetime: register with the kill switch, and close the
        connections whose token no longer verifies whenever the epoch moves."""
        self._loop = asyncio.get_running_loop()
        unregister = self._tether.killswitch.on_kill(self.close_agents)
        seen = -1
        try:
            while True:
                await anyio.sleep(CHECK_EVERY)
                try:
                    epoch = await to_thread.run_sync(self._tether.epoch.current)
                except TetherError:
                    continue  # the store is away: every new request is refused meanwhile
                if epoch != seen:
                    seen = epoch
                    doomed = await to_thread.run_sync(self._invalid)
                    await self._close(doomed, "its token no longer verifies")
        finally:
            unregister()
            self._loop = None

    def close_agents(self, agent_ids: Collection[str]) -> int:
        """Close every connection acting for one of ``agent_ids`` (the kill switch calls
        this from its own thread, and waits); returns how many."""
        killed = set(agent_ids)
        with self._lock:
            doomed = [c for c in self._open.values() if c.agents & killed]
        loop = self._loop
        if not doomed or loop is None:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._close(doomed, "its agent was killed"), loop)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:  # wait, unless that would block the loop itself
            return future.result(timeout=10)
        return len(doomed)

    def _invalid(self) -> list[Connection]:
        with self._lock:
            current = list(self._open.values())
        doomed = []
        for connection in current:
            try:
                self._tether.tokens.verify(connection.token.bearer, None)
            except TetherError:
                doomed.append(connection)
        return doomed

    async def _close(self, doomed: list[Connection], why: str) -> int:
        closed = 0
        for connection in doomed:
            with self._lock:
                if self._open.pop(connection._key, None) is None:
                    continue  # ended meanwhile, or closed already
            connection.closed_by_tether = True
            try:
                done = connection.closer()
                if inspect.isawaitable(done):
                    await done
            except Exception as exc:  # its next request is refused anyway
                log.warning("egress connection not closed cleanly: %s", type(exc).__name__)
            closed += 1
            log.info("closed an egress connection of %s: %s", connection.token.client_id, why)
        return closed
