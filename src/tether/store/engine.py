"""The store: one SQLAlchemy engine, its transactions, and schema migrations."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
)

from tether.errors import Conflict, InvalidRequest, StoreUnavailable

__all__ = ["Store"]

log = logging.getLogger("tether.store")

_MIGRATIONS = Path(__file__).parent / "migrations"
_WRITE = "tether_write"
_TX = "tether_transaction"
# Serialises migrations of several processes sharing one PostgreSQL database.
_MIGRATION_LOCK = 0x7E7E_0001


class _Transaction:
    __slots__ = ("after", "before", "state")

    def __init__(self) -> None:
        self.before: list[Callable[[], None]] = []
        self.after: list[Callable[[], None]] = []
        self.state: dict[str, Any] = {}


class Store:
    """A SQLite file (WAL mode) or a PostgreSQL database behind one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str) -> Store:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise InvalidRequest(f"invalid database URL: {exc}") from exc
        if parsed.get_backend_name() == "sqlite":
            return cls(_sqlite_engine(url))
        if parsed.get_backend_name() != "postgresql":
            raise InvalidRequest(
                f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or "
                "postgresql+psycopg://"
            )
        try:
            engine = create_engine(
                url,
                pool_size=10,
                max_overflow=20,
                pool_recycle=1800,
                # the audit head's row lock orders appenders; REPEATABLE READ or
                # SERIALIZABLE defaults would turn waits into serialisation failures
                isolation_level="READ COMMITTED",
            )
        except (ArgumentError, NoSuchModuleError) as exc:
            raise InvalidRequest(f"invalid database URL: {exc}") from exc
        return cls(engine)

    def describe(self) -> str:
        """The URL with any password hidden, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; with ``snapshot`` every statement in it sees one snapshot
        (REPEATABLE READ on PostgreSQL; a SQLite read transaction always does)."""
        with self._translate(), self.engine.connect() as opened:
            conn = opened
            if snapshot and self.dialect == "postgresql":
                conn = opened.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE).

        Callbacks registered with :meth:`before_commit` run last inside the transaction
        (the audit log writes its events there); those registered with
        :meth:`after_commit` run once the commit succeeded. All of it, and whatever
        :meth:`state` holds, belongs to this one transaction: it is dropped with it,
        committed or not, never left on the pooled connection."""
        tx = _Transaction()
        with self._translate(), self.engine.connect() as conn:
            conn.info[_TX] = tx
            try:
                with conn.execution_options(**{_WRITE: True}).begin():
                    yield conn
                    while tx.before:
                        tx.before.pop(0)()
            finally:
                conn.info.pop(_TX, None)
        for callback in tx.after:
            try:
                callback()
            except Exception:  # committed is committed: a listener's failure is only logged
                log.exception("after-commit callback failed")

    @staticmethod
    def _tx(conn: Connection) -> _Transaction:
        tx = conn.info.get(_TX)
        if not isinstance(tx, _Transaction):
            raise RuntimeError("not inside a Store.write() transaction")
        return tx

    @classmethod
    def state(cls, conn: Connection) -> dict[str, Any]:
        """Scratch space of the current write transaction of ``conn``."""
        return cls._tx(conn).state

    @classmethod
    def before_commit(cls, conn: Connection, callback: Callable[[], None]) -> None:
        """Run ``callback`` as the last step inside the write transaction of ``conn``."""
        cls._tx(conn).before.append(callback)

    @classmethod
    def after_commit(cls, conn: Connection, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the write transaction of ``conn`` commits (never on rollback)."""
        cls._tx(conn).after.append(callback)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError as exc:
            raise Conflict("conflicting write: the object changed or exists already") from exc
        except DataError as exc:
            raise InvalidRequest(f"the store refused a value: {_first_line(exc.orig)}") from exc
        except DBAPIError as exc:
            log.error("store error on %s: %s", self.describe(), exc.orig)
            raise StoreUnavailable("the store is unavailable; see the server log") from exc

    def migrate(self) -> str:
        """Bring the schema to the newest migration; returns that revision."""
        config = _alembic_config()
        with self._translate(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return self.head_revision()

    def head_revision(self) -> str:
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        assert head is not None
        return head

    def current_revision(self) -> str | None:
        with self.read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error is not None and str(error).strip() else "?"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
