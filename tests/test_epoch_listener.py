"""Kills and revocations reach other processes sharing a PostgreSQL store at once
(LISTEN/NOTIFY), not only within the staleness bound; the bound itself fails closed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tether import AgentSpec, Caller, Settings, Tether, generate_key_pair
from tether.errors import InvalidToken, TetherError
from tether.store import epoch_acks

ADMIN = Caller.admin()
RESOURCE = "http://127.0.0.1:8700"  # Tether's own issuer: an audience it always knows


@pytest.fixture
def pair(postgres_schema_url: str, tmp_path: Path) -> Iterator[tuple[Tether, Tether]]:
    """Two Tethers ("processes") on one PostgreSQL schema; the second listens. Its
    staleness bound is a minute, so only a notification can make it see a change soon."""
    home = tmp_path / "home"
    first, _ = Tether.init(Settings.load(home, db_url=postgres_schema_url))
    second = Tether.open(
        Settings.load(home, db_url=postgres_schema_url, decision_staleness_ms=60_000)
    )
    second.listen()
    assert second._listener is not None and second._listener.listening.wait(10)
    try:
        yield first, second
    finally:
        second.close()
        first.close()


def _agent_token(tether: Tether, name: str) -> str:
    tether.registry.register(
        ADMIN,
        AgentSpec(name=name, owner="alice@example.com", public_key=generate_key_pair().public_key),
    )
    from tether.grants import GrantSpec

    tether.grants.add(ADMIN, GrantSpec(name, "tools/call", "github/*"))
    agent = tether.registry.get(ADMIN, name)
    return tether.tokens.client_credentials(agent, RESOURCE, None, None).access_token


def _refused_within(check: Callable[[], object], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            check()
        except InvalidToken:
            return True
        time.sleep(0.01)
    return False


def test_a_kill_in_one_process_reaches_the_other_by_notification(pair) -> None:
    first, second = pair
    token = _agent_token(first, "rogue")
    assert second.tokens.verify(token, RESOURCE).chain  # cached by the second, epoch now
    first.killswitch.kill(ADMIN, "rogue", reason="test")
    # well inside the 60 s bound: only the notification can have told the second process
    assert _refused_within(lambda: second.tokens.verify(token, RESOURCE), 10)
    assert second._listener is not None and second._listener.notified >= 1


def test_once_a_kill_returns_no_listening_process_accepts_the_token(pair) -> None:
    """DESIGN §5.4 across processes: the kill waits until every live process has confirmed
    the kill's epoch, so the other process refuses on its very first try afterwards."""
    first, second = pair
    for round_ in range(5):
        token = _agent_token(first, f"rogue-{round_}")
        assert second.tokens.verify(token, RESOURCE).chain  # cached there
        report = first.killswitch.kill(ADMIN, f"rogue-{round_}")
        assert report.processes_confirmed >= 1 and report.processes_unconfirmed == []
        with pytest.raises(InvalidToken):  # no waiting, no polling: already refused
            second.tokens.verify(token, RESOURCE)


def test_a_process_that_does_not_confirm_is_waited_for_only_up_to_the_bound(pair) -> None:
    """A live process that does not confirm (here: a heartbeat row that never moves) holds
    the kill up to the staleness bound, not forever; the kill names it. By then, that
    process re-reads the epoch before trusting any token (or refuses)."""
    first, _ = pair
    token = _agent_token(first, "rogue")
    with first.store.engine.begin() as conn:
        conn.execute(
            sa.insert(epoch_acks).values(process="stuck:1:x", epoch=0, seen_at=sa.func.now())
        )
    report = first.killswitch.kill(ADMIN, "rogue")
    assert report.processes_unconfirmed == ["stuck:1:x"]
    assert report.to_dict()["processes_unconfirmed"] == ["stuck:1:x"]
    with pytest.raises(InvalidToken):
        first.tokens.verify(token, RESOURCE)


def test_a_lost_listener_connection_comes_back_and_catches_up(pair) -> None:
    first, second = pair
    token = _agent_token(first, "rogue")
    second.tokens.verify(token, RESOURCE)
    listener = second._listener
    assert listener is not None
    with first.store.engine.begin() as conn:  # cut the listener's connection
        killed = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN tether_epoch%' AND pid <> pg_backend_pid()"
            )
        ).all()
    assert killed
    deadline = time.monotonic() + 10
    while listener.listening.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    first.killswitch.kill(ADMIN, "rogue")  # maybe while it was away
    assert _refused_within(lambda: second.tokens.verify(token, RESOURCE), 15)


def test_a_process_that_cannot_confirm_its_epoch_refuses_tokens(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    """The bound fails closed: once the store cannot be read, a token is refused rather
    than trusted on stale state."""
    home = tmp_path / "home"
    tether, _ = Tether.init(
        Settings.load(home, db_url=postgres_schema_url, decision_staleness_ms=100)
    )
    with tether:
        token = _agent_token(tether, "agent")
        tether.tokens.verify(token, RESOURCE)
        tether.store.engine.dispose()
        broken = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        tether.store.engine = broken  # the store is gone
        time.sleep(0.2)  # past the bound
        with pytest.raises(TetherError):
            tether.tokens.verify(token, RESOURCE)
