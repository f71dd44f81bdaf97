"""Redirects and kills through the egress proxy, over real HTTP against the API stand-in,
on SQLite and PostgreSQL: a redirect within the destination is followed and decided again,
one outside it (the SSRF case: to another loopback server) is refused and recorded; a
kill cancels the agent's request in flight and refuses its next one, and closes the
connections a face registered for it."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from conftest import ADMIN
from helpers.api_standin import StandIn, standin
from helpers.egress_org import SECRET, EgressOrg, api, egress, egress_org  # noqa: F401

from tether.egress.engine import EgressProxy
from tether.grants import GrantSpec


@pytest.fixture
def org(egress: EgressOrg) -> EgressOrg:  # noqa: F811
    egress.agent("bot", ("GET", "github/redirect"), ("GET", "github/repos/acme/**"))
    return egress


def test_a_redirect_within_the_destination_is_followed_and_decided_again(
    org: EgressOrg,
) -> None:
    token = org.token("bot")
    went = org.call(token, "GET", "github/redirect?to=/repos/acme/y")
    assert went.status_code == 200, went.text
    assert went.json()["path"] == "/repos/acme/y"
    denied = org.call(token, "GET", "github/redirect?to=/repos/other/z")
    assert denied.status_code == 403 and "github/repos/other/z" in denied.text
    assert [r.path for r in org.api.received] == ["/redirect", "/repos/acme/y", "/redirect"]
    decisions = [(d.resource, d.decision) for d in org.events("decision")]
    assert decisions == [
        ("github/redirect", "allow"),
        ("github/repos/acme/y", "allow"),
        ("github/redirect", "allow"),
        ("github/repos/other/z", "deny"),
    ]
    outcomes = [r.detail["outcome"] for r in org.events("egress.result")]
    assert outcomes == ["redirect", "ok", "redirect"]


def test_a_redirect_out_of_the_destination_is_refused_and_recorded(org: EgressOrg) -> None:
    token = org.token("bot")
    with standin() as inside:  # another server on loopback: what SSRF would reach
        for where in (
            f"{inside.url}/admin",
            f"http://localhost:{org.api.port}/repos/acme/x",  # same port, another host name
            "//169.254.169.254/latest/meta-data",
        ):
            refused = org.call(token, "GET", f"github/redirect?to={where}")
            assert refused.status_code == 502, refused.text
            assert refused.json()["error"] == "redirect_refused"
        assert inside.received == []
    assert [r.path for r in org.api.received] == ["/redirect"] * 3
    refusals = org.events("egress.refused")
    bot = org.tether.registry.get(ADMIN, "bot").id
    assert len(refusals) == 3 and all(e.actor == bot for e in refusals)
    assert all("outside the destination" in e.reason for e in refusals)


def test_more_redirects_than_the_limit_are_refused(
    home: Path,
    db_url: str,
    api: StandIn,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EGRESS_GH", SECRET)
    with egress_org(home, db_url, api, egress={"max_redirects": 1}) as org:
        org.agent("bot", ("GET", "github/redirect"), ("GET", "github/repos/acme/**"))
        token = org.token("bot")
        twice = f"/redirect?to={quote('/redirect?to=/repos/acme/x', safe='')}"
        refused = org.call(token, "GET", f"github{twice}")
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"] == "too_many_redirects"
        assert [r.path for r in org.api.received] == ["/redirect"] * 2
        assert len(org.events("decision")) == 2  # the hop followed was decided


def test_a_kill_cancels_the_request_in_flight_and_refuses_the_next(org: EgressOrg) -> None:
    org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "github/slow"))
    token = org.token("bot")
    started = time.monotonic()
    with org.in_flight(token, "github/slow?ms=3000") as seen:
        report = org.tether.killswitch.kill(ADMIN, "bot", reason="test")
        assert report.sessions_closed >= 1  # the exchange in flight, closed by the kill
    answer = seen["answer"]
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "agent_killed"
    assert time.monotonic() - started < 3  # not the API's answer: cut off
    after = org.call(token, "GET", "github/repos/acme/x")
    assert after.status_code == 401
    assert len(org.api.received) == 1
    results = org.events("egress.result")
    assert [r.detail["outcome"] for r in results] == ["cancelled"]


def test_a_kill_closes_a_connection_a_face_registered(org: EgressOrg) -> None:
    proxy = EgressProxy(org.tether)
    org.agent("other", ("GET", "github/repos/acme/**"))
    bot, other = org.token("bot"), org.token("other")
    closed: list[str] = []

    async def work() -> None:
        async with proxy.running():
            await anyio.sleep(0.1)  # the watcher has registered with the kill switch
            mine = proxy.connections.open(proxy.authenticate(bot), lambda: closed.append("bot"))

            async def theirs() -> None:
                closed.append("other")

            proxy.connections.open(proxy.authenticate(other), theirs)
            assert len(proxy.connections) == 2
            await anyio.to_thread.run_sync(
                lambda: org.tether.killswitch.kill(ADMIN, "bot", reason="test")
            )
            assert closed == ["bot"] and len(proxy.connections) == 1
            mine.close()  # the face's own end: already gone, nothing called twice
            assert closed == ["bot"]

    anyio.run(work)
