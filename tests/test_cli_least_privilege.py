"""Least privilege from the CLI in local mode, on both stores: grants, guardrails, decisions.

The scenario: agent ``helper`` (owner alice) may only ``tools/call`` ``github/create_issue``;
alice may ``tools/call`` anything under ``github/``. ``helper`` acting for alice may create
an issue; acting for bob it may not (bob holds no grant), and it may never delete a repo
(helper holds no grant for that), whatever alice may do.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli as BaseCli
from conftest import Clock, initialised

ALICE = "user:alice@example.com"
BOB = "user:bob@example.com"
HELPER = "spiffe://tether.local/agent/helper"

NO_DELETES = """\
@id("no-deletes")
forbid (principal, action == Action::"tools/call", resource)
when { resource.path like "*delete*" };
"""


class Cli(BaseCli):
    # ---- the commands of this file ---------------------------------------------------

    def authorize(
        self,
        resource: str = "github/create_issue",
        principal: str = "helper",
        on_behalf_of: str | None = ALICE,
        *extra: str,
        expect: int = 0,
    ) -> dict[str, Any]:
        argv = ["authorize", "--principal", principal, "--action", "tools/call"]
        argv += ["--resource", resource, *extra]
        if on_behalf_of is not None:
            argv += ["--on-behalf-of", on_behalf_of]
        decision: dict[str, Any] = self.json(*argv, expect=expect)
        assert decision["allowed"] is (expect == 0), decision
        return decision

    def grant(self, principal: str, resource: str, *extra: str, action: str = "tools/call") -> Any:
        return self.json(
            "grant", "add", principal, "--action", action, "--resource", resource, *extra
        )

    def grants(self, *extra: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.json("grant", "list", *extra)["grants"]
        return found


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    c = Cli(capsys)
    initialised(c)
    return c


@pytest.fixture
def scenario(cli: Cli) -> dict[str, str]:
    """The issue's set-up; returns the grant IDs by who holds them."""
    agent = cli.json("agent", "register", "helper", "--owner", "alice@example.com")
    assert agent["id"] == HELPER
    helper = cli.grant("helper", "github/create_issue")
    assert helper["principal"] == HELPER and helper["broad"] is False
    alice = cli.grant(ALICE, "github/*")
    assert alice["principal"] == ALICE and alice["broad"] is False
    return {"helper": helper["id"], "alice": alice["id"]}


def test_the_issue_scenario_end_to_end(cli: Cli, scenario: dict[str, str]) -> None:
    argv = ["authorize", "--principal", "helper", "--on-behalf-of", ALICE]
    argv += ["--action", "tools/call", "--resource", "github/create_issue"]
    code, out, err = cli(*argv)
    assert code == 0, (out, err)
    assert out.startswith("ALLOW tools/call github/create_issue")
    assert f"chain: {ALICE} -> {HELPER}" in out
    assert scenario["helper"] in out and scenario["alice"] in out

    allowed = cli.authorize()
    assert allowed["chain"] == [ALICE, HELPER]
    assert sorted(allowed["grants"]) == sorted(scenario.values())

    code, out, err = cli(*[a if a != ALICE else BOB for a in argv])
    assert code == 3, (out, err)
    assert out.startswith("DENY tools/call github/create_issue") and BOB in out
    assert "Traceback" not in out + err

    denied = cli.authorize(on_behalf_of=BOB, expect=3)
    assert denied["chain"] == [BOB, HELPER]
    assert denied["grants"] == []
    assert denied["reasons"] == [f"{BOB} holds no grant for tools/call on github/create_issue"]

    delete = cli.authorize("github/delete_repo", expect=3)
    assert delete["reasons"] == [f"{HELPER} holds no grant for tools/call on github/delete_repo"]

    # alice acting alone may do what her grant says
    cli.authorize("github/delete_repo", ALICE, None)
    cli.authorize("github/create_issue", BOB, None, expect=3)


def test_a_chain_needs_every_agent_granted(cli: Cli, scenario: dict[str, str]) -> None:
    cli.json("agent", "register", "planner", "--owner", "alice@example.com")
    denied = cli.authorize("github/create_issue", "helper", ALICE, "--chain", "planner", expect=3)
    assert denied["chain"] == [ALICE, "spiffe://tether.local/agent/planner", HELPER]
    assert denied["reasons"] == [
        "spiffe://tether.local/agent/planner holds no grant for tools/call on github/create_issue"
    ]
    cli.grant("planner", "github/create_issue")
    cli.authorize("github/create_issue", "helper", ALICE, "--chain", "planner")


