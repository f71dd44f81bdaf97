"""What a new token is bounded by, read from the snapshot of the state epoch, and how it
is put on record (``tether.tokens.snapshot``, ``tether.tokens.records``).

Each test first issues a token so that the snapshot holds the agent's grants, the agents
and the gateway server, then changes one of them and checks that the very next issue in
this process sees the change: the change moves the epoch and drops the snapshot. A grant
that expires does not move the epoch; the scope follows Tether's (hand-moved) clock.

Recording: tokens issued from several threads at once share commits, and each one is
returned only with its issued-token row and its event committed; when the shared
transaction fails, every token of it fails and none is on record. Client assertions
presented at once share those commits too: of the same assertion presented by many
callers together exactly one is accepted; distinct ones are all accepted.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from conftest import Clock, spec
from sqlalchemy import func, select

from tether import AgentSpec, Caller, GrantSpec, Tether, generate_key_pair
from tether.errors import (
    InvalidClient,
    InvalidScope,
    InvalidTarget,
    StoreUnavailable,
    UnauthorizedClient,
)
from tether.model import Agent
from tether.store import issued_tokens
from tether.tokens import ASSERTION_TYPE, IssuedToken
from tether.tokens.records import Records
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
TOOL = "tools/call"
BOT_KEY = generate_key_pair()  # bot's key pair: its private half signs client assertions


def setup(tether: Tether, *grants: str) -> tuple[Agent, str]:
    """An agent ``bot`` with ``grants`` (``ACTION:RESOURCE``) and the gateway server
    ``github``; returns the agent and that server's audience."""
    tether.upstreams.add(ADMIN, UpstreamSpec("github", url="http://127.0.0.1:9/mcp"))
    tether.registry.register(
        ADMIN, AgentSpec(name="bot", owner="alice@example.com", public_key=BOT_KEY.public_key)
    )
    for grant in grants:
        action, resource = grant.split(":", 1)
        tether.grants.add(ADMIN, GrantSpec("bot", action, resource, reason="test"))
    return tether.registry.get(ADMIN, "bot"), f"{tether.settings.issuer}/mcp/github"


def issue(tether: Tether, agent: Agent, audience: str, scope: str | None = None) -> IssuedToken:
    return tether.tokens.client_credentials(agent, audience, scope)


def on_record(tether: Tether, jti: str) -> bool:
    """Whether the token ``jti`` has its issued-token row and its token.issued event."""
    with tether.store.read() as conn:
        rows = conn.execute(
            select(func.count()).select_from(issued_tokens).where(issued_tokens.c.jti == jti)
        ).scalar_one()
    events = [e for e in tether.events.list(type="token.issued") if e.detail["jti"] == jti]
    return rows == 1 and len(events) == 1


def test_a_revoked_grant_is_out_of_the_next_token(tether: Tether) -> None:
    bot, github = setup(tether, f"{TOOL}:github/read", f"{TOOL}:github/write")
    assert issue(tether, bot, github).scope == f"{TOOL}:github/read {TOOL}:github/write"
    [write] = [g for g in tether.grants.list(ADMIN, principal="bot") if g.resource.endswith("e")]
    tether.grants.revoke(ADMIN, write.id)
    assert issue(tether, bot, github).scope == f"{TOOL}:github/read"
    with pytest.raises(InvalidScope, match="beyond the agent's grants"):
        issue(tether, bot, github, f"{TOOL}:github/write")


def test_a_new_grant_is_in_the_next_token(tether: Tether) -> None:
    bot, github = setup(tether, f"{TOOL}:github/read")
    with pytest.raises(InvalidScope):
        issue(tether, bot, github, f"{TOOL}:github/write")
    tether.grants.add(ADMIN, GrantSpec("bot", TOOL, "github/write", reason="test"))
    assert issue(tether, bot, github, f"{TOOL}:github/write").scope == f"{TOOL}:github/write"


def test_an_expired_grant_is_out_of_the_next_token(tether: Tether, clock: Clock) -> None:
    bot, github = setup(tether, f"{TOOL}:github/read")
    short = GrantSpec("bot", TOOL, "github/write", expires_in=timedelta(minutes=5), reason="t")
    tether.grants.add(ADMIN, short)
    assert issue(tether, bot, github).scope == f"{TOOL}:github/read {TOOL}:github/write"
    clock.advance(minutes=6)  # no change to the store, no move of the epoch
    assert issue(tether, bot, github).scope == f"{TOOL}:github/read"


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.registry.suspend(ADMIN, "helper"),
        lambda t: t.killswitch.kill(ADMIN, "helper"),
        lambda t: t.registry.retire(ADMIN, "helper"),
    ],
    ids=["suspended", "killed", "retired"],
)
def test_an_agent_no_longer_active_is_no_audience_for_the_next_token(
    tether: Tether, change: Callable[[Tether], object]
) -> None:
    bot, _ = setup(tether)
    helper = tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("bot", "delegate", "helper", reason="test"))
    assert issue(tether, bot, str(helper.id)).scope == f"delegate:{helper.id}"
    change(tether)
    with pytest.raises(InvalidTarget, match="not a registered, active agent"):
        issue(tether, bot, str(helper.id))


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.registry.suspend(ADMIN, "bot"),
        lambda t: t.killswitch.kill(ADMIN, "bot"),
    ],
    ids=["suspended", "killed"],
)
def test_an_agent_no_longer_active_gets_no_next_token(
    tether: Tether, change: Callable[[Tether], object]
) -> None:
    """Through the token endpoint's own steps: client authentication, then the issue."""
    bot, github = setup(tether, f"{TOOL}:github/*")
    issue(tether, bot, github)
    change(tether)
    assertion = _assertion(tether, bot)
    with pytest.raises(UnauthorizedClient, match=r"is (suspended|killed)"):
        tether.tokens.authenticate_client(ASSERTION_TYPE, assertion)


