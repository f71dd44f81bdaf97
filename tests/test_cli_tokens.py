"""The token commands end to end in local mode, with the development identity provider."""

from __future__ import annotations

import json

import pytest
from conftest import with_dev_idp

from tether.cli.main import run


@pytest.fixture
def cli(cli_env, capsys):
    run_cli = with_dev_idp(cli_env, capsys, 'resource_servers = ["http://127.0.0.1:8700/mcp/jira"]')

    def call(*argv: str) -> tuple[int, str, str]:
        code, out, err = run_cli(*argv)
        return code, out.strip(), err

    return call


def test_person_to_agent_to_agent_from_the_cli(cli) -> None:
    for name in ("planner", "worker"):
        assert cli("agent", "register", name, "--owner", "alice@example.com")[0] == 0
    for args in (
        ("user:alice@example.com", "--action", "tools/call", "--resource", "jira/*"),
        ("planner", "--action", "tools/call", "--resource", "jira/*"),
        ("planner", "--action", "delegate", "--resource", "worker"),
        ("worker", "--action", "tools/call", "--resource", "jira/create"),
    ):
        assert cli("grant", "add", *args)[0] == 0
    code, person, err = cli("dev", "user-token", "alice@example.com")
    assert code == 0
    assert "development" in err
    code, hop1, _ = cli(
        "token",
        "exchange",
        "--subject-token",
        person,
        "--actor",
        "planner",
        "--audience",
        "spiffe://tether.local/agent/worker",
    )
    assert code == 0
    code, hop2, _ = cli(
        "token",
        "exchange",
        "--subject-token",
        hop1,
        "--actor",
        "worker",
        "--audience",
        "http://127.0.0.1:8700/mcp/jira",
    )
    assert code == 0
    code, out, _ = cli("token", "inspect", hop2, "--json")
    assert code == 0
    claims = json.loads(out)
    assert claims["chain"] == [
        "user:alice@example.com",
        "spiffe://tether.local/agent/planner",
        "spiffe://tether.local/agent/worker",
    ]
    assert claims["scope"] == "tools/call:jira/create"
    ok = cli(
        "authorize",
        "--token",
        hop2,
        "--principal",
        "worker",
        "--action",
        "tools/call",
        "--resource",
        "jira/create",
    )
    assert ok[0] == 0
    outside = cli(
        "authorize",
        "--token",
        hop2,
        "--principal",
        "worker",
        "--action",
        "tools/call",
        "--resource",
        "jira/delete",
    )
    assert outside[0] == 3
    assert "outside the token's scope" in outside[1]
    # the agent's own token, and a rotation that keeps it valid
    code, own, _ = cli("token", "issue", "worker", "--audience", "http://127.0.0.1:8700/mcp/jira")
    assert code == 0
    assert cli("keys", "rotate")[0] == 0
    assert cli("token", "inspect", own)[0] == 0
    assert cli("token", "inspect", own[:-6] + "AAAAAA")[0] == 4
    code, _, err = cli(
        "token",
        "issue",
        "worker",
        "--audience",
        "http://127.0.0.1:8700/mcp/jira",
        "--scope",
        "tools/call:jira/delete",
    )
    assert code == 3
    assert "beyond" in err


def test_dev_idp_is_off_unless_asked(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "plain"))
    monkeypatch.delenv("TETHER_DB", raising=False)
    monkeypatch.delenv("TETHER_URL", raising=False)
    assert run(["init"]) == 0
    capsys.readouterr()
    assert run(["dev", "user-token", "alice@example.com"]) == 1
    assert "off" in capsys.readouterr().err
