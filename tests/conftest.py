"""Shared fixtures: every store test runs on SQLite and on a fresh PostgreSQL schema.

Each store comes migrated, cloned from a template migrated once per test process
(tests/helpers/stores.py); a test marked ``unmigrated`` gets an empty one instead.

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (default: the local server). When it is
unreachable the PostgreSQL runs skip with the reason, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.stores import PostgresTemplate, SqliteTemplate

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


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresTemplate]:
    """The migration, recorded once per test process (see tests/helpers/stores.py)."""
    template = PostgresTemplate(_postgres_or_skip())
    yield template
    template.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    """A migrated SQLite file, made once per test process."""
    return SqliteTemplate(tmp_path_factory.mktemp("template"))


def _migrated(request: pytest.FixtureRequest) -> bool:
    """Stores come migrated, except for tests marked ``unmigrated`` (they test migration)."""
    return request.node.get_closest_marker("unmigrated") is None


@pytest.fixture
def postgres_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, migrated (or empty if the test is marked
    ``unmigrated``); dropped afterwards."""
    template: PostgresTemplate = request.getfixturevalue("postgres_template")
    with template.schema(migrated=_migrated(request)) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each backend: migrated, or empty for tests marked ``unmigrated``."""
    if request.param == "sqlite":
        target = tmp_path / "tether.db"
        if not _migrated(request):
            return f"sqlite:///{target}"
        template: SqliteTemplate = request.getfixturevalue("sqlite_template")
        return template.clone(target)
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


class Clock:
    """A clock the test moves by hand: a wall clock (call it) and a monotonic one
    (:meth:`monotonic`, seconds moved so far), both moved by :meth:`advance`."""

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self.now = self.start

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - self.start).total_seconds()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cli_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock of every Tether opened in this test (so of the in-process CLI), starting
    now: a test moves it past an expiry instead of sleeping. A test seam, not a setting:
    it replaces ``Tether.open`` for this test only, and the CLI stays as users run it."""
    moved = Clock(datetime.now(UTC))
    real_open = Tether.open

    def open_on_clock(settings: Settings, *, migrate: bool = False, **_: Any) -> Tether:
        return real_open(settings, migrate=migrate, clock=moved)

    monkeypatch.setattr(Tether, "open", staticmethod(open_on_clock))
    return moved


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


class Cli:
    """The CLI in this process: ``cli(*argv)`` gives (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        from tether.cli.main import run

        self.capsys.readouterr()
        code = run(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str, expect: int = 0) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == expect, (code, out, err)
        assert "Traceback" not in out + err
        return json.loads(out)  # exactly one JSON document, nothing else


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> Path:
    """TETHER_HOME (returned) and TETHER_DB for CLI tests in local mode."""
    home = tmp_path / "home"
    monkeypatch.setenv("TETHER_HOME", str(home))
    monkeypatch.setenv("TETHER_DB", db_url)
    monkeypatch.delenv("TETHER_URL", raising=False)
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    return home


def initialised(cli: Cli) -> Cli:
    doc = cli.json("init")
    assert doc["created"] is True
    assert doc["admin_token"].startswith("tta_")
    return cli


def with_dev_idp(cli_env: Path, capsys: pytest.CaptureFixture[str], *config: str) -> Cli:
    """The CLI, initialised on a home whose tether.toml turns the development identity
    provider on (and holds the further ``config`` lines)."""
    cli_env.mkdir()
    (cli_env / "tether.toml").write_text("\n".join(["dev_idp = true", *config]) + "\n")
    return initialised(Cli(capsys))


@dataclass
class Served:
    """An initialised Tether behind the API, trusting one test identity provider."""

    client: Any  # fastapi.testclient.TestClient
    tether: Tether
    admin: dict[str, str]  # the admin bearer header
    idp_key: Ed25519PrivateKey  # signs people's tokens (kid "idp-1")


@contextmanager
def served(
    make_settings: Callable[..., Settings],
    directory: Path,
    idp_issuer: str,
    admin_groups: tuple[str, ...] = (),
) -> Iterator[Served]:
    from fastapi.testclient import TestClient
    from jwt.algorithms import OKPAlgorithm

    from tether.api import create_app

    idp_key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    jwk["kid"] = "idp-1"
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    settings = make_settings(
        idp=[{"issuer": idp_issuer, "audience": "tether", "jwks_file": str(jwks)}],
        admin_groups=list(admin_groups),
    )
    first, result = Tether.init(settings)
    first.close()
    assert result.admin_token
    with Tether.open(settings) as tether:
        client = TestClient(create_app(tether), raise_server_exceptions=False)
        try:
            yield Served(client, tether, {"Authorization": f"Bearer {result.admin_token}"}, idp_key)
        finally:
            client.close()


def spec(name: str, owner: str | None = "alice@example.com", **kw: Any) -> AgentSpec:
    return AgentSpec(name=name, owner=owner, public_key=generate_key_pair().public_key, **kw)