def test_extra_context_and_a_conditional_grant(cli: Cli, scenario: dict[str, str]) -> None:
    cli.grant(BOB, "github/list_issues")
    cli.grant(
        "helper", "github/list_issues", "--when", 'context.on_behalf_of == "alice@example.com"'
    )
    cli.authorize("github/list_issues")
    bob = cli.authorize("github/list_issues", "helper", BOB, expect=3)
    assert bob["reasons"] == [f"{HELPER} holds no grant for tools/call on github/list_issues"]
    # extra Cedar context travels with --context
    cli.authorize("github/create_issue", "helper", ALICE, "--context", '{"ticket": "T-1"}')


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _essence(decision: dict[str, Any]) -> tuple[Any, ...]:
    return decision["allowed"], decision["reasons"], decision["policies"]


def test_a_guardrail_overrides_grants_until_removed(
    cli: Cli, scenario: dict[str, str], tmp_path: Path
) -> None:
    cli.grant("helper", "github/delete_repo")
    before = cli.authorize("github/delete_repo")
    assert before["policies"] == []
    builtin = cli.json("policy", "list")["policies"]
    assert [p["id"] for p in builtin] == ["tether-not-active", "tether-unowned", "tether-trifecta"]
    assert all(p["builtin"] for p in builtin)

    added = cli.json("policy", "add", _write(tmp_path, "no-deletes.cedar", NO_DELETES))
    assert [p["id"] for p in added["policies"]] == ["no-deletes"]
    assert added["policies"][0]["source"] == "no-deletes.cedar"

    denied = cli.authorize("github/delete_repo", expect=3)
    assert denied["policies"] == ["no-deletes"]
    assert denied["reasons"], denied
    assert all("no-deletes" in r for r in denied["reasons"]), denied["reasons"]
    # a bob request is denied too, and the guardrail is named among the reasons
    assert any(
        "no-deletes" in r
        for r in cli.authorize("github/delete_repo", "helper", BOB, expect=3)["reasons"]
    )
    # other requests are untouched
    cli.authorize("github/create_issue")
    listed = cli.json("policy", "list")["policies"]
    assert [p["id"] for p in listed] == [
        "tether-not-active",
        "tether-unowned",
        "tether-trifecta",
        "no-deletes",
    ]
    code, out, _ = cli("policy", "list")
    assert code == 0 and "no-deletes" in out and "forbid" in out

    # a malformed file changes nothing and says what Cedar says
    decisions = {
        r: _essence(cli.authorize(r, expect=e))
        for r, e in (("github/delete_repo", 3), ("github/create_issue", 0))
    }
    broken = _write(
        tmp_path, "broken.cedar", '@id("broken")\nforbid (principal, action resource);\n'
    )
    code, out, err = cli("policy", "add", broken)
    assert code == 2, (out, err)
    assert out == ""
    assert "Cedar could not parse the policy" in err and "Traceback" not in err
    doc = cli.json("policy", "add", broken, expect=2)
    assert doc["error"] == "invalid_request"
    assert doc["error_description"].startswith("Cedar could not parse the policy: ")
    assert len(doc["error_description"]) > len("Cedar could not parse the policy: ")
    assert cli.json("policy", "list")["policies"] == listed
    assert {
        r: _essence(cli.authorize(r, expect=e))
        for r, e in (("github/delete_repo", 3), ("github/create_issue", 0))
    } == decisions

    removed = cli.json("policy", "remove", "no-deletes", "--reason", "done")
    assert removed["id"] == "no-deletes"
    assert _essence(cli.authorize("github/delete_repo")) == _essence(before)
    assert [p["id"] for p in cli.json("policy", "list")["policies"]] == [
        "tether-not-active",
        "tether-unowned",
        "tether-trifecta",
    ]


