"""A kill reaches the egress proxy of another process: two Tethers on one PostgreSQL
store, the agent's requests going through process B (a real ``tether up``), the kill done
in process A (this test's). B cuts off the request it has in flight (403
``agent_killed``, its API answer never shown) and refuses the next one."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, spec
from helpers.api_standin import standin
from helpers.processes import ServerProcess, free_port

from tether import Settings, Tether
from tether.grants import GrantSpec
from tether.upstreams.destinations import DestinationSpec

SRC = Path(__file__).resolve().parents[1] / "src"
UP = [sys.executable, "-c", "from tether.cli.main import main; main()", "up", "--proxy-port", "0"]
SECRET = "standin-credential-for-process-b-0000"


@pytest.mark.slow
def test_a_kill_in_one_process_cuts_off_the_agent_in_another(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "tether.toml").write_text(
        f'issuer = "http://127.0.0.1:{port}"\ndecision_staleness_ms = 60000\n[egress]\nport = 0\n'
    )
    settings = Settings.load(home, db_url=postgres_schema_url)
    first, _ = Tether.init(settings)
    first.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {
        "TETHER_HOME": str(home),
        "TETHER_DB": postgres_schema_url,
        "PYTHONPATH": str(SRC),
        "EGRESS_KEY": SECRET,
    }
    with standin() as api, Tether.open(settings) as a:
        a.destinations.add(
            ADMIN,
            DestinationSpec(
                "api", base=api.url, credentials=["x-api-key=env:EGRESS_KEY"], internal=True
            ),
        )
        a.registry.register(ADMIN, spec("bot"))
        a.grants.add(ADMIN, GrantSpec("bot", "GET", "api/**"))
        agent = a.registry.get(ADMIN, "bot")
        token = a.tokens.client_credentials(agent, f"{a.settings.issuer}/egress/api", None, None)
        bearer = {"Authorization": f"Bearer {token.access_token}"}
        b = ServerProcess([*UP, "--port", str(port)], env, port)
        try:
            with httpx.Client(base_url=b.url, timeout=30, headers=bearer) as client:
                for i in range(3):  # the agent's stream of requests through B
                    read = client.get(f"/egress/api/items/{i}")
                    assert read.status_code == 200, read.text
                assert all(r.header("x-api-key") == SECRET for r in api.received)
                seen: dict[str, Any] = {}

                def slow() -> None:
                    seen["answer"] = client.get("/egress/api/slow?ms=5000")

                caller = threading.Thread(target=slow)
                started = time.monotonic()
                caller.start()
                while len(api.received) < 4:
                    assert time.monotonic() - started < 20, b.output()
                    time.sleep(0.01)
                a.killswitch.kill(ADMIN, "bot", reason="cut it off")  # in process A
                after = client.get("/egress/api/items/4")  # B's next request
                caller.join(30)
            assert after.status_code == 401, after.text
            answer = seen["answer"]
            assert answer.status_code == 403 and answer.json()["error"] == "agent_killed"
            assert time.monotonic() - started < 5  # cut off, not the API's late answer
            assert [r.path for r in api.received][-1] == "/slow"  # nothing after the kill
        finally:
            b.stop()
        a.events.flush()
        results = [e.detail["outcome"] for e in a.events.list(type="egress.result")]
        assert results == ["ok"] * 3 + ["cancelled"], results
