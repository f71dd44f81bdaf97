"""Budgets across processes: two real ``tether up`` servers on one PostgreSQL store count
into the same windows, so calls alternating between them through the gateway
(``/mcp/test``, a real upstream MCP server) exhaust one budget, and the refusal names the
limit and when it resets, whichever server refuses."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN, spec
from helpers.mcp_wire import CALL, INIT, INITIALISED, mcp_headers
from helpers.processes import ServerProcess, free_port
from sqlalchemy import select

from tether import Settings, Tether
from tether.budgets import window_start
from tether.limits import parse_limit
from tether.store import budget_usage
from tether.upstreams.servers import UpstreamSpec

SRC = Path(__file__).resolve().parents[1] / "src"
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
UP = [sys.executable, "-c", "from tether.cli.main import main; main()", "up"]


def _env(home: Path, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return env | {"TETHER_HOME": str(home), "TETHER_DB": db, "PYTHONPATH": str(SRC)}


def _until(check: Callable[[], object], seconds: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def _session(client: httpx.Client, token: str) -> str:
    opened = client.post("/mcp/test", json=INIT, headers=mcp_headers(token))
    assert opened.status_code == 200, opened.text
    sid = opened.headers["mcp-session-id"]
    client.post("/mcp/test", json=INITIALISED, headers=mcp_headers(token, sid))
    return sid


def _call(client: httpx.Client, token: str, sid: str, text: str) -> dict:
    body = CALL | {"params": {"name": "echo", "arguments": {"text": text}}}
    said = client.post("/mcp/test", json=body, headers=mcp_headers(token, sid))
    assert said.status_code == 200, said.text
    result: dict = said.json()["result"]
    return result


def _text(result: dict) -> str:
    return " ".join(c.get("text", "") for c in result["content"])


@pytest.mark.slow
def test_a_budget_is_shared_by_two_server_processes_on_postgresql(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    ports = free_port(), free_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "tether.toml").write_text(f'issuer = "http://127.0.0.1:{ports[0]}"\n')
    settings = Settings.load(home, db_url=postgres_schema_url)
    first, result = Tether.init(settings)
    with first:
        first.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
        first.registry.register(ADMIN, spec("helper"))
    admin = {"Authorization": f"Bearer {result.admin_token}"}
    env = _env(home, postgres_schema_url)
    servers = [
        ServerProcess([*UP, "--port", str(port), "--proxy-port", "0"], env, port) for port in ports
    ]
    clients = [httpx.Client(base_url=s.url, timeout=30) for s in servers]
    try:
        # the grant, with its budgets, given through one server's API
        body = {
            "principal": "helper",
            "action": "tools/call",
            "resource": "test/echo",
            "limits": ["calls=3/1d", "bytes=1MB/1d"],
        }
        added = clients[1].post("/v1/grants", json=body, headers=admin)
        assert added.status_code == 201, added.text
        g = added.json()["id"]
        assert added.json()["limits"] == ["calls=3/1d", "bytes=1MB/1d"]
        with Tether.open(settings) as issuer:
            agent = issuer.registry.get(ADMIN, "helper")
            resource = f"{issuer.settings.issuer}/mcp/test"
            token = issuer.tokens.client_credentials(agent, resource, None, None).access_token

        sids = [_session(c, token) for c in clients]
        said = [_call(clients[i % 2], token, sids[i % 2], f"call {i}") for i in range(3)]
        assert [_text(r) for r in said] == ["call 0", "call 1", "call 2"]
        assert not any(r.get("isError") for r in said)
        for i in (0, 1):  # the fourth call, and a fifth, through either server
            refused = _call(clients[i], token, sids[i], "one too many")
            now = datetime.now(UTC)
            assert refused["isError"], refused
            reason = _text(refused)
            resets = window_start(now, parse_limit("calls=3/1d")) + parse_limit("calls=3/1d").window
            match = re.fullmatch(
                rf"denied: budget exhausted: grant {g} allows calls=3/1d; 0 left until "
                rf"{resets:%Y-%m-%dT%H:%M:%SZ} \(in (\d+)s\)",
                reason,
            )
            assert match, reason
            assert abs(int(match[1]) - math.ceil((resets - now).total_seconds())) <= 5

        with Tether.open(settings) as watcher:
            # both servers' decisions are on record, with the charge each made
            decisions = watcher.events.list(type="decision")
            assert [d.decision for d in decisions] == ["allow"] * 3 + ["deny"] * 2
            used = [d.detail["budget"] for d in decisions]
            calls = [next(c for c in u if c["limit"] == "calls=3/1d") for u in used]
            assert [c["used"] for c in calls[:3]] == [1, 2, 3]
            assert all(c["left"] == 0 for c in calls[3:])

            def counted() -> dict[str, int]:
                with watcher.store.read() as conn:
                    rows = conn.execute(select(budget_usage)).all()
                return {r.metric: r.used for r in rows if r.grant_id == g}

            # each server counted the bytes of the results it returned (both written
            # within moments: results and their bytes are not waited for)
            _until(lambda: len(watcher.events.list(type="tool.result")) == 3, what="results")
            results = watcher.events.list(type="tool.result")
            _until(
                lambda: counted().get("bytes/86400") == sum(r.detail["size"] for r in results),
                what="both servers' result bytes",
            )
            assert counted()["calls/86400"] == 3
    finally:
        for client in clients:
            client.close()
        outputs = [server.stop() for server in servers]
    assert all("Traceback" not in out for out in outputs), outputs
