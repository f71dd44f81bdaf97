"""Fail closed: when the store is unreachable nothing is allowed, and the sweeper persists."""

from __future__ import annotations

import time
from datetime import timedelta

from conftest import ADMIN, spec
from fastapi.testclient import TestClient

from tether import Settings, Tether
from tether.api import create_app
from tether.store import Store
from tether.sweeper import Sweeper


def test_store_down_means_no_access(tmp_path) -> None:
    settings = Settings.load(tmp_path)
    live, result = Tether.init(settings)
    token = result.admin_token
    with TestClient(create_app(live)) as client:
        ok = client.get("/v1/agents", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    live.close()
    down = Tether(settings, Store.open("postgresql+psycopg://nobody@127.0.0.1:1/gone"))
    with TestClient(create_app(down), raise_server_exceptions=False) as client:
        response = client.get("/v1/agents", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    down.close()


def test_sweeper_persists_expiry_with_an_event(make_settings) -> None:
    settings = make_settings()
    tether, _ = Tether.init(settings)
    tether.registry.register(ADMIN, spec("brief", expires_in=timedelta(seconds=1)))
    sweeper = Sweeper(tether.registry, 0.1)
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while not tether.events.list(type="agent.expired") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sweeper.stop()
    [event] = tether.events.list(type="agent.expired")
    assert event.subject == "spiffe://tether.local/agent/brief"
    assert event.actor == "system:lifecycle"
    tether.close()


def test_metrics_count_decisions_and_agents_without_naming_anyone(tmp_path) -> None:
    from tether import AccessRequest, GrantSpec

    tether, _ = Tether.init(Settings.load(tmp_path))
    tether.registry.register(ADMIN, spec("secretive-bot"))
    tether.registry.register(ADMIN, spec("paused"))
    tether.registry.suspend(ADMIN, "paused")
    tether.grants.add(ADMIN, GrantSpec("secretive-bot", "tools/call", "a/b"))
    tether.decide_all(
        [
            AccessRequest.of("secretive-bot", "tools/call", "a/b"),
            AccessRequest.of("secretive-bot", "tools/call", "a/c"),
            AccessRequest.of("secretive-bot", "tools/call", "a/c"),
        ]
    )
    with TestClient(create_app(tether)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(response.text.splitlines())
    assert 'tether_decisions_total{cached="false",decision="allow"} 1' in lines
    assert 'tether_decisions_total{cached="false",decision="deny"} 1' in lines
    assert 'tether_decisions_total{cached="true",decision="deny"} 1' in lines
    assert 'tether_agents{state="active"} 1.0' in lines
    assert 'tether_agents{state="suspended"} 1.0' in lines
    assert f"tether_audit_events {float(tether.events.size())}" in lines
    assert "secretive" not in response.text and "alice" not in response.text
    tether.close()
