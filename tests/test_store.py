"""The store: schema only through migrations, WAL on SQLite, init and its admin token."""

from __future__ import annotations

import stat

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tether import Settings, StoreUnavailable, Tether
from tether.store import Store, metadata

pytestmark = pytest.mark.unmigrated  # these test migrating and initialising a store for real


def test_migrations_build_exactly_the_declared_tables(db_url: str) -> None:
    store = Store.open(db_url)
    assert store.current_revision() is None
    assert store.migrate() == store.head_revision()
    assert store.migrate() == store.head_revision()  # idempotent
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    store.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.dispose()


def test_open_refuses_a_store_that_was_never_initialised(make_settings) -> None:
    with pytest.raises(StoreUnavailable, match="tether init"):
        Tether.open(make_settings())


def test_init_creates_home_token_and_is_idempotent(make_settings, home) -> None:
    settings = make_settings()
    tether, first = Tether.init(settings)
    assert first.created and first.admin_token and first.admin_token.startswith("tta_")
    token_file = settings.admin_token_file
    assert token_file.read_text().strip() == first.admin_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.keys_dir.stat().st_mode) == 0o700
    # The token is stored only as a hash.
    with tether.store.read() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                assert first.admin_token not in repr(tuple(row))
    tether.close()
    again, second = Tether.init(settings)
    assert not second.created and second.admin_token is None
    assert token_file.read_text().strip() == first.admin_token
    assert again.authenticate(first.admin_token).is_admin
    again.close()


def test_unreachable_postgresql_is_a_clear_store_error(tmp_path) -> None:
    settings = Settings.load(tmp_path, db_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailable, match="unavailable"):
        Tether.open(settings)


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://x/y", "unsupported database"), ("not a url", "invalid database URL")],
)
def test_bad_database_urls(tmp_path, url, message) -> None:
    from tether import InvalidRequest

    with pytest.raises(InvalidRequest, match=message):
        Tether.open(Settings.load(tmp_path, db_url=url))


def test_config_file_is_checked(tmp_path) -> None:
    from tether import InvalidRequest

    (tmp_path / "tether.toml").write_text('trust_domain = "acme.example"\nunowned_grace = "2d"\n')
    settings = Settings.load(tmp_path)
    assert settings.trust_domain == "acme.example"
    assert settings.unowned_grace.days == 2
    (tmp_path / "tether.toml").write_text('unowned_grace = "banana"\n')
    with pytest.raises(InvalidRequest, match="unowned_grace"):
        Settings.load(tmp_path)
    (tmp_path / "tether.toml").write_text('trust_domian = "typo"\n')
    with pytest.raises(InvalidRequest, match="trust_domian"):
        Settings.load(tmp_path)
    (tmp_path / "tether.toml").write_text("not = [toml")
    with pytest.raises(InvalidRequest, match="cannot read"):
        Settings.load(tmp_path)
    (tmp_path / "tether.toml").write_text('agent_lifetime_default = "400d"\n')
    with pytest.raises(InvalidRequest, match="agent_lifetime_max"):
        Settings.load(tmp_path)
