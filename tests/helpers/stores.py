"""Migrated stores for tests: migrate once per backend per session, clone per test.

A full Alembic upgrade costs a tenth of a second on SQLite and half a second on
PostgreSQL; thousands of tests each made one. Instead each test process migrates one
template per backend and every test gets a copy:

- SQLite: the template is a migrated database file; a test gets a byte copy of it.
- PostgreSQL: the template is a schema migrated by Alembic while a
  ``before_cursor_execute`` listener records every statement it sent (with its exact
  parameters); a test gets a fresh schema in which the recording is replayed, in one
  transaction, with ``search_path`` set to it. No statement may name the template's own
  schema (checked), so the replay builds the same tables, indexes, constraints, seed rows
  and ``alembic_version`` -- ``tests/test_store_template.py`` compares a clone with a
  freshly migrated schema.

``Tether.init`` on a clone finds the schema at head and does the rest as on any store
(signing key, audit key, admin token). Tests that test migration itself ask for an empty
store with ``@pytest.mark.unmigrated``.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tether.store import Store

__all__ = ["PostgresTemplate", "SqliteTemplate", "schema_url"]


def schema_url(base: str, schema: str) -> str:
    """``base`` with every connection's ``search_path`` set to ``schema``."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


class SqliteTemplate:
    """A migrated SQLite file; :meth:`clone` copies it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "template.db"
        store = Store.open(f"sqlite:///{self.path}")
        try:
            store.migrate()
        finally:
            store.dispose()
        with sqlite3.connect(self.path) as conn:  # fold any WAL left behind into the file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def clone(self, target: Path) -> str:
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"


@dataclass(frozen=True)
class _Statement:
    sql: str
    parameters: Any
    many: bool


@dataclass
class PostgresTemplate:
    """The statements Alembic sends to migrate an empty schema, replayable elsewhere."""

    base: str
    statements: list[_Statement] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._admin = sa.create_engine(self.base, poolclass=sa.pool.NullPool)
        schema = f"tether_template_{secrets.token_hex(6)}"
        with self._admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            self._record(schema)
        finally:
            with self._admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')

    def _record(self, schema: str) -> None:
        store = Store.open(schema_url(self.base, schema))

        def record(
            _conn: Any, _cursor: Any, sql: str, parameters: Any, _ctx: Any, many: bool
        ) -> None:
            if "pg_advisory" in sql:  # Store.migrate's lock, not part of the schema
                return
            if schema in sql or schema in repr(parameters):
                raise AssertionError(f"a migration statement names its schema: {sql}")
            self.statements.append(_Statement(sql, parameters, many))

        sa.event.listen(store.engine, "before_cursor_execute", record)
        try:
            store.migrate()
        finally:
            store.dispose()
        assert self.statements, "Alembic sent nothing"

    def fill(self, schema: str) -> None:
        """Create ``schema`` and replay the migration into it, in one transaction."""
        raw = self._admin.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(f'CREATE SCHEMA "{schema}"')
            cursor.execute("SELECT set_config('search_path', %s, true)", (f'"{schema}"',))
            for statement in self.statements:
                if statement.many:
                    cursor.executemany(statement.sql, statement.parameters)
                else:
                    cursor.execute(statement.sql, statement.parameters)
            cursor.close()
            raw.commit()
        finally:
            raw.close()

    @contextmanager
    def schema(self, *, migrated: bool = True) -> Iterator[str]:
        """A fresh schema (migrated, or empty); yields its URL, drops it afterwards."""
        name = f"tether_test_{secrets.token_hex(6)}"
        if migrated:
            self.fill(name)
        else:
            with self._admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        try:
            yield schema_url(self.base, name)
        finally:
            with self._admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')

    def dispose(self) -> None:
        self._admin.dispose()
