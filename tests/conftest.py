"""Shared fixtures: every store test runs on SQLite and on a fresh PostgreSQL schema.

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (default: the local server). When it is
unreachable the PostgreSQL runs skip with the reason, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tether import Caller, Settings, Tether
from tether.agent_keys import generate_key_pair
from tether.registry import AgentSpec

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN = Caller.admin()


def postgres_base_url() -> str:
    return os.environ.get("TETHER_TEST_POSTGRES_URL", PG_DEFAULT)


def _postgres_or_skip() -> str:
    url = postgres_base_url()
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        reason = f"PostgreSQL unreachable at {url}: {exc.__class__.__name__}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL runs are mandatory)")
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test; dropped afterwards."""
    base = _postgres_or_skip()
    schema = f"tether_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tether.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(home: Path, db_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings.load(home, db_url=db_url, **overrides)

    return make


@pytest.fixture
def tether(make_settings: Callable[..., Settings], clock: Clock) -> Iterator[Tether]:
    """An initialised Tether on the parametrised store, with a hand-moved clock."""
    settings = make_settings(unowned_grace="60s")
    first, _ = Tether.init(settings)
    first.close()
    with Tether.open(settings, clock=clock) as opened:
        yield opened


def spec(name: str, owner: str | None = "alice@example.com", **kw: Any) -> AgentSpec:
    return AgentSpec(name=name, owner=owner, public_key=generate_key_pair().public_key, **kw)