def test_policy_schema_prints_the_schema(cli: Cli) -> None:
    code, out, err = cli("policy", "schema")
    assert code == 0, err
    assert "entity Agent" in out and "entity User" in out and "entity Resource" in out
    assert '"tools/call"' in out
    assert cli.json("policy", "schema")["schema"] == out


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("", 2, "Cedar text"),
        ("permit (principal, action, resource);\n", 2, "@id"),
        (
            '@id("x")\npermit (principal, action, resource)\nwhen { resource.size > 3 };\n',
            2,
            "schema",
        ),
        ('@id("tether-mine")\nforbid (principal, action, resource);\n', 2, "reserved"),
        ('@id("grant:g_1")\nforbid (principal, action, resource);\n', 2, "reserved"),
        ('@id("tether-not-active")\nforbid (principal, action, resource);\n', 2, "reserved"),
        (
            '@id("twice")\nforbid (principal, action, resource);\n'
            '@id("twice")\nforbid (principal, action, resource);\n',
            2,
            "twice",
        ),
        ('@id("no-deletes")\nforbid (principal, action, resource);\n', 1, "exists"),
        ('@id("a b")\nforbid (principal, action, resource);\n', 2, "@id"),
    ],
    ids=repr,
)
def test_bad_policy_files_are_refused_whole(
    cli: Cli, tmp_path: Path, text: str, code: int, needle: str
) -> None:
    cli.json("policy", "add", _write(tmp_path, "no-deletes.cedar", NO_DELETES))
    listed = cli.json("policy", "list")["policies"]
    path = _write(tmp_path, "bad.cedar", text + NO_DELETES.replace("no-deletes", "also-added"))
    if not text:
        path = _write(tmp_path, "bad.cedar", "   \n")
    got, out, err = cli("policy", "add", path)
    assert got == code, (out, err)
    assert needle in err and "Traceback" not in out + err
    doc = cli.json("policy", "add", path, expect=code)
    assert set(doc) == {"error", "error_description"} and needle in doc["error_description"]
    assert cli.json("policy", "list")["policies"] == listed  # all or nothing


