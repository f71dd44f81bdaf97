"""The state epoch: one number that moves whenever agents, grants, policies or tokens
change (a kill, a revocation, a suspension ...).

Every change bumps it in the same transaction. A decision point or token verifier trusts
its compiled state while the epoch is unchanged; it re-reads the number from the store at
most every ``staleness`` seconds (the bound: if the store cannot be read, the read fails
and so does whatever needed it: tokens are refused, decisions denied), and at once after a
change committed in this process. On PostgreSQL every bump also sends a ``NOTIFY`` that an
:class:`EpochListener` in every other process turns into an immediate re-read, so a kill
reaches them in milliseconds rather than within the bound.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

import psycopg
from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tether.store import Store, epoch_acks, state_epoch

__all__ = ["CHANNEL", "EpochListener", "StateEpoch"]

CHANNEL = "tether_epoch"  # the payload names the schema, so stores sharing a database differ

log = logging.getLogger("tether.epoch")


class StateEpoch:
    def __init__(self, store: Store, staleness: float) -> None:
        self._store = store
        self._staleness = staleness
        self._value = 0
        self._checked = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def staleness(self) -> float:
        """The bound, in seconds: no cached epoch is trusted for longer."""
        return self._staleness

    def bump(self, conn: Connection) -> None:
        """Move the epoch inside the caller's write transaction."""
        conn.execute(
            update(state_epoch).where(state_epoch.c.id == 1).values(value=state_epoch.c.value + 1)
        )
        if conn.dialect.name == "postgresql":  # delivered to listeners when this commits
            conn.exec_driver_sql(f"SELECT pg_notify('{CHANNEL}', current_schema())")
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


class EpochListener:
    """A thread holding ``LISTEN tether_epoch`` on its own PostgreSQL connection: every
    change another process commits invalidates this process's epoch at once, and the
    process then confirms the epoch it now holds (``epoch_acks``, also every
    ``HEARTBEAT`` seconds), so that a kill can wait until every live process has seen it.
    When the connection is lost, it reconnects (invalidating on return, for what it may
    have missed); meanwhile the staleness bound still holds, since
    :meth:`StateEpoch.current` reads the store itself."""

    HEARTBEAT = 0.5

    def __init__(self, store: Store, epoch: StateEpoch) -> None:
        if store.dialect != "postgresql":
            raise ValueError("LISTEN/NOTIFY needs PostgreSQL")
        self._store = store
        self._url = store.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._epoch = epoch
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self.listening = threading.Event()
        self.notified = 0  # notifications that invalidated the epoch (for tests and metrics)
        self._thread = threading.Thread(target=self._run, name="tether-epoch", daemon=True)

    def start(self) -> EpochListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:  # no longer a process a kill must wait for
            with self._store.write() as conn:
                conn.execute(delete(epoch_acks).where(epoch_acks.c.process == self.process))
        except Exception:  # its heartbeat goes stale instead
            log.warning("could not withdraw this process's epoch acknowledgement")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    schema = conn.execute("SELECT current_schema()").fetchone()
                    mine = str(schema[0]) if schema else ""
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._epoch.invalidate()  # whatever happened while not listening
                    self._confirm()
                    self.listening.set()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=self.HEARTBEAT):
                            if notice.payload == mine:
                                self._epoch.invalidate()
                                self.notified += 1
                                self._confirm()
                        self._confirm()
            except Exception as exc:  # the bound still holds: reconnect after a pause
                self.listening.clear()
                log.warning("epoch listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(1.0)
        self.listening.clear()

    def _confirm(self) -> None:
        """Read the epoch now and record that this process holds it."""
        value = self._epoch.current()
        with self._store.write() as conn:  # the database's clock: every process agrees on it
            conn.execute(
                pg_insert(epoch_acks)
                .values(process=self.process, epoch=value, seen_at=func.now())
                .on_conflict_do_update(
                    index_elements=[epoch_acks.c.process],
                    set_={"epoch": value, "seen_at": func.now()},
                )
            )
