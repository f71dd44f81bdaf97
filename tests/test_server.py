"""Real servers: `make run` serves the demo; the CLI talks to a server through TETHER_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.processes import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
TETHER = str(Path(sys.executable).with_name("tether"))
pytestmark = pytest.mark.slow


def env_for(home: Path, db_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_HOME"] = str(home)
    if db_url:
        env["TETHER_DB"] = db_url
    return env


@pytest.fixture
def demo(tmp_path: Path, db_url: str) -> Iterator[tuple[ServerProcess, str, dict[str, str]]]:
    """`make run` exactly as the README says, on a free port and a temporary home."""
    port = free_port()
    env = env_for(tmp_path / "home", db_url)
    argv = ["make", "--no-print-directory", "run", f"PORT={port}", "PROXY_PORT=0"]
    server = ServerProcess(argv, env, port, cwd=ROOT)
    token = (tmp_path / "home" / "admin.token").read_text().strip()
    try:
        yield server, token, env
    finally:
        out = server.stop()
        assert token in out  # the admin token was printed at start-up
        assert "Try:" in out


def test_make_run_serves_the_demo(demo) -> None:
    server, token, _ = demo
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(server.url + "/v1/agents").status_code == 401
    response = httpx.get(server.url + "/v1/agents", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    agents = {a["name"]: a for a in response.json()["agents"]}
    assert len(agents) >= 5
    assert len({a["kind"] for a in agents.values()}) >= 4
    assert len({a["owner"] for a in agents.values() if a["owner"]}) >= 2
    assert [a["name"] for a in agents.values() if a["unowned"]] == ["legacy-scraper"]
    assert [a["name"] for a in agents.values() if a["state"] == "expired"] == ["q3-report-bot"]
    assert agents["triage-worker"]["parent"] == "spiffe://tether.local/agent/support-bot"
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/agents" in spec["paths"]


def test_cli_over_tether_url(demo) -> None:
    server, token, env = demo
    remote = {
        **env,
        "TETHER_URL": server.url,
        "TETHER_TOKEN": token,
        "TETHER_HOME": env["TETHER_HOME"],
    }

    def tether(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TETHER, *argv], env=remote, capture_output=True, text=True, timeout=60
        )

    listed = tether("agent", "list", "--unowned", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["name"] for a in json.loads(listed.stdout)["agents"]] == ["legacy-scraper"]
    shown = tether("agent", "show", "spiffe://tether.local/agent/support-bot", "--json")
    assert json.loads(shown.stdout)["owner"] == "alice@example.com"
    resumed = tether("agent", "resume", "q3-report-bot")
    assert resumed.returncode == 3 and "expired" in resumed.stderr
    bad = tether("agent", "register", "a/b", "--owner", "x@example.com")
    assert bad.returncode == 2 and "invalid agent name" in bad.stderr
    missing = tether("agent", "register", "newbie")
    assert missing.returncode == 2 and "owner" in missing.stderr
    wrong = subprocess.run(
        [TETHER, "agent", "list"],
        env={**remote, "TETHER_TOKEN": "tta_wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1 and "invalid bearer token" in wrong.stderr


def test_http_errors_are_json_never_500(demo) -> None:
    server, token, _ = demo
    auth = {"Authorization": f"Bearer {token}"}
    cases = [
        ("POST", "/v1/agents", b"{broken", 400),
        ("POST", "/v1/agents", b"[]", 400),
        ("GET", "/v1/agents/ghost", None, 404),
        ("GET", "/v1/agents/..%2F..%2Fetc", None, 400),
        ("GET", "/v1/nothing-here", None, 404),
        ("PUT", "/v1/agents", None, 405),
        ("GET", "/v1/agents?state=sleepy", None, 400),
    ]
    for method, path, body, status in cases:
        response = httpx.request(
            method,
            server.url + path,
            content=body,
            headers={**auth, "Content-Type": "application/json"},
        )
        assert response.status_code == status, (method, path, response.text)
        assert set(response.json()) == {"error", "error_description"}
