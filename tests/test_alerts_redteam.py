"""``/v1/alerts`` and ``tether alerts`` under attack: owners reaching other owners' alerts
(by id, by the ``after`` bookmark, by the ``agent`` filter, after a transfer), and alert
text chosen by an attacker (a tool name) reaching a terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ADMIN, Cli
from test_alerts_api import ALICE, BOB, Api, api, cli, error, local, raise_

from tether import Tether
from tether.detect.model import Finding

__all__ = ["api", "cli", "local"]  # the fixtures, shared with the API's tests

CAROL = "carol@example.com"


def test_the_agent_filter_and_the_bookmark_reveal_nothing_of_other_owners(api: Api) -> None:
    """Attacker controls the query: another owner's agent as ``agent=``, another owner's
    alert id as ``after=``; the answers are those of an agent or id that does not exist."""
    bobs = raise_(api.tether, "billing", "high")
    raise_(api.tether, "helper", "high")
    alice = api.person(ALICE)
    assert api.get("/v1/alerts", alice, agent="billing").json() == {"alerts": []}
    assert api.get("/v1/alerts", alice, agent="nobody").json() == {"alerts": []}
    theirs = error(api.get("/v1/alerts", alice, after=bobs.id), 404, "not_found")
    missing = error(api.get("/v1/alerts", alice, after="alt_0123456789abcdef"), 404, "not_found")
    assert theirs == f"no alert {bobs.id}" and missing == "no alert alt_0123456789abcdef"
    carol = api.person(CAROL)  # owns nothing
    assert api.get("/v1/alerts", carol).json() == {"alerts": []}
    error(api.get(f"/v1/alerts/{bobs.id}", carol), 404, "not_found")


def test_a_former_owner_sees_but_no_longer_answers_the_alerts_of_a_transferred_agent(
    api: Api,
) -> None:
    """Attacker is the agent's former owner (the agent was taken from them): they still
    see what was raised on their watch, but may no longer suppress or resolve it, which
    would lower the risk of an agent that is now someone else's."""
    alert = raise_(api.tether, "helper", "medium")
    api.tether.registry.set_owner(ADMIN, "helper", BOB)
    alice, bob = api.person(ALICE), api.person(BOB)
    assert api.get(f"/v1/alerts/{alert.id}", alice).status_code == 200
    before = len(api.tether.events.list(type="access.refused"))
    for move, body in (("suppress", {"reason": "noise"}), ("resolve", {"reason": "x"})):
        error(api.post(f"/v1/alerts/{alert.id}/{move}", alice, body), 403, "access_denied")
    error(api.post(f"/v1/alerts/{alert.id}/ack", alice), 403, "access_denied")
    refusals = api.tether.events.list(type="access.refused")[before:]
    assert [e.actor for e in refusals] == [f"user:{ALICE}"] * 3
    assert api.tether.alerts.get(ADMIN, alert.id).state == "open"
    assert api.tether.risk.score("helper") == 40
    done = api.post(f"/v1/alerts/{alert.id}/suppress", bob, {"reason": "mine now: noise"})
    assert done.status_code == 200, done.text


def _raise_text(tether: Tether, summary: str, tool: str) -> str:
    found = Finding(
        detector="first_use",
        severity="medium",
        agent="helper",
        chain=(f"user:{ALICE}", tether.registry.agent_id("helper")),
        summary=summary,
        evidence=(1,),
        at=datetime(2026, 1, 1, 3, 0, tzinfo=UTC),
        detail={"new": [{"kind": "tool", "value": tool}]},
    )
    with tether.store.write() as conn:
        [alert] = tether.alerts.raise_all(conn, [found])
    return alert.id


def test_attacker_text_in_an_alert_reaches_no_terminal_raw(cli: Cli, local: Tether) -> None:
    """Attacker controls a tool's name, so the alert's summary and detail: terminal escapes,
    Rich markup and bidirectional overrides are shown as text, never obeyed."""
    evil = "x\x1b]8;;http://evil\x07[bold red]SAFE[/]\u202etxt.exe\x9b2J"
    alert_id = _raise_text(local, f"helper used tool {evil} for the first time", evil)
    for argv in (("alerts", "list"), ("alerts", "show", alert_id)):
        code, out, _ = cli(*argv)
        assert code == 0
        for raw in ("\x1b", "\x07", "\u202e", "\x9b"):
            assert raw not in out, (argv, out)
        assert "[bold red]SAFE[/]" in out  # markup shown as typed, not applied
    shown = cli.json("alerts", "show", alert_id)
    assert shown["detail"]["new"][0]["value"] == evil  # JSON carries the bytes, escaped


def test_an_alert_id_that_is_a_path_is_an_unknown_alert(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import Cli, initialised

    cli = initialised(Cli(capsys))
    for odd in ("../agents", "alt_0123/ack", "x" * 300, "alt_zz"):
        doc = cli.json("alerts", "show", odd, expect=1)
        assert doc["error"] == "not_found"


def test_a_path_under_an_alert_is_404_after_authentication(api: Api) -> None:
    assert api.client.get("/v1/alerts/x/agents").status_code == 401
    answer = api.get("/v1/alerts/..%2Fagents/x", api.admin)
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert api.get("/v1/alerts/alt_0123456789abcdef/ack", api.admin).status_code == 404
