"""Rules on arguments from the command line: ``tether grant add --when`` on
``context.args``, the shipped ``..`` guardrail (docs/policies/no-dotdot.cedar) through
``tether policy add``, and ``tether authorize --args`` to try them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, Cli, initialised

from tether import GrantSpec, Settings, Tether

NO_DOTDOT = Path(__file__).resolve().parents[1] / "docs" / "policies" / "no-dotdot.cedar"
WHEN = 'context.args.path like "/srv/reports/*"'


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    cli = initialised(Cli(capsys))
    cli.json("agent", "register", "fs-bot", "--owner", "alice@example.com")
    return cli


def _authorize(cli: Cli, resource: str, args: dict[str, Any], expect: int) -> dict[str, Any]:
    found: dict[str, Any] = cli.json(
        "authorize",
        "--principal",
        "fs-bot",
        "--action",
        "tools/call",
        "--resource",
        resource,
        "--args",
        json.dumps(args),
        expect=expect,
    )
    return found


def test_a_grant_on_the_path_argument_from_the_issue(cli: Cli) -> None:
    grant = cli.json(
        "grant", "add", "fs-bot", "--action", "tools/call", "--resource", "fs/write_file",
        "--when", WHEN,
    )  # fmt: skip
    assert grant["condition"] == WHEN
    allowed = _authorize(cli, "fs/write_file", {"path": "/srv/reports/q1.txt"}, 0)
    assert allowed["grants"] == [grant["id"]] and allowed["args_digest"]
    denied = _authorize(cli, "fs/write_file", {"path": "/etc/passwd"}, 3)
    assert "holds no grant" in denied["reasons"][0]


def test_the_dotdot_guardrail_is_accepted_and_refuses_dotdot_paths(cli: Cli) -> None:
    added = cli.json("policy", "add", str(NO_DOTDOT))
    assert [p["id"] for p in added["policies"]] == ["no-dotdot"]
    cli.json(
        "grant", "add", "fs-bot", "--action", "tools/call", "--resource", "fs/*",
        "--allow-broad", "--reason", "test",
    )  # fmt: skip
    for path in ("..", "../etc/passwd", "/srv/reports/../../etc/passwd", "/srv/..",
                 "..\\windows", "C:\\srv\\..\\x", "/srv/..\\x"):  # fmt: skip
        denied = _authorize(cli, "fs/write_file", {"path": path, "content": "x"}, 3)
        assert denied["policies"] == ["no-dotdot"], path
    moved = _authorize(cli, "fs/move_file", {"source": "/srv/a", "destination": "/srv/../b"}, 3)
    assert moved["policies"] == ["no-dotdot"]
    for path in ("/srv/reports/q1.txt", "/srv/reports/a..b", "/srv/..hidden/x", "..."):
        assert _authorize(cli, "fs/write_file", {"path": path}, 0)["allowed"], path
    assert _authorize(cli, "fs/move_file", {"source": "/srv/a", "destination": "/srv/b"}, 0)


def test_bad_args_are_a_usage_error(cli: Cli) -> None:
    for bad, why in (("[1]", "JSON object"), ("{", "not JSON")):
        code, out, err = cli(
            "authorize", "--principal", "fs-bot", "--action", "tools/call",
            "--resource", "fs/x", "--args", bad,
        )  # fmt: skip
        assert code == 2 and why in err and "Traceback" not in out + err


def test_no_caller_can_approve_a_held_call_through_authzen(cli: Cli) -> None:
    with Tether.open(Settings.from_env()) as tether:
        tether.grants.add(ADMIN, GrantSpec("fs-bot", "tools/call", "pay/send", approval="owner"))
    for context in ('{"approval": "apr_1"}', "{}"):
        held = cli.json(
            "authorize", "--principal", "fs-bot", "--action", "tools/call",
            "--resource", "pay/send", "--context", context, expect=3,
        )  # fmt: skip
        assert held["approval"] == "owner" and not held["allowed"]
        assert "held for approval by the agent's owner" in held["reasons"][0]
