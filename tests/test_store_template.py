"""The store fixtures' clones (tests/helpers/stores.py) equal a freshly migrated store:
tables, columns, indexes, constraints, sequences, seed rows and ``alembic_version``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import postgres_base_url
from helpers.stores import PostgresTemplate, SqliteTemplate

from tether.store import Store

PG_CATALOG = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, udt_name,
               character_maximum_length, numeric_precision, is_nullable, column_default,
               is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = current_schema()
        ORDER BY table_name, ordinal_position""",
    "constraints": """
        SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        WHERE t.relnamespace = current_schema()::regnamespace
        ORDER BY t.relname, c.conname""",
    "indexes": """
        SELECT tablename, indexname, replace(indexdef, current_schema() || '.', '')
        FROM pg_indexes WHERE schemaname = current_schema() ORDER BY tablename, indexname""",
    "sequences": """
        SELECT sequencename, data_type, start_value, increment_by, last_value
        FROM pg_sequences WHERE schemaname = current_schema() ORDER BY sequencename""",
    "triggers": """
        SELECT event_object_table, trigger_name, event_manipulation, action_statement
        FROM information_schema.triggers WHERE trigger_schema = current_schema()
        ORDER BY 1, 2, 3""",
    "functions": """
        SELECT p.proname, replace(pg_get_functiondef(p.oid), current_schema() || '.', '')
        FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace ORDER BY 1""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()
        ORDER BY viewname""",
}


def _rows(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (seed rows and alembic_version), in a stable order."""
    tables = sa.inspect(conn).get_table_names()
    assert "alembic_version" in tables
    return {
        name: sorted(
            (tuple(row) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))), key=repr
        )
        for name in sorted(tables)
    }


def _postgres(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            shape: dict[str, Any] = {
                name: [tuple(row) for row in conn.execute(sa.text(sql))]
                for name, sql in PG_CATALOG.items()
            }
            shape["rows"] = _rows(conn)
            return shape
    finally:
        engine.dispose()


def _sqlite(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            schema = conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).all()
            return {
                "schema": [tuple(row) for row in schema],
                "journal": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                "rows": _rows(conn),
            }
    finally:
        engine.dispose()


def _migrated_for_real(url: str) -> None:
    store = Store.open(url)
    try:
        assert store.current_revision() is None
        store.migrate()
    finally:
        store.dispose()


def test_a_postgresql_clone_equals_a_freshly_migrated_schema(
    postgres_template: PostgresTemplate,
) -> None:
    fresh = PostgresTemplate(postgres_base_url())  # its own recording, for a fair compare
    try:
        with (
            postgres_template.schema() as cloned,
            fresh.schema(migrated=False) as migrated,
        ):
            _migrated_for_real(migrated)
            want = _postgres(migrated)
            got = _postgres(cloned)
    finally:
        fresh.dispose()
    assert want["columns"] and want["constraints"] and want["indexes"]
    assert want["rows"]["alembic_version"]
    assert got == want


def test_a_sqlite_clone_equals_a_freshly_migrated_file(
    sqlite_template: SqliteTemplate, tmp_path: Path
) -> None:
    migrated = f"sqlite:///{tmp_path / 'fresh.db'}"
    _migrated_for_real(migrated)
    want = _sqlite(migrated)
    got = _sqlite(sqlite_template.clone(tmp_path / "clone.db"))
    assert want["schema"] and want["rows"]["alembic_version"]
    assert got == want


@pytest.mark.unmigrated
def test_an_unmigrated_store_is_empty(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        assert store.current_revision() is None
        assert sa.inspect(store.engine).get_table_names() == []
    finally:
        store.dispose()


def test_a_store_comes_migrated_and_tether_init_does_the_rest(make_settings) -> None:
    from tether import Tether

    settings = make_settings()
    store = Store.open(settings.database_url)
    try:
        assert store.current_revision() == store.head_revision()
    finally:
        store.dispose()
    tether, result = Tether.init(settings)
    try:
        assert result.created and result.admin_token
        assert tether.authenticate(result.admin_token).is_admin
        assert tether.keys.current()[0]
        assert tether.checkpoints.make().size == tether.events.size()
    finally:
        tether.close()