def test_policy_file_and_remove_errors(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("policy", "add", str(tmp_path / "missing.cedar"))
    assert code == 2 and "cannot read" in err
    code, _, err = cli("policy", "remove", "tether-not-active")
    assert code == 2 and "built-in" in err
    code, _, err = cli("policy", "remove", "ghost")
    assert code == 1 and "no policy ghost" in err


def test_an_expiring_grant_stops_allowing(cli_clock: Clock, cli: Cli) -> None:
    cli.json("agent", "register", "helper", "--owner", "alice@example.com")
    cli.grant(ALICE, "github/*")
    grant = cli.grant("helper", "github/create_issue", "--expires", "1s")
    expires_at = datetime.fromisoformat(grant["expires_at"])
    code, out, err = cli(
        "authorize",
        "--principal",
        "helper",
        "--on-behalf-of",
        ALICE,
        "--action",
        "tools/call",
        "--resource",
        "github/create_issue",
        "--json",
    )
    assert cli_clock() < expires_at  # the clock moves only when the test moves it
    assert code == 0, (code, out, err)
    assert grant["id"] in json.loads(out)["grants"]
    cli_clock.advance(seconds=2)
    denied = cli.authorize(expect=3)
    assert denied["reasons"] == [f"{HELPER} holds no grant for tools/call on github/create_issue"]
    assert grant["id"] not in [g["id"] for g in cli.grants()]  # no longer live


def test_suspend_denies_and_resume_restores(cli: Cli, scenario: dict[str, str]) -> None:
    assert cli.json("agent", "suspend", "helper", "--reason", "odd")["state"] == "suspended"
    denied = cli.authorize(expect=3)
    assert denied["policies"] == ["tether-not-active"]
    assert denied["reasons"] == [f"{HELPER} forbidden by policy tether-not-active"]
    # a suspended agent gets no new grants either
    code, _, err = cli("grant", "add", "helper", "--action", "tools/call", "--resource", "x/y")
    assert code == 2 and "suspended" in err
    assert cli.json("agent", "resume", "helper")["state"] == "active"
    assert cli.authorize()["grants"]


def test_a_retired_agent_is_denied_for_good(cli: Cli, scenario: dict[str, str]) -> None:
    cli.json("agent", "retire", "helper")
    assert "tether-not-active" in cli.authorize(expect=3)["policies"]


def test_broad_grants_need_allow_broad_and_a_reason(cli: Cli, scenario: dict[str, str]) -> None:
    before = cli.grants()
    for argv in (
        ("--action", "*", "--resource", "**"),
        ("--action", "tools/call", "--resource", "*"),
        ("--action", "tools/call", "--resource", "**"),
        ("--action", "*", "--resource", "github/*"),
        ("--action", "*", "--resource", "**", "--allow-broad"),
        ("--action", "*", "--resource", "**", "--allow-broad", "--reason", "   "),
    ):
        code, out, err = cli("grant", "add", "helper", *argv)
        assert code == 2, (argv, out, err)
        assert "--allow-broad" in err and "Traceback" not in out + err
        doc = cli.json("grant", "add", "helper", *argv, expect=2)
        assert "--allow-broad" in doc["error_description"]
    assert cli.grants() == before

    broad = cli.json(
        "grant",
        "add",
        "helper",
        "--action",
        "*",
        "--resource",
        "**",
        "--allow-broad",
        "--reason",
        "break glass",
    )
    assert broad["broad"] is True and broad["reason"] == "break glass"
    listed = cli.grants("--broad")
    assert [(g["id"], g["broad"], g["action"], g["resource"]) for g in listed] == [
        (broad["id"], True, "*", "**")
    ]
    assert listed[0]["suggestion"] == "narrow: a broad grant"
    # and it does what it says: helper may now delete a repo for alice
    allowed = cli.authorize("github/delete_repo")
    assert broad["id"] in allowed["grants"]
    code, out, _ = cli("grant", "list", "--broad")
    assert code == 0 and "broad" in out and broad["id"] in out


def test_grant_reports_unused_expiring_and_revoke(cli: Cli, scenario: dict[str, str]) -> None:
    spare = cli.grant("helper", "github/list_issues")
    soon = cli.grant("helper", "github/get_issue", "--expires", "3d")
    listed = cli.grants()
    assert [g["id"] for g in listed] == [
        scenario["helper"],
        scenario["alice"],
        spare["id"],
        soon["id"],
    ]
    assert all(g["last_used"] is None for g in listed)

    cli.authorize()  # uses helper's and alice's grants
    unused = {g["id"] for g in cli.grants("--unused", "30d")}
    assert unused == {spare["id"], soon["id"]}
    used = {g["id"]: g for g in cli.grants()}
    assert used[scenario["helper"]]["last_used"] is not None
    assert used[spare["id"]]["last_used"] is None
    # a deny uses no grant
    cli.authorize("github/list_issues", "helper", BOB, expect=3)
    assert {g["id"] for g in cli.grants("--unused", "30d")} == unused

    assert [g["id"] for g in cli.grants("--expiring", "7d")] == [soon["id"]]
    assert {g["id"] for g in cli.grants("--expiring", "31d")} == {g["id"] for g in listed}
    assert [g["id"] for g in cli.grants("--principal", ALICE)] == [scenario["alice"]]

    revoked = cli.json("grant", "revoke", scenario["helper"], "--reason", "no longer needed")
    assert revoked["id"] == scenario["helper"] and revoked["revoked_by"] == "admin"
    assert revoked["revoked_at"] is not None
    denied = cli.authorize(expect=3)
    assert denied["reasons"] == [f"{HELPER} holds no grant for tools/call on github/create_issue"]
    assert scenario["helper"] not in [g["id"] for g in cli.grants()]
    code, out, err = cli("grant", "revoke", scenario["helper"])
    assert code == 2 and "already revoked" in err, (out, err)
    code, out, _ = cli("grant", "revoke", spare["id"])
    assert code == 0 and f"revoked {spare['id']}" in out


def test_review_groups_agents_by_owner_with_suggestions(cli: Cli, scenario: dict[str, str]) -> None:
    cli.json("agent", "register", "bobbot", "--owner", "bob@example.com")
    cli.json("agent", "register", "idle", "--owner", "alice@example.com")
    spare = cli.grant("bobbot", "jira/create_ticket")
    cli.authorize()  # helper's grant is used
    owners = cli.json("review")["owners"]
    assert [o["owner"] for o in owners] == ["alice@example.com", "bob@example.com"]
    alice = {a["agent"]: a for a in owners[0]["agents"]}
    assert set(alice) == {HELPER, "spiffe://tether.local/agent/idle"}
    [helper_grant] = alice[HELPER]["grants"]
    assert helper_grant["id"] == scenario["helper"]
    assert helper_grant["suggestion"] == "keep"
    assert helper_grant["last_used"] is not None
    assert alice["spiffe://tether.local/agent/idle"]["grants"] == []
    [bob_agent] = owners[1]["agents"]
    assert bob_agent["state"] == "active"
    [bob_grant] = bob_agent["grants"]
    assert bob_grant["id"] == spare["id"]
    assert bob_grant["suggestion"].startswith("revoke: unused")
    # people's own grants are not part of an agent review
    assert scenario["alice"] not in json.dumps(owners)

    assert cli.json("review", "--owner", "bob@example.com")["owners"] == owners[1:]
    cli.json("agent", "suspend", "helper")
    owners = cli.json("review", "--owner", "alice@example.com")["owners"]
    [suspended] = [a for a in owners[0]["agents"] if a["agent"] == HELPER]
    assert suspended["grants"][0]["suggestion"] == "revoke: the agent is suspended"

    code, out, _ = cli("review")
    assert code == 0 and "alice@example.com" in out and "bob@example.com" in out
    assert "SUGGESTION" in out and "(no grants)" in out


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (
            [
                "grant",
                "add",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--expires",
                "banana",
            ],
            2,
            "invalid duration",
        ),
        (
            [
                "grant",
                "add",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--expires",
                "400d",
            ],
            2,
            "maximum grant lifetime",
        ),
        (
            ["grant", "add", "helper", "--action", "tools/explode", "--resource", "x/y"],
            2,
            "invalid action",
        ),
        (
            ["grant", "add", "helper", "--action", "tools/call", "--resource", "github/../x"],
            2,
            "invalid resource pattern",
        ),
        (
            ["grant", "add", "helper", "--action", "tools/call", "--resource", ".."],
            2,
            "invalid resource pattern",
        ),
        (
            ["grant", "add", "helper", "--action", "tools/call", "--resource", "a//b"],
            2,
            "invalid resource pattern",
        ),
        (
            [
                "grant",
                "add",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--when",
                "this is not cedar",
            ],
            2,
            "invalid condition",
        ),
        (
            [
                "grant",
                "add",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--when",
                "resource.size > 1",
            ],
            2,
            "invalid condition",
        ),
        (
            ["grant", "add", "ghost", "--action", "tools/call", "--resource", "x/y"],
            1,
            "no agent",
        ),
        (
            ["grant", "add", "user:nobody", "--action", "tools/call", "--resource", "x/y"],
            2,
            "invalid email",
        ),
        (["grant", "revoke", "g_0000000000000000"], 1, "no grant"),
        (["grant", "list", "--unused", "banana"], 2, "invalid duration"),
        (["grant", "list", "--expiring", "-1d"], 2, "invalid duration"),
        (
            [
                "authorize",
                "--principal",
                "helper",
                "--action",
                "tools/explode",
                "--resource",
                "x/y",
            ],
            2,
            "invalid action",
        ),
        (
            ["authorize", "--principal", "helper", "--action", "tools/call", "--resource", "../x"],
            2,
            "invalid resource",
        ),
        (
            [
                "authorize",
                "--principal",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "github/*",
            ],
            2,
            "invalid resource",
        ),
        (
            [
                "authorize",
                "--principal",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--context",
                "not json",
            ],
            2,
            "not JSON",
        ),
        (
            [
                "authorize",
                "--principal",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--context",
                "[1]",
            ],
            2,
            "JSON object",
        ),
        (
            [
                "authorize",
                "--principal",
                "helper",
                "--action",
                "tools/call",
                "--resource",
                "x/y",
                "--on-behalf-of",
                "nobody",
            ],
            2,
            "invalid email",
        ),
        (
            ["authorize", "--principal", "Bad Name", "--action", "tools/call", "--resource", "x/y"],
            2,
            "invalid agent name",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else repr(v),
)
def test_bad_input_gets_clear_errors(
    cli: Cli, scenario: dict[str, str], argv: list[str], code: int, needle: str
) -> None:
    before = cli.grants()
    got, out, err = cli(*argv)
    assert got == code, (got, out, err)
    assert needle in err, err
    assert out == "" and "Traceback" not in out + err
    doc = cli.json(*argv, expect=code)
    assert set(doc) == {"error", "error_description"} and needle in doc["error_description"]
    assert cli.grants() == before


def test_an_unknown_agent_is_denied_not_an_error(cli: Cli, scenario: dict[str, str]) -> None:
    denied = cli.authorize("github/create_issue", "ghost", ALICE, expect=3)
    assert denied["reasons"] == ["spiffe://tether.local/agent/ghost is not a registered agent"]


def test_a_permit_guardrail_does_not_stand_in_for_grants(cli: Cli, tmp_path: Path) -> None:
    cli.json("agent", "register", "helper", "--owner", "alice@example.com")
    path = _write(
        tmp_path, "allow-all.cedar", '@id("allow-all")\npermit (principal, action, resource);\n'
    )
    code, out, err = cli("policy", "add", path)
    if code == 0:  # accepted: then it must not allow what no grant allows
        denied = cli.authorize("prod/db", "helper", BOB, expect=3)
        assert denied["grants"] == []
    else:
        assert code == 2 and "permit" in err, (out, err)
