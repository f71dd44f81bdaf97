"""Two ``tether detect run`` processes on one PostgreSQL: one alert per anomaly, and when
the active one dies (SIGKILL, mid-stream) the other takes over without losing an event or
raising an alert twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import spec

from tether.audit.record import Entry
from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether

pytestmark = pytest.mark.slow

ADMIN = Caller.admin()
AGENTS = [f"orphan-{i}" for i in range(6)]
DETECT = "from tether.cli.main import main; main()"


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _detector(home: Path, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_DB": url}
    env.pop("TETHER_URL", None)
    return subprocess.Popen(
        [sys.executable, "-c", DETECT, "detect", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _act(tether: Tether, agent: str, n: int) -> None:
    agent_id = tether.registry.agent_id(agent)
    for i in range(n):
        tether.events.record(
            Entry.of(
                "decision",
                actor=agent_id,
                subject=agent_id,
                chain=(agent_id,),
                action="tools/call",
                resource=f"files/tool_{i % 3}",
                decision="allow",
            )
        )


def test_two_detectors_on_one_postgresql_raise_one_alert_per_anomaly(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    home = tmp_path / "home"
    settings = Settings.load(home, db_url=postgres_schema_url, unowned_grace="30d")
    tether, _ = Tether.init(settings)
    processes: list[subprocess.Popen[str]] = []
    try:
        for name in AGENTS:
            tether.registry.register(ADMIN, spec(name, owner="bob@example.com"))
        tether.registry.offboard_owner(ADMIN, "bob@example.com", reason="left")
        processes = [_detector(home, postgres_schema_url) for _ in range(2)]
        for name in AGENTS[:3]:
            _act(tether, name, 20)
        _until(lambda: len(tether.alerts.list(ADMIN)) >= 3, "the first three agents' alerts")
        # the one holding the detector lock dies mid-stream; the other must take over
        holder = _holder(tether, processes)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        for name in AGENTS[3:]:
            _act(tether, name, 20)
        for name in AGENTS:  # the first ones again: no second alert today
            _act(tether, name, 5)
        size = tether.events.size()
        _until(lambda: tether.detector.cursor() >= size, "the detector to read every event")
        alerts = [a for a in tether.alerts.list(ADMIN) if a.detector == "unowned_actor"]
        assert sorted(a.agent for a in alerts) == sorted(
            tether.registry.agent_id(name) for name in AGENTS
        )
        assert len({a.id for a in alerts}) == len(alerts) == len(AGENTS)
        raised = tether.events.list(type="alert.raised")
        assert len(raised) == len(AGENTS)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
        tether.close()


def _holder(tether: Tether, processes: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """The detector process holding the lock: PostgreSQL says which connection holds the
    advisory lock (its client port), /proc says which process owns that connection."""
    from sqlalchemy import text

    from tether.store.locks import StoreLock

    key = StoreLock(tether.store, "job:detect").key
    with tether.store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND "
                "((l.classid::bigint << 32) | l.objid::bigint) = :key"
            ),
            {"key": key},
        ).all()
    ports = {row.client_port for row in rows}
    for process in processes:
        if ports & _client_ports(process.pid):
            return process
    raise AssertionError(f"no detector process holds the lock (ports {ports})")


def _client_ports(pid: int) -> set[int]:
    """Local TCP ports of ``pid``'s connections to PostgreSQL (from /proc)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
