"""How an exchange hop's decision is recorded (``tether.tokens.exchange``): an allow is
written in the transaction of the token it allows, right before the token's own event; an
allow that yields no token (a scope beyond the grants, a failed write of the token) is
recorded on its own; a deny is recorded and refused."""

from __future__ import annotations

import pytest
from conftest import spec
from sqlalchemy import func, select

from tether import Caller, GrantSpec, Tether
from tether.errors import InvalidGrant, InvalidScope, StoreUnavailable
from tether.model import Agent, Event
from tether.store import issued_tokens
from tether.tokens import TOKEN_TYPE_ACCESS
from tether.tokens.records import Records

ADMIN = Caller.admin()
TOOL = "tools/call"


def hand_off(tether: Tether, *, delegate: bool = True) -> tuple[Agent, str]:
    """Agents a and b (both may call github tools; a may delegate to b unless told not
    to), and a's token for b; returns b and that token."""
    for name in ("a", "b"):
        tether.registry.register(ADMIN, spec(name))
        tether.grants.add(ADMIN, GrantSpec(name, TOOL, "github/*", reason="test"))
    if delegate:
        tether.grants.add(ADMIN, GrantSpec("a", "delegate", "b", reason="test"))
    a, b = (tether.registry.get(ADMIN, name) for name in ("a", "b"))
    return b, tether.tokens.client_credentials(a, str(b.id), f"{TOOL}:github/*").access_token


def exchange(tether: Tether, b: Agent, token: str, scope: str | None = None) -> str:
    return tether.tokens.exchange(b, token, TOKEN_TYPE_ACCESS, tether.settings.issuer, scope).jti


def hops(tether: Tether) -> list[Event]:
    return [e for e in tether.events.list(type="decision") if e.action == "delegate"]


def tokens_on_record(tether: Tether) -> int:
    with tether.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(issued_tokens)).scalar_one())


def test_an_allowed_hop_is_recorded_with_its_token(tether: Tether) -> None:
    b, token = hand_off(tether)
    jti = exchange(tether, b, token)
    [hop] = hops(tether)
    [exchanged] = tether.events.list(type="token.exchanged")
    assert hop.decision == "allow"
    assert exchanged.detail["jti"] == jti
    assert exchanged.seq == hop.seq + 1  # written together, the decision first


def test_an_allowed_hop_without_a_token_is_still_recorded(tether: Tether) -> None:
    b, token = hand_off(tether)
    with pytest.raises(InvalidScope):
        exchange(tether, b, token, f"{TOOL}:jira/create")
    [hop] = hops(tether)
    assert hop.decision == "allow"
    assert tether.events.list(type="token.exchanged") == []


def test_a_failed_write_of_the_token_leaves_the_hop_on_record_alone(
    tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, token = hand_off(tether)
    before = tokens_on_record(tether)

    def failing(self: Records, conn: object, records: object) -> None:
        raise StoreUnavailable("the store is unavailable")

    monkeypatch.setattr(Records, "insert", failing)
    with pytest.raises(StoreUnavailable):
        exchange(tether, b, token)
    [hop] = hops(tether)
    assert hop.decision == "allow"
    assert tether.events.list(type="token.exchanged") == []
    assert tokens_on_record(tether) == before


def test_a_denied_hop_is_recorded_and_refused(tether: Tether) -> None:
    b, token = hand_off(tether, delegate=False)
    with pytest.raises(InvalidGrant, match="delegation denied"):
        exchange(tether, b, token)
    [hop] = hops(tether)
    assert hop.decision == "deny"
    assert tether.events.list(type="token.exchanged") == []
