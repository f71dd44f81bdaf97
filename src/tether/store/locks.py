"""Named locks that one process per store holds at a time.

On PostgreSQL a lock is a session-level advisory lock taken on a connection of its own
(autocommit, so holding it holds no transaction, row or table lock): when its holder dies,
its connection goes and the lock with it, and the next process to try takes it. On SQLite
it is an OS file lock (``flock``) on a file beside the database, released by the kernel
when its holder's process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, text

from tether.store.engine import Store

__all__ = ["StoreLock"]

log = logging.getLogger("tether.store")


class StoreLock:
    """The lock ``name`` of ``store``: :meth:`hold` takes it if it is free (never waits),
    :meth:`release` gives it back. Several threads of one process may share one."""

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name
        self._mutex = threading.Lock()
        self._conn: Connection | None = None  # PostgreSQL: the session holding the lock
        self._fd: int | None = None  # SQLite: the open lock file
        self._path = _lock_file(store, name)
        self._key: int | None = None

    @property
    def key(self) -> int:
        """The PostgreSQL advisory lock key (a signed 64-bit integer) of this name in this
        store's schema: advisory locks are per database, and several stores may share a
        database in different schemas without taking each other's jobs."""
        if self._key is None:
            with self._store.engine.connect() as conn:
                self._key = self._key_on(conn)
        return self._key

    def _key_on(self, conn: Connection) -> int:
        if self._key is None:
            schema = conn.execute(text("SELECT current_schema()")).scalar() or ""
            digest = hashlib.sha256(f"tether-{schema}-{self.name}".encode()).digest()
            self._key = int.from_bytes(digest[:8], "big", signed=True)
        return self._key

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def hold(self) -> bool:
        """Take the lock if no one holds it, or keep it if this holds it still; False when
        another process holds it (or the store cannot be reached: fail closed)."""
        with self._mutex:
            try:
                if self._store.dialect == "postgresql":
                    return self._hold_advisory()
                return self._hold_file()
            except Exception as exc:  # no store, no lock: the job waits for its next try
                log.warning("could not take the lock %s: %s", self.name, exc)
                self._drop()
                return False

    def release(self) -> None:
        with self._mutex:
            conn = self._conn
            if conn is not None:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                except Exception:  # never pool a connection that may still hold the lock
                    conn.invalidate()
            self._drop()

    def wait(self, timeout: float, poll: float = 0.05) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds for its holder to let go."""
        deadline = time.monotonic() + timeout
        while not self.hold():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    @contextlib.contextmanager
    def holding(self) -> Iterator[bool]:
        """Whether the lock was taken; it is released on leaving if it was."""
        got = self.hold()
        try:
            yield got
        finally:
            if got:
                self.release()

    def _hold_advisory(self) -> bool:
        if self._conn is not None:
            try:  # the session still lives, so it still holds the lock
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("lost the connection holding the lock %s", self.name)
                self._conn.invalidate()
                self._drop()
        opened = self._store.engine.connect()
        try:
            conn = opened.execution_options(isolation_level="AUTOCOMMIT")
            key = self._key_on(conn)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            if got.scalar():
                self._conn = conn
                return True
        except BaseException:
            opened.invalidate()
            opened.close()
            raise
        opened.close()
        return False

    def _hold_file(self) -> bool:
        if self._fd is not None:
            return True
        if self._path is None:  # an in-memory database: only this process can reach it
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases its flock


def _lock_file(store: Store, name: str) -> Path | None:
    """SQLite: ``<database>.<name>.lock`` beside the database file."""
    if store.dialect == "postgresql":
        return None
    database = store.engine.url.database
    if not database or database == ":memory:":
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return Path(database).with_name(f"{Path(database).name}.{safe}.lock")
