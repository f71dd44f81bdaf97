"""Upstream sessions are supervised: one process per stdio upstream, started on first use,
restarted when it dies (also while idle: a ping finds it), backed off when it cannot
start, and stopped cleanly when the gateway stops or the upstream is removed."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import anyio
import pytest

from tether.callers import Caller
from tether.core import Tether
from tether.errors import NotFound, UpstreamUnavailable
from tether.gateway import supervisor
from tether.gateway.supervisor import Supervisor
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"


@pytest.fixture(autouse=True)
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "WATCH", 0.2)
    monkeypatch.setattr(supervisor, "PROBE_MAX", 0.4)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive either
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _pid(sup: Supervisor, name: str) -> int:
    session = await sup.get(name)
    result = await session.call_tool("pid", {})
    assert not result.get("isError"), result
    return int(result["structuredContent"]["result"])


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await anyio.sleep(0.05)


@pytest.mark.slow
def test_one_process_per_upstream_restarted_when_it_dies_while_idle(tether: Tether) -> None:
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))

    async def run() -> tuple[int, int]:
        async with Supervisor(tether).running() as sup:
            first = await _pid(sup, "test")
            assert await _pid(sup, "test") == first  # the same process serves every request
            os.kill(first, signal.SIGKILL)  # dies while nobody is calling
            await _until(lambda: sup.restarts("test") >= 1)
            await _until(lambda: sup.opened("test") is not None)
            second = await _pid(sup, "test")  # the first call after the death succeeds
            assert second != first and _alive(second) and not _alive(first)
        return first, second

    _, second = anyio.run(run)
    assert not _alive(second)  # stopped cleanly with the gateway


@pytest.mark.slow
def test_a_command_that_cannot_start_is_refused_with_why_and_backed_off(
    tether: Tether, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    script = f"echo started >> {starts}; exit 1"
    tether.upstreams.add(ADMIN, UpstreamSpec("broken", command=f"sh -c '{script}'"))
    tether.upstreams.add(ADMIN, UpstreamSpec("missing", command="/nonexistent/mcp-server"))

    async def run() -> list[str]:
        refusals: list[str] = []
        async with Supervisor(tether).running() as sup:
            began = time.monotonic()
            while time.monotonic() - began < 1.0:  # a client retrying in a tight loop
                for name in ("broken", "missing"):
                    with pytest.raises(UpstreamUnavailable) as caught:
                        await sup.get(name)
                    refusals.append(caught.value.description)
                await anyio.sleep(0.01)
            with pytest.raises(NotFound):
                await sup.get("nobody")
        return refusals

    refusals = anyio.run(run)
    assert len(refusals) > 40
    # 0.25 s doubling: a handful of starts in a second, not one per request
    assert 2 <= len(starts.read_text().splitlines()) <= 5
    missing = [r for r in refusals if "missing" in r]
    assert "FileNotFoundError" in missing[0] and "next try in" in missing[0]


@pytest.mark.slow
def test_removing_an_upstream_stops_its_process(tether: Tether) -> None:
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))

    async def run() -> None:
        async with Supervisor(tether).running() as sup:
            pid = await _pid(sup, "test")
            await anyio.to_thread.run_sync(tether.upstreams.remove, ADMIN, "test")
            await _until(lambda: not _alive(pid))
            with pytest.raises(NotFound):
                await sup.get("test")

    anyio.run(run)