def test_a_removed_gateway_server_is_no_audience_for_the_next_token(tether: Tether) -> None:
    bot, github = setup(tether, f"{TOOL}:github/*")
    issue(tether, bot, github)
    tether.upstreams.remove(ADMIN, "github")
    with pytest.raises(InvalidTarget, match="names no gateway server"):
        issue(tether, bot, github)


def test_a_gateway_server_added_after_a_miss_is_found(tether: Tether) -> None:
    bot, _ = setup(tether, f"{TOOL}:jira/*")
    jira = f"{tether.settings.issuer}/mcp/jira"
    with pytest.raises(InvalidTarget):
        issue(tether, bot, jira)
    tether.upstreams.add(ADMIN, UpstreamSpec("jira", url="http://127.0.0.1:9/mcp"))
    assert issue(tether, bot, jira).scope == f"{TOOL}:jira/*"


def test_tokens_issued_together_are_each_on_record_when_returned(tether: Tether) -> None:
    bot, github = setup(tether, f"{TOOL}:github/*")
    threads, each = 8, 5
    problems: list[str] = []
    issued: list[str] = []
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(each):
            token = issue(tether, bot, github)
            if not on_record(tether, token.jti):
                problems.append(f"{token.jti} returned before it was on record")
            issued.append(token.jti)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert problems == []
    assert len(set(issued)) == threads * each
    assert all(on_record(tether, jti) for jti in issued)


def test_a_failed_shared_commit_fails_every_token_of_it(
    tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, github = setup(tether, f"{TOOL}:github/*")
    threads = 6
    entered = threading.Barrier(threads, timeout=10)
    calls: list[int] = []
    real = Records.insert

    def failing(self: Records, conn: object, records: list[object]) -> None:
        calls.append(len(records))
        real(self, conn, records)  # type: ignore[arg-type]
        raise StoreUnavailable("the store is unavailable")  # after the rows: rolled back

    monkeypatch.setattr(Records, "insert", failing)
    outcomes: list[str] = []

    def run() -> None:
        entered.wait()
        try:
            issue(tether, bot, github)
            outcomes.append("returned")
        except StoreUnavailable:
            outcomes.append("failed")

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert outcomes == ["failed"] * threads
    assert sum(calls) == threads
    with tether.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(issued_tokens)).scalar_one() == 0
    assert tether.events.list(type="token.issued") == []


def at_once(calls: list[Callable[[], object]]) -> list[str]:
    """Run ``calls`` from one thread each, started together; each one's outcome: "ok" or
    the name of the error it raised."""
    start = threading.Barrier(len(calls), timeout=10)
    outcomes: list[str] = []

    def run(call: Callable[[], object]) -> None:
        start.wait()
        try:
            call()
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    workers = [threading.Thread(target=run, args=(c,)) for c in calls]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return outcomes


def test_one_assertion_presented_at_once_is_accepted_once(tether: Tether) -> None:
    bot, _ = setup(tether)
    assertion = _assertion(tether, bot)
    authenticate = lambda: tether.tokens.authenticate_client(ASSERTION_TYPE, assertion)  # noqa: E731
    outcomes = at_once([authenticate] * 8)
    assert sorted(outcomes) == ["InvalidClient"] * 7 + ["ok"]
    with pytest.raises(InvalidClient, match="replayed"):
        authenticate()


def test_distinct_assertions_presented_at_once_are_all_accepted(tether: Tether) -> None:
    bot, _ = setup(tether)
    assertions = [_assertion(tether, bot) for _ in range(8)]
    calls: list[Callable[[], object]] = [
        lambda a=a: tether.tokens.authenticate_client(ASSERTION_TYPE, a)  # type: ignore[misc]
        for a in assertions
    ]
    assert at_once(calls) == ["ok"] * 8


def _assertion(tether: Tether, agent: Agent) -> str:
    """A client assertion (RFC 7523) signed with bot's own key, on Tether's clock."""
    now = int(tether.clock().timestamp())
    claims = {"iss": agent.id, "sub": agent.id, "aud": tether.tokens.token_endpoint}
    claims |= {"exp": now + 60, "jti": secrets.token_urlsafe(8)}
    return jwt.encode(claims, BOT_KEY.private_pem, algorithm="EdDSA")
