"""The CLI in local mode (in-process over the HTTP API): outputs, exit codes, key files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Cli, Clock, initialised
from cryptography.hazmat.primitives import serialization

from tether.agent_keys import parse_public_key


@pytest.fixture
def cli(cli_env: Path, capsys) -> Cli:
    return initialised(Cli(capsys))


def test_uninitialised_home_says_run_init(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "nowhere"))
    monkeypatch.delenv("TETHER_DB", raising=False)
    code, out, err = Cli(capsys)("agent", "list")
    assert code == 1 and "tether init" in err and out == ""


def test_second_init_keeps_token(cli: Cli) -> None:
    doc = cli.json("init")
    assert doc["created"] is False and doc["admin_token"] is None


def test_register_without_owner_is_refused(cli: Cli, tmp_path) -> None:
    code, out, err = cli("agent", "register", "x")
    assert code == 2
    assert "owner" in err and "--owner" in err
    assert out == ""
    assert cli.json("agent", "list") == {"agents": []}
    assert not (tmp_path / "home" / "keys" / "x.pem").exists()
    doc = cli.json("agent", "register", "x", expect=2)
    assert doc["error"] == "invalid_request" and "owner" in doc["error_description"]


def test_register_writes_private_key_once_with_mode_0600(cli: Cli, tmp_path, db_url) -> None:
    key_out = tmp_path / "helper.pem"
    doc = cli.json(
        "agent",
        "register",
        "helper",
        "--owner",
        "alice@example.com",
        "--kind",
        "copilot",
        "--purpose",
        "helps",
        "--label",
        "team=a",
        "--expires",
        "30d",
        "--key-out",
        str(key_out),
    )
    assert doc["id"] == "spiffe://tether.local/agent/helper"
    assert doc["key_file"] == str(key_out)
    assert doc["labels"] == {"team": "a"} and doc["kind"] == "copilot"
    pem = key_out.read_bytes()
    assert stat.S_IMODE(key_out.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(pem, None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(public_pem.decode()) == doc["public_key"]
    assert "PRIVATE" not in json.dumps(doc)
    # The private key is in no table.
    engine = sa.create_engine(db_url)
    body = pem.decode().split("-----")[2].replace("\n", "")
    with engine.connect() as conn:
        for table in ("agents", "events", "admin_tokens"):
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                assert body[:40] not in repr(tuple(row))
    engine.dispose()
    # The key file is never overwritten by a second registration.
    code, _, err = cli(
        "agent", "register", "other", "--owner", "a@example.com", "--key-out", str(key_out)
    )
    assert code == 1 and "already exists" in err
    assert key_out.read_bytes() == pem
    assert [a["name"] for a in cli.json("agent", "list")["agents"]] == ["helper"]


def test_default_key_path_is_in_home(cli: Cli, tmp_path) -> None:
    doc = cli.json("agent", "register", "bot", "--owner", "a@example.com")
    path = tmp_path / "home" / "keys" / "bot.pem"
    assert doc["key_file"] == str(path) and path.exists()


def test_rotate_key_replaces_file_and_public_key(cli: Cli, tmp_path) -> None:
    first = cli.json("agent", "register", "bot", "--owner", "a@example.com")
    path = Path(first["key_file"])
    old_pem = path.read_bytes()
    rotated = cli.json(
        "agent", "rotate-key", "spiffe://tether.local/agent/bot", "--reason", "drill"
    )
    assert rotated["public_key"] != first["public_key"]
    assert path.read_bytes() != old_pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(path.read_bytes(), None)
    raw = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(raw.decode()) == rotated["public_key"]
    assert list(path.parent.glob(".*")) == []


def test_expired_agent_shows_expired_and_resume_is_refused(cli_clock: Clock, cli: Cli) -> None:
    cli.json("agent", "register", "short", "--owner", "a@example.com", "--expires", "2s")
    assert cli.json("agent", "show", "short")["state"] == "active"
    cli_clock.advance(seconds=3)
    assert cli.json("agent", "show", "short")["state"] == "expired"
    code, out, err = cli("agent", "resume", "short")
    assert code == 3 and "expired" in err and out == ""


def test_offboard_then_unowned_then_suspended(cli_clock: Clock, cli: Cli, tmp_path) -> None:
    (tmp_path / "home" / "tether.toml").write_text('unowned_grace = "1s"\n')
    for name in ("a1", "a2"):
        cli.json("agent", "register", name, "--owner", "alice@example.com")
    cli.json("agent", "register", "b1", "--owner", "bob@example.com")
    done = cli.json("owner", "offboard", "alice@example.com", "--reason", "left")
    assert sorted(a["name"] for a in done["agents"]) == ["a1", "a2"]
    unowned = cli.json("agent", "list", "--unowned")["agents"]
    assert [(a["name"], a["owner"], a["unowned"]) for a in unowned] == [
        ("a1", None, True),
        ("a2", None, True),
    ]
    cli_clock.advance(seconds=1.5)
    states = {a["name"]: a["state"] for a in cli.json("agent", "list")["agents"]}
    assert states == {"a1": "suspended", "a2": "suspended", "b1": "active"}
    code, out, _ = cli("agent", "list", "--unowned")
    assert code == 0 and "(unowned)" in out and "a1" in out


def test_lifecycle_commands_and_exit_codes(cli: Cli) -> None:
    cli.json("agent", "register", "x", "--owner", "a@example.com")
    assert cli.json("agent", "suspend", "x", "--reason", "odd")["state"] == "suspended"
    assert cli.json("agent", "suspend", "x", expect=3)["error"] == "invalid_state"
    assert cli.json("agent", "resume", "x")["state"] == "active"
    assert cli.json("agent", "set-owner", "x", "Bob@Example.com")["owner"] == "bob@example.com"
    assert cli.json("agent", "list", "--owner", "bob@example.com")["agents"][0]["name"] == "x"
    assert cli.json("agent", "retire", "x")["state"] == "retired"
    assert cli.json("agent", "list", "--state", "retired")["agents"][0]["name"] == "x"
    assert cli.json("agent", "resume", "x", expect=3)["error"] == "invalid_state"


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["agent", "register", "a/b", "--owner", "a@example.com"], 2, "invalid agent name"),
        (["agent", "register", "..", "--owner", "a@example.com"], 2, "invalid agent name"),
        (
            ["agent", "register", "ok", "--owner", "a@example.com", "--expires", "banana"],
            2,
            "invalid duration",
        ),
        (
            ["agent", "register", "ok", "--owner", "a@example.com", "--expires", "999d"],
            2,
            "maximum",
        ),
        (["agent", "register", "ok", "--owner", "nobody"], 2, "invalid email"),
        (
            ["agent", "register", "ok", "--owner", "a@example.com", "--kind", "robot"],
            2,
            "invalid kind",
        ),
        (
            ["agent", "register", "ok", "--owner", "a@example.com", "--label", "novalue"],
            2,
            "KEY=VALUE",
        ),
        (
            ["agent", "register", "ok", "--owner", "a@example.com", "--parent", "ghost"],
            1,
            "no agent",
        ),
        (["agent", "show", "ghost"], 1, "no agent"),
        (["agent", "show", "spiffe://evil.example/agent/x"], 2, "trust domain"),
        (["agent", "list", "--state", "sleepy"], 2, "invalid state"),
        (["agent", "suspend", "ghost"], 1, "no agent"),
        (["owner", "offboard", "not-an-email"], 2, "invalid email"),
    ],
)
def test_bad_input_gets_clear_errors(cli: Cli, argv, code, needle) -> None:
    got, out, err = cli(*argv)
    assert got == code, (got, out, err)
    assert needle in err and "Traceback" not in err + out
    assert cli.json("agent", "list") == {"agents": []}
    doc = cli.json(*argv, expect=code)
    assert set(doc) == {"error", "error_description"} and needle in doc["error_description"]


def test_usage_errors_exit_2(cli: Cli) -> None:
    code, _, err = cli("agent", "frobnicate")
    assert code == 2 and "No such command" in err
    code, _, _ = cli("agent", "register")
    assert code == 2


def test_human_output_is_a_table(cli: Cli) -> None:
    cli.json("agent", "register", "x", "--owner", "a@example.com", "--kind", "chatbot")
    code, out, _ = cli("agent", "list")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "KIND", "OWNER", "STATE", "EXPIRES", "PARENT"]
    assert row.split()[:4] == ["x", "chatbot", "a@example.com", "active"]
