"""The stdio bridge's cost: per-call latency of a ``tools/call`` through ``tether gateway
stdio`` (stdio -> HTTP -> Tether -> upstream) vs today's alternatives, in the same run.

A Tether served by ``tether up`` (a process of its own, SQLite in a temporary
``TETHER_HOME``) holds one agent, ``bench``, granted ``tools/call`` on ``echo`` of the test
server ``tests/helpers/mcp_test_server.py`` (official SDK, stdio). Paths, each an
``mcp.Client`` (``mode="legacy"``: the initialize handshake, as desktop clients speak it)
calling ``echo`` with a fresh text that is checked on every answer:

- ``bridge``: the client launches ``tether gateway stdio test`` with the README's
  environment (``TETHER_URL`` and the agent's key): stdio -> the bridge -> HTTP ->
  ``/mcp/test`` of the server -> the upstream.
- ``in-process``: the stdio face as it was before the bridge (it opened the store itself
  and enforced in its own process), from the last commit before the bridge (found with
  ``git log -S``, extracted with ``git archive`` into a temporary folder) on a store of its
  own that this old code initialises; left out, with the reason on stderr, when git or the
  old tree is not at hand.
- ``http``: the same client straight to ``/mcp/test`` over streamable HTTP with a token the
  agent got as the bridge does (what the bridge adds is its own hop).
- ``upstream``: the same client to a process of the test server alone (no Tether at all).

Rows are p50/p99 µs of the bridge, each with one of the others as the baseline, over N
sequential calls per path, the paths taking turns in blocks of 25 calls after a warm-up.

    .venv/bin/python bench/stdio_bridge.py [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
from _common import TIMES, Result, expect, main, result
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tether.gateway.stdio import AgentTokens, BridgeConfig

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "helpers" / "mcp_test_server.py"
TETHER = str(Path(sys.executable).with_name("tether"))
CLI = "from tether.cli.main import main; main()"
AGENT, OWNER, TOOL, NAME = "bench", "alice@example.com", "echo", "test"
WARM, BLOCK = 20, 25
QUICK_SAMPLES, FULL_SAMPLES = 200, 2000
Call = Callable[[int], Awaitable[None]]
GIT_LOG = ["git", "-C", str(ROOT), "log", "--format=%H", "-S", "class Bridge", "--reverse"]


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p`` percentile of ``samples`` (seconds), in µs."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tether_cli(src: Path, env: dict[str, str], *argv: str) -> None:
    """The CLI of the Tether in ``src`` (local mode on ``env``'s TETHER_HOME)."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, *argv],
        env=env | {"PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    expect(done.returncode == 0, f"tether {' '.join(argv)}: {done.stderr.strip()}")


def seed(src: Path, home: Path) -> dict[str, str]:
    """A TETHER_HOME set up by the Tether in ``src``: the upstream, the agent (its key in
    ``home/bench.pem``) and its grant. The environment that reaches it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_HOME"] = str(home)
    tether_cli(src, env, "init")
    tether_cli(src, env, "gateway", "add", NAME, "--command", f"{sys.executable} {SERVER}")
    key = home.parent / f"{home.name}-bench.pem"
    tether_cli(src, env, "agent", "register", AGENT, "--owner", OWNER, "--key-out", str(key))
    tether_cli(src, env, "grant", "add", AGENT, "--action", "tools/call", "--resource", "test/echo")
    return env | {"TETHER_AGENT_KEY": str(key), "PYTHONPATH": str(src)}


@contextlib.contextmanager
def served(env: dict[str, str], log: Path) -> Iterator[str]:
    """``tether up`` on ``env``'s TETHER_HOME, on a free port: its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [TETHER, "up", "--port", str(port), "--proxy-port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tether up did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def old_source(into: Path) -> Path | None:
    """``src`` of the last commit before the bridge, or None (and why, on stderr)."""
    try:
        log = subprocess.run(
            [*GIT_LOG, "--", "src/tether/gateway/stdio.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not log:
            raise RuntimeError("no commit introduces the bridge")
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", f"{log[0]}^", "src"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"note: the in-process stdio face is not measured: {exc}", file=sys.stderr)
        return None
    return into / "src"


async def agent_token(url: str, key: str) -> str:
    """A token for /mcp/test, got as the bridge gets it."""
    config = BridgeConfig.from_env(NAME, {"TETHER_URL": url, "TETHER_AGENT_KEY": key})
    async with httpx2.AsyncClient() as http:
        tokens = AgentTokens(http, config)
        await tokens.discover()
        return await tokens.bearer()


def stdio(command: str, args: list[str], env: dict[str, str] | None = None) -> Any:
    return StdioServerParameters(command=command, args=args, env=env)


def echo(client: Client, what: str) -> Call:
    async def call(i: int) -> None:
        said = await client.call_tool(TOOL, {"text": f"call {i}"})
        text = " ".join(getattr(c, "text", "") for c in said.content)
        expect(not said.is_error and text == f"call {i}", f"{what}: answered {text!r}")

    return call


async def latencies(calls: dict[str, Call], samples: int) -> dict[str, list[float]]:
    """Seconds per call of each path: warmed up, then taking turns in blocks."""
    for call in calls.values():
        for i in range(WARM):
            await call(i)
    times: dict[str, list[float]] = {name: [] for name in calls}
    done = 0
    while done < samples:
        n = min(BLOCK, samples - done)
        for name, call in calls.items():
            for i in range(done, done + n):
                start = time.perf_counter()
                await call(i)
                times[name].append(time.perf_counter() - start)
        done += n
    return times


@contextlib.asynccontextmanager
async def paths(
    url: str, env: dict[str, str], old_env: dict[str, str] | None
) -> AsyncIterator[dict[str, Call]]:
    token = await agent_token(url, env["TETHER_AGENT_KEY"])
    bridge_env = {
        "TETHER_URL": url,
        "TETHER_AGENT_KEY": env["TETHER_AGENT_KEY"],
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": env["PYTHONPATH"],
    }
    async with contextlib.AsyncExitStack() as stack:

        async def client(transport: Any) -> Client:
            return await stack.enter_async_context(Client(transport, mode="legacy"))

        calls = {
            "bridge": echo(
                await client(stdio(TETHER, ["gateway", "stdio", NAME], bridge_env)), "bridge"
            )
        }
        if old_env is not None:
            old = stdio(sys.executable, ["-c", CLI, "gateway", "stdio", NAME], old_env)
            calls["in-process"] = echo(await client(old), "in-process")
        headers = {"Authorization": f"Bearer {token}"}
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers))
        direct = streamable_http_client(f"{url}/mcp/{NAME}", http_client=http)
        calls["http"] = echo(await client(direct), "http")
        calls["upstream"] = echo(await client(stdio(sys.executable, [str(SERVER)])), "upstream")
        yield calls


def run(quick: bool) -> list[Result]:
    samples = QUICK_SAMPLES if quick else FULL_SAMPLES
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        here = Path(tmp)
        env = seed(ROOT / "src", here / "home")
        old_src = old_source(here)
        old_env = None
        if old_src is not None:
            old_env = seed(old_src, here / "old-home")
        with served(env, here / "up.log") as url:

            async def measure() -> dict[str, list[float]]:
                async with paths(url, env, old_env) as calls:
                    return await latencies(calls, samples)

            times = anyio.run(measure)
    bridge = times.pop("bridge")
    rows = []
    for other, spent in times.items():
        for p in (50, 99):
            rows.append(
                result(f"p{p} vs {other}", percentile(bridge, p), percentile(spent, p), "µs")
            )
    return rows


def footer(results: list[Result]) -> list[str]:
    return [
        "Tether = tools/call through the stdio bridge (stdio -> HTTP -> tether up -> upstream);",
        "baseline: in-process = the stdio face before the bridge (it opened the store itself),",
        "http = the same client straight to /mcp/test, upstream = the test server alone",
        f"ratio = bridge ÷ baseline: above 1{TIMES} is slower",
    ]


if __name__ == "__main__":
    main("stdio bridge", __doc__ or "", run, footer, baseline="baseline", width=22)
