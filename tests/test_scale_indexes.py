"""The indexes of migration 0013 and the queries that use them: on PostgreSQL
``event_terms`` (who an event names, which request it served) and ``grant_uses`` (when a
grant last allowed a decision) are exact, written with the event in its transaction and
rolled back with it, built for events stored before the migration; SQLite keeps neither.
Audit search, explain and ``grant list --unused`` answer through them as by reading the
log; agent listings page."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from conftest import ADMIN, Clock, spec
from fastapi.testclient import TestClient

from tether.api import create_app
from tether.audit.queries import Filter, explain, search
from tether.audit.record import REQUEST_ID, Entry
from tether.audit.terms import EventTerms
from tether.core import Tether
from tether.grants import GrantSpec
from tether.policy.decision import AccessRequest
from tether.store import event_terms, grant_uses
from tether.store.engine import _alembic_config

USER = "user:alice@example.com"


def _decide(tether: Tether, agent: str, resource: str, request_id: str | None = None) -> None:
    token = REQUEST_ID.set(request_id)
    try:
        tether.decide_all([AccessRequest.of(agent, "tools/call", resource, on_behalf_of=USER)])
    finally:
        REQUEST_ID.reset(token)


def _organisation(tether: Tether, clock: Clock) -> dict[str, str]:
    """Agents, grants, allowed and denied decisions over time, some of one request."""
    tether.registry.register(ADMIN, spec("a1"))
    tether.registry.register(ADMIN, spec("b1", owner="bob@example.com"))
    grants = {}
    for name, resource in (("a1", "github/*"), ("b1", "fs/*"), ("a1", "jira/*")):
        grant = tether.grants.add(ADMIN, GrantSpec(name, "tools/call", resource, reason="t"))
        grants[f"{name}:{resource}"] = grant.id
    tether.grants.add(ADMIN, GrantSpec(USER, "tools/call", "github/*", reason="t"))
    for i in range(4):
        _decide(tether, "a1", f"github/issue{i}", request_id="req-one" if i < 2 else None)
        _decide(tether, "b1", f"github/x{i}")  # denied: b1 holds no github grant
        clock.advance(minutes=5)
    _decide(tether, "b1", "fs/read", request_id="req-two")
    return grants


def _terms_from_bodies(tether: Tether) -> set[tuple[str, str, int]]:
    """What event_terms must hold, read from the log itself."""
    want: set[tuple[str, str, int]] = set()
    for seq, _, text in tether.events.bodies():
        body = json.loads(text)
        for principal in [*body["chain"], body["actor"], body["subject"]]:
            if isinstance(principal, str):
                want.add(("p", principal, seq))
        if body["request_id"] is not None:
            want.add(("r", body["request_id"], seq))
    return want


def _uses_from_bodies(tether: Tether) -> dict[str, datetime]:
    used: dict[str, datetime] = {}
    for event in tether.events.list(type="decision"):
        if event.decision == "allow":
            for grant_id in event.detail["grants"]:
                used[grant_id] = max(used.get(grant_id, event.at), event.at)
    return used


def _kept(tether: Tether) -> bool:
    return tether.store.dialect == "postgresql"


def _stored(tether: Tether) -> tuple[set[tuple[str, str, int]], dict[str, datetime]]:
    with tether.store.read() as conn:
        terms = {(k, t, s) for k, t, s in conn.execute(sa.select(event_terms))}
        uses = dict(conn.execute(sa.select(grant_uses.c.grant_id, grant_uses.c.last_used)).all())
    return terms, uses


def test_the_indexes_hold_exactly_what_the_log_says(tether: Tether, clock: Clock) -> None:
    grants = _organisation(tether, clock)
    terms, uses = _stored(tether)
    if not _kept(tether):  # SQLite: no index, its appends stay lean
        assert (terms, uses) == (set(), {})
        return
    assert terms == _terms_from_bodies(tether)
    assert uses == _uses_from_bodies(tether)
    # alice holds no fs grant: b1's decision for her is a deny, and its grant unused
    assert set(uses) == {grants["a1:github/*"]} | {
        g.id for g in tether.grants.list(ADMIN, principal=USER)
    }


def test_grant_list_unused_names_the_grants_no_allowed_decision_named(
    tether: Tether, clock: Clock
) -> None:
    grants = _organisation(tether, clock)
    unused = tether.reports.grants(ADMIN, unused=_hours(1))
    assert {r.grant.id for r in unused} == {grants["a1:jira/*"], grants["b1:fs/*"]}
    clock.advance(hours=2)  # now every use is older than the window
    unused = tether.reports.grants(ADMIN, unused=_hours(1))
    assert {r.grant.id for r in unused} == {g.id for g in tether.grants.list(ADMIN)}
    [report] = [r for r in tether.reports.grants(ADMIN) if r.grant.id == grants["a1:github/*"]]
    assert report.last_used == _uses_from_bodies(tether)[grants["a1:github/*"]]


def _hours(n: int) -> timedelta:
    return timedelta(hours=n)


def test_the_indexes_roll_back_with_the_event(tether: Tether) -> None:
    """An event that is not written leaves no trace in either index: they are written by
    the append itself, in its transaction."""
    before = _stored(tether)
    entry = Entry.of(
        "decision",
        actor="spiffe://tether.local/agent/ghost",
        chain=(USER, "spiffe://tether.local/agent/ghost"),
        decision="allow",
        detail={"grants": ["g_0123456789abcdef"]},
    )

    def append_then_fail() -> None:
        with tether.store.write() as conn:
            tether.events.append(conn, entry)
            tether.store.before_commit(conn, _fail)

    with pytest.raises(RuntimeError, match="rolled back"):
        append_then_fail()
    assert _stored(tether) == before
    [seq] = tether.events.record(entry)
    terms, uses = _stored(tether)
    if not _kept(tether):  # SQLite keeps no index: its appends stay lean
        assert (terms, uses) == (set(), {})
        return
    assert ("p", "spiffe://tether.local/agent/ghost", seq) in terms and ("p", USER, seq) in terms
    assert uses["g_0123456789abcdef"] == tether.events.get(seq).at


def _fail() -> None:
    raise RuntimeError("rolled back")


def test_the_migration_indexes_events_stored_before_it(tether: Tether, clock: Clock) -> None:
    _organisation(tether, clock)
    before = _stored(tether)
    config = _alembic_config()
    with tether.store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0012")
        command.upgrade(config, "head")
    assert _stored(tether) == before
    _decide(tether, "a1", "github/after")  # and the trigger is back
    assert _stored(tether)[0] == (_terms_from_bodies(tether) if _kept(tether) else set())


class _Unindexed(EventTerms):
    """The index refusing every term: searches read the log, as for an over-long one."""

    def indexed(self, term: str) -> bool:
        return False


@pytest.mark.parametrize(
    "where",
    [
        {"agent": "a1"},
        {"agent": "b1", "decision": "deny"},
        {"user": "alice@example.com", "action": "tools/call"},
        {"agent": "a1", "type": "agent.registered"},
        {"user": "bob@example.com"},
    ],
)
def test_search_through_the_index_finds_what_reading_the_log_finds(
    tether: Tether, clock: Clock, where: dict[str, str]
) -> None:
    _organisation(tether, clock)
    query = Filter.of(tether.registry, **where)  # type: ignore[arg-type]
    indexed, scanned = EventTerms(tether.store), _Unindexed(tether.store)

    def pages(terms: EventTerms) -> list[list[int]]:
        out, cursor = [], 0
        while cursor is not None:
            page, cursor = search(tether.events, terms, query, after=cursor, limit=2)
            out.append([e.seq for e in page])
        return out

    assert pages(indexed) == pages(scanned)
    assert any(pages(indexed)) or where == {"user": "bob@example.com"}


def test_explain_names_the_events_of_the_same_request(tether: Tether, clock: Clock) -> None:
    _organisation(tether, clock)
    decided = [e for e in tether.events.list(type="decision") if e.request_id == "req-one"]
    first, second = (e.seq for e in decided)
    terms = EventTerms(tether.store)
    assert explain(tether.events, terms, tether.registry, first)["related"] == [second]
    assert explain(tether.events, _Unindexed(tether.store), tether.registry, first)["related"] == [
        second
    ]


def test_agents_page_by_name(tether: Tether, clock: Clock) -> None:
    names = [f"p{i}" for i in range(7)]
    for name in names:
        tether.registry.register(ADMIN, spec(name))
    tether.registry.suspend(ADMIN, "p2")
    tether.registry.suspend(ADMIN, "p5")
    seen, after = [], None
    while True:
        page = tether.registry.list(ADMIN, after=after, limit=3)
        seen += [a.name for a in page]
        if len(page) < 3:
            break
        after = page[-1].name
    assert seen == names
    active = tether.registry.list(ADMIN, state="active", limit=3)
    assert [a.name for a in active] == ["p0", "p1", "p3"]
    rest = tether.registry.list(ADMIN, state="active", after="p3", limit=3)
    assert [a.name for a in rest] == ["p4", "p6"]
    with pytest.raises(Exception, match="limit must be at least 1"):
        tether.registry.list(ADMIN, limit=0)


def test_the_api_pages_agents_and_says_where_to_go_on(tether: Tether) -> None:
    for name in ("q0", "q1", "q2"):
        tether.registry.register(ADMIN, spec(name))
    token = tether.admin_tokens.create()
    with TestClient(create_app(tether)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        first = client.get("/v1/agents", params={"limit": 2}, headers=auth).json()
        assert [a["name"] for a in first["agents"]] == ["q0", "q1"] and first["next"] == "q1"
        last = client.get("/v1/agents", params={"limit": 2, "after": "q1"}, headers=auth).json()
        assert [a["name"] for a in last["agents"]] == ["q2"] and last["next"] is None
        whole = client.get("/v1/agents", headers=auth).json()
        assert "next" not in whole and len(whole["agents"]) == 3
        bad = client.get("/v1/agents", params={"limit": 0}, headers=auth)
        assert bad.status_code in (400, 422)


def test_agent_states_for_a_report_are_the_states_now_and_only_the_callers(
    tether: Tether, clock: Clock
) -> None:
    from tether.callers import Caller
    from tether.model import AgentState, Email

    tether.registry.register(ADMIN, spec("s1"))
    tether.registry.register(ADMIN, spec("s2", expires_in=timedelta(hours=1)))
    tether.registry.register(ADMIN, spec("s3", owner="bob@example.com"))
    tether.registry.suspend(ADMIN, "s1")
    clock.advance(hours=2)  # s2 has expired since
    names = ["s1", "s2", "s3", "nobody"]
    assert tether.registry.states(ADMIN, names) == {
        "s1": AgentState.SUSPENDED,
        "s2": AgentState.EXPIRED,
        "s3": AgentState.ACTIVE,
    }
    bob = Caller.user(Email("bob@example.com"))
    assert tether.registry.states(bob, names) == {"s3": AgentState.ACTIVE}
