"""MCP gateway overhead: the latency Tether adds to a tools/call, and calls/s under
concurrency, vs the same mcp SDK client calling the same server directly in the same run.

One SQLite store (in a temporary directory, default settings: decision and token caches
on) holds one agent, ``bench``, granted ``tools/call`` on the ``echo`` tool of two
upstreams, both the test server ``tests/helpers/mcp_test_server.py`` (official SDK):

- ``stdio``: the direct baseline is an ``mcp.Client`` over stdio to a server process of
  its own calling ``echo``; Tether is ``Gateway.call_tool(token, session, "echo", ...)``
  on an ``UpstreamSession`` to another process of the same command (the library path a
  stdio face takes: token verify, pin check, decision, audit, forward, audit).
- ``http legacy`` / ``http auto``: the server runs under uvicorn in a process of its own
  on 127.0.0.1 (streamable HTTP). The baseline is an ``mcp.Client`` (``mode="legacy"``:
  initialize handshake and a session; ``mode="auto"``: what the SDK negotiates, the
  per-request protocol) calling it over localhost; Tether is the same client calling
  ``/mcp/test`` of ``create_app(tether)`` in-process (``httpx2.ASGITransport``), whose
  upstream is that same server. So Tether's path has one MCP hop more (in-process) and
  the gateway's work; the upstream's own cost is in both. ``vs proxy`` rows compare
  Tether with a bare proxy timed alongside: the same SDK server machinery (a lowlevel
  ``Server``'s streamable HTTP app, in-process) forwarding through an ``UpstreamSession``
  to the same upstream with no enforcement, i.e. what any Python MCP hop costs.

Latency rows (``p50``/``p99``) are per-call µs over N sequential calls of each path, the
paths taking turns in blocks of 25 calls after a warm-up. ``added p50``/``added p99`` are
Tether's percentile minus the direct one; their baseline column is the goal (1,000 µs and
3,000 µs), so a ratio at most 1 meets it. ``http N sessions`` rows are calls/s of N
concurrent clients (each its own ``Client``, legacy mode, its own HTTP client) calling
``echo`` in a loop through the face vs directly: the best of three rounds, the paths
taking turns; every answer is checked (an error or a wrong echo stops the bench). The
bare proxy's calls/s and each path's CPU time per call in this process go to stderr.

Also on stderr: where a call's time goes (each part of the gateway path timed in place,
mean µs per call) and, when the goal is missed, a cProfile summary of the stdio gateway
path (its thread hops run inline there, so the profiler sees the worker threads' work).

    .venv/bin/python bench/gateway.py [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import cProfile
import inspect
import math
import pstats
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
from _common import TIMES, Result, expect, main, opened, result, stop
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server

from tether import AgentSpec, Caller, Tether, generate_key_pair
from tether.api import create_app
from tether.config import GuardSettings
from tether.gateway import lean
from tether.gateway.enforce import Gateway
from tether.gateway.upstream import UpstreamSession
from tether.grants import GrantSpec
from tether.upstreams.servers import Upstream, UpstreamSpec

ADMIN = Caller.admin()
OWNER = "bench@example.com"
AGENT = "bench"
SERVER = Path(__file__).resolve().parent.parent / "tests" / "helpers" / "mcp_test_server.py"
HTTP_NAME = "test"  # the upstream behind /mcp/test (streamable HTTP)
STDIO_NAME = "test-stdio"  # the upstream for the library (stdio) path
BASE = "http://gateway.test"  # the in-process face's base URL (ASGITransport)
TOOL = "echo"
WARM = 30  # untimed calls per path before the latency samples
BLOCK = 25  # calls per turn while the paths take turns
ROUNDS = 3  # throughput rounds, as in _common.best_of
GOAL_P50, GOAL_P99 = 1000.0, 3000.0  # µs added per call
# The test server as an HTTP upstream: uvicorn on the given port, quiet.
SERVE = (
    "import logging, runpy, sys, uvicorn\n"
    "logging.disable(logging.WARNING)\n"
    "app = runpy.run_path(sys.argv[1])['app']\n"
    "uvicorn.run(app.streamable_http_app(), host='127.0.0.1', port=int(sys.argv[2]),\n"
    "            log_level='error', access_log=False)\n"
)

Call = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Plan:
    samples: int  # timed sequential calls per path for p50/p99
    seconds: float  # one timed throughput round of one path at one concurrency
    sessions: tuple[int, ...]  # concurrent client sessions for calls/s
    breakdown: int  # calls timed part by part (and profiled) per path


QUICK = Plan(samples=400, seconds=1.0, sessions=(1, 8, 32), breakdown=100)
FULL = Plan(samples=3000, seconds=4.0, sessions=(1, 8, 32), breakdown=500)


# ---- helpers ----------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p`` percentile of ``samples`` (seconds), in µs."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1e6


def text_of(content: Any) -> str:
    """The text of a tool result (an SDK model or the gateway's dict)."""
    if isinstance(content, dict):
        return " ".join(c.get("text", "") for c in content.get("content", []))
    return " ".join(getattr(c, "text", "") for c in content.content)


def failed(content: Any) -> bool:
    if isinstance(content, dict):
        return bool(content.get("isError"))
    return bool(content.is_error)


async def checked(call: Callable[[str], Awaitable[Any]], what: str) -> None:
    """Stop unless ``call`` echoes what it is given."""
    said = await call("bench check")
    expect(not failed(said), f"{what}: the call failed: {text_of(said)}")
    expect(text_of(said) == "bench check", f"{what}: echoed {text_of(said)!r}")


async def latencies(calls: dict[str, Call], samples: int) -> dict[str, list[float]]:
    """Seconds per call of each path: warmed up, then taking turns in blocks."""
    for call in calls.values():
        for i in range(WARM):
            await call(i)
    clock = time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in calls}
    done = 0
    while done < samples:
        n = min(BLOCK, samples - done)
        for name, call in calls.items():
            spent = times[name]
            for i in range(done, done + n):
                start = clock()
                await call(i)
                spent.append(clock() - start)
        done += n
    return times


def latency_rows(label: str, times: dict[str, list[float]], path: str = "tether") -> list[Result]:
    """p50 and p99 of Tether (its ``path``) vs direct, what Tether added vs the goal and,
    when the bare proxy was timed too, Tether vs the proxy."""
    ours, bare = times[path], times["direct"]
    rows = []
    for p, goal in ((50, GOAL_P50), (99, GOAL_P99)):
        mine, theirs = percentile(ours, p), percentile(bare, p)
        rows.append(result(f"{label} p{p}", mine, theirs, "µs"))
        rows.append(result(f"{label} added p{p}", mine - theirs, goal, "µs"))
        if "proxy" in times:
            rows.append(result(f"{label} p{p} vs proxy", mine, percentile(times["proxy"], p), "µs"))
    return rows


# ---- where the time goes ----------------------------------------------------------------


class Stages:
    """Time parts of the gateway path in place: each wrapped callable adds its wall time
    and the CPU time of the thread it ran in to a stage (for sequential calls only, so
    that stages do not overlap)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.nested: set[str] = set()  # stages made of other stages: counted, not summed
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, stage: str, *, nested: bool = False) -> None:
        if nested:
            self.nested.add(stage)
        original = getattr(owner, attr)
        own = vars(owner).get(attr, _ABSENT)  # absent: found on the class, deleted after
        self._undo.append((owner, attr, own))
        clock, ticks, wall, cpu, count = (
            time.perf_counter,
            time.thread_time,
            self.wall,
            self.cpu,
            self.count,
        )
        if inspect.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start, used = clock(), ticks()
                try:
                    return await original(*args, **kwargs)
                finally:
                    wall[stage] += clock() - start
                    cpu[stage] += ticks() - used
                    count[stage] += 1

            setattr(owner, attr, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                start, used = clock(), ticks()
                try:
                    return original(*args, **kwargs)
                finally:
                    wall[stage] += clock() - start
                    cpu[stage] += ticks() - used
                    count[stage] += 1

            setattr(owner, attr, timed)

    def undo(self) -> None:
        for owner, attr, own in reversed(self._undo):
            if own is _ABSENT:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)
        self._undo.clear()


_ABSENT = object()
REST = "everything else (thread hops, framing, face)"


@contextlib.contextmanager
def stages_of(tether: Tether) -> Iterator[Stages]:
    """Every part of a gateway call, timed while the block runs."""
    stages = Stages()
    stages.wrap(tether.tokens, "verify", "token verify")
    stages.wrap(tether.upstreams, "get", "upstream lookup (store read, face)")
    stages.wrap(UpstreamSession, "list_tools", "upstream tools/list (pin check)")
    stages.wrap(tether.pins, "observe", "pins.observe (write transaction)")
    stages.wrap(tether.pdp, "decide", "PDP decide")
    stages.wrap(tether, "record", "decision event (audit write)")
    stages.wrap(UpstreamSession, "call_tool", "upstream tools/call (forward)")
    stages.wrap(tether.events, "record", "tool.result event (audit write)")
    stages.wrap(Gateway, "list_tools", "Gateway.list_tools (a listing)", nested=True)
    stages.wrap(lean, "parse", "lean: strict frame parse")
    stages.wrap(lean.LeanPath, "_rejection", "lean: modern envelope and header checks")
    stages.wrap(lean._methods, "validate_client_request", "lean: SDK params check")
    stages.wrap(lean._methods, "serialize_server_result", "lean: SDK result sieve")
    try:
        yield stages
    finally:
        stages.undo()


async def timed_calls(call: Call, calls: int) -> tuple[float, float]:
    """(wall µs, CPU µs of this whole process) per call, mean of ``calls``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        await call(i)
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


async def breakdown(label: str, tether: Tether, ours: Call, bare: Call, calls: int) -> None:
    """Mean µs per call of each part of Tether's path (wall and CPU), on stderr."""
    direct, direct_cpu = await timed_calls(bare, calls)
    with stages_of(tether) as stages:
        total, total_cpu = await timed_calls(ours, calls)
    parts = {
        k: (v / calls * 1e6, stages.cpu[k] / calls * 1e6, stages.count[k] / calls)
        for k, v in stages.wall.items()
        if stages.count[k] and k not in stages.nested
    }
    parts[REST] = (
        total - sum(w for w, _, _ in parts.values()),
        total_cpu - sum(c for _, c, _ in parts.values()),
        1.0,
    )
    out = sys.stderr
    print(f"{label}: where a call's time goes (mean of {calls} calls, µs per call)", file=out)
    print(f"  {'part':<48}{'wall':>9}{'share':>7}{'CPU':>9}{'times':>7}", file=out)
    for name, (us, cpu, n) in sorted(parts.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:<48}{us:>9,.0f}{us / total:>7.0%}{cpu:>9,.0f}{n:>7.1f}", file=out)
    print(f"  {'total through Tether':<48}{total:>9,.0f}{1:>7.0%}{total_cpu:>9,.0f}", file=out)
    print(f"  {'the same call direct':<48}{direct:>9,.0f}{'':>7}{direct_cpu:>9,.0f}", file=out)
    print("  (CPU: of the thread the part ran in; totals: of this whole process)", file=out)
    for name in sorted(stages.nested):
        if stages.count[name]:
            many = stages.count[name] / calls
            print(f"  {name} ran {many:.1f} times per call (its parts are above)", file=out)


class _Inline:
    """``anyio.to_thread`` stand-in for the profile: the work runs in the profiled thread."""

    @staticmethod
    async def run_sync(func: Callable[..., Any], *args: Any, **_options: Any) -> Any:
        return func(*args)


@contextlib.contextmanager
def inline_threads() -> Iterator[None]:
    """Run the gateway's thread hops inline (every ``tether.gateway`` module's
    ``to_thread``), so that one profiler sees all of its work."""
    patched: list[tuple[Any, Any]] = [
        (module, module.to_thread)
        for name, module in list(sys.modules.items())
        if name.startswith("tether.gateway.") and hasattr(module, "to_thread")
    ]
    for module, _ in patched:
        module.to_thread = _Inline
    try:
        yield
    finally:
        for module, saved in patched:
            module.to_thread = saved


def package(path: str) -> str:
    """Whose code a profiled function is: a package, a part of tether, or the stdlib."""
    parts = re.split(r"[/\\]", path)
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "tether" in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index("tether") + 1 :]
        return "tether." + rest[0].removesuffix(".py")
    if path == __file__:
        return "this bench"
    lib = [k for k, part in enumerate(parts) if re.fullmatch(r"python3\.\d+", part)]
    if not lib or lib[-1] + 1 >= len(parts):
        return parts[-1]
    return "python " + parts[lib[-1] + 1].removesuffix(".py")


async def profile(label: str, ours: Call, calls: int, top: int = 8) -> None:
    """A short cProfile summary of ``calls`` calls of the gateway path (its thread hops
    inline) on stderr: own time by package, the busiest built-ins and Tether's busiest
    functions. Profiling inflates every figure; compare them with one another."""
    profiler = cProfile.Profile()
    with inline_threads():
        profiler.enable()
        for i in range(calls):
            await ours(i)
        profiler.disable()
    by_package: dict[str, float] = defaultdict(float)
    builtins: dict[str, float] = defaultdict(float)
    tether_cum: list[tuple[float, float, str]] = []
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (path, line, func), (_cc, _nc, own, cum, _callers) in stats.items():
        if path == "~":
            builtins[func] += own
            by_package["C built-ins"] += own
            continue
        where = package(path)
        by_package[where] += own
        if where.startswith("tether."):
            inside = re.split(r"[/\\]tether[/\\]", path)[-1]
            tether_cum.append((cum, own, f"{inside}:{line} {func}"))

    def us(seconds: float) -> str:
        return f"{seconds / calls * 1e6:,.0f}"

    total = sum(by_package.values())
    out = sys.stderr
    print(f"{label}: cProfile of {calls} calls, µs per call (inflated by profiling)", file=out)
    print(f"  total {us(total)}; own time by package:", file=out)
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    for k in range(0, min(len(ranked), 2 * top), 4):
        print("    " + " · ".join(f"{n} {us(t)}" for n, t in ranked[k : k + 4]), file=out)
    print("  busiest built-ins:", file=out)
    for name, own in sorted(builtins.items(), key=lambda kv: -kv[1])[: top // 2]:
        print(f"    {us(own):>8}  {name}", file=out)
    print("  tether's busiest functions (cumulative, own):", file=out)
    for cum, own, name in sorted(tether_cum, reverse=True)[:top]:
        print(f"    {us(cum):>8} {us(own):>7}  {name}", file=out)


# ---- the upstreams ----------------------------------------------------------------------


@contextlib.contextmanager
def http_upstream(log: Path) -> Iterator[str]:
    """The test server over streamable HTTP in a process of its own: its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(SERVER), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the HTTP upstream did not start:\n{why}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def setup(tether: Tether, url: str) -> dict[str, str]:
    """Both upstreams, the agent and its grants: the agent's token for each upstream."""
    tether.upstreams.add(ADMIN, UpstreamSpec(HTTP_NAME, url=url))
    tether.upstreams.add(ADMIN, UpstreamSpec(STDIO_NAME, command=f"{sys.executable} {SERVER}"))
    key = generate_key_pair().public_key
    tether.registry.register(ADMIN, AgentSpec(name=AGENT, owner=OWNER, public_key=key))
    agent = tether.registry.get(ADMIN, AGENT)
    tokens = {}
    for name in (HTTP_NAME, STDIO_NAME):
        tether.grants.add(ADMIN, GrantSpec(AGENT, "tools/call", f"{name}/{TOOL}", reason="bench"))
        audience = f"{tether.settings.issuer}/mcp/{name}"
        tokens[name] = tether.tokens.client_credentials(agent, audience, None, None).access_token
    return tokens


def echo(client: Client) -> Call:
    return lambda i: client.call_tool(TOOL, {"text": f"call {i}"})


# ---- stdio ------------------------------------------------------------------------------


async def bench_stdio(tether: Tether, token: str, plan: Plan) -> tuple[list[Result], bool]:
    gate = Gateway(tether, STDIO_NAME)
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    async with (
        Client(params) as direct,
        UpstreamSession(tether.upstreams.get(STDIO_NAME)) as upstream,
    ):

        def ours(i: int) -> Awaitable[dict[str, Any]]:
            return gate.call_tool(token, upstream, TOOL, {"text": f"call {i}"})

        await checked(lambda t: direct.call_tool(TOOL, {"text": t}), "stdio direct")
        before = len(tether.events.list(type="decision"))
        await checked(lambda t: gate.call_tool(token, upstream, TOOL, {"text": t}), "stdio Tether")
        decided = tether.events.list(type="decision", after=0)[before:]
        expect(len(decided) == 1 and decided[0].decision == "allow", "no allow decision recorded")
        print(f"stdio: direct speaks MCP {direct.protocol_version}", file=sys.stderr)

        times = await latencies({"direct": echo(direct), "tether": ours}, plan.samples)
        last = tether.events.list(type="decision")[-1]
        expect(bool(last.detail.get("cached")), "the decision cache did not answer")
        rows = latency_rows("stdio", times)
        await breakdown("stdio", tether, ours, echo(direct), plan.breakdown)
        missed = any(r.ratio > 1 for r in rows if " added " in r.name)
        if missed:
            await profile("stdio gateway path", ours, plan.breakdown)
    return rows, missed


# ---- with rules active (issue 17) -------------------------------------------------------

# What each call echoes in the rules scenarios: a realistic result of a few hundred bytes
# (a URL, paths, identifiers) so that result scanning has something to look at.
PAYLOAD = (
    "Fetched https://docs.example.com/guide/install.html (200 OK, 18,204 bytes). Wrote the "
    "summary to /srv/reports/2026-12-07/install-summary.md; see also the runbook under "
    "/srv/runbooks/deploy/production_rollout_checklist.md and ticket OPS-48213. Checksum "
    "sha256 9f2c1a7e4b0d3f6a8c5e2b1d4f7a0c3e6b9d2f5a8c1e4b7d0a3f6c9e2b5d8a1f. Next: review "
    "the change with the release owner before Thursday."
)
# name -> (grant condition, grant limits, needs result scanning, what it needs to exist)
RULES: dict[str, tuple[str | None, tuple[str, ...], bool]] = {
    "argument rule": ('context.args.text like "call *"', (), False),
    "label rule": (None, (), False),  # a guardrail on resource.labels, added below
    "budget": (None, ("calls=100000000/1m",), False),
    "result scanning": (None, (), True),
}
LABEL_RULE = (
    '@id("bench-label-rule")\n'
    'forbid (principal == Agent::"{agent}", action == Action::"tools/call", resource) '
    'when {{ resource.labels.contains("destructive") }};'
)


def rules_setup(tether: Tether) -> dict[str, str]:
    """An agent per scenario (``plain``: today's grant) with its grant on the stdio
    upstream's echo tool: the token of each scenario whose feature exists here (a note on
    stderr for each that does not, left out)."""
    audience = f"{tether.settings.issuer}/mcp/{STDIO_NAME}"
    tokens: dict[str, str] = {}
    for name, (condition, limits, _scan) in {"plain": (None, (), False), **RULES}.items():
        agent_name = "bench-" + name.replace(" ", "-")
        try:
            key = generate_key_pair().public_key
            spec = AgentSpec(name=agent_name, owner=OWNER, public_key=key)
            tether.registry.register(ADMIN, spec)
            if name == "label rule":  # for this agent only: the others' calls stay as today
                whose = tether.registry.get(ADMIN, agent_name).id
                tether.guardrails.add(ADMIN, LABEL_RULE.format(agent=whose), source="bench")
            grant = GrantSpec(
                agent_name,
                "tools/call",
                f"{STDIO_NAME}/{TOOL}",
                condition=condition,
                reason="bench",
                limits=limits,
            )
            tether.grants.add(ADMIN, grant)
        except Exception as exc:
            why = getattr(exc, "description", None) or f"{type(exc).__name__}: {exc}"
            print(f"rules: {name} skipped, not supported here ({why})", file=sys.stderr)
            continue
        agent = tether.registry.get(ADMIN, agent_name)
        tokens[name] = tether.tokens.client_credentials(agent, audience, None, None).access_token
    if "budget" in tokens and not hasattr(tether, "budgets"):
        note = "rules: budget measured without enforcement (no Tether.budgets here)"
        print(note, file=sys.stderr)
    return tokens


async def bench_rules(tether: Tether, plan: Plan) -> list[Result]:
    """Per-call p50/p99 of the library (stdio) gateway path with each rule active vs the
    same path with none (``plain``: a grant as today, result scanning off), in one run,
    the paths taking turns: the ratio is what the rule costs."""
    tokens = rules_setup(tether)
    off = tether.settings.model_copy(update={"guard": GuardSettings(scan_results=False)})
    on = tether.settings.model_copy(update={"guard": GuardSettings(scan_results=True)})
    rows: list[Result] = []
    with Tether.open(off) as plain_tether, Tether.open(on) as scan_tether:
        async with UpstreamSession(tether.upstreams.get(STDIO_NAME)) as upstream:

            def path(name: str) -> Call:
                scans = RULES[name][2] if name in RULES else False
                gate = Gateway(scan_tether if scans else plain_tether, STDIO_NAME)
                token = tokens[name]
                return lambda i: gate.call_tool(
                    token, upstream, TOOL, {"text": f"call {i}: {PAYLOAD}"}
                )

            calls = {name: path(name) for name in tokens}
            for name, call in calls.items():
                said = await call(0)
                expect(not failed(said), f"rules {name}: the call failed: {text_of(said)}")
                expect(text_of(said) == f"call 0: {PAYLOAD}", f"rules {name}: wrong echo")
            times = await latencies(calls, plan.samples)
    for name in RULES:
        if name not in times:
            continue
        for p in (50, 99):
            mine, plain = percentile(times[name], p), percentile(times["plain"], p)
            rows.append(result(f"stdio with {name} p{p}", mine, plain, "µs"))
    return rows


# ---- HTTP -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def clients(
    n: int, url: str, mode: str, transport: Any = None, token: str | None = None
) -> AsyncIterator[list[Client]]:
    """``n`` SDK clients with a session each (and an HTTP client each) to ``url``."""
    options: dict[str, Any] = {"transport": transport, "base_url": BASE} if transport else {}
    if token:
        options["headers"] = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        found: list[Client] = []
        for _ in range(n):
            http = await stack.enter_async_context(httpx2.AsyncClient(**options))
            client = Client(streamable_http_client(url, http_client=http), mode=mode)
            found.append(await stack.enter_async_context(client))
        yield found


async def burst(sessions: list[Client], seconds: float) -> tuple[float, float]:
    """(calls/s, CPU seconds of this process per call) of every session calling echo in
    a loop for ``seconds``; every answer is checked."""
    clock = time.perf_counter
    counts = [0] * len(sessions)
    wrong: list[str] = []
    deadline = clock() + seconds

    async def worker(k: int, client: Client) -> None:
        n = 0
        while clock() < deadline:
            text = f"{k}-{n}"
            said = await client.call_tool(TOOL, {"text": text})
            if said.is_error or text_of(said) != text:
                wrong.append(text_of(said))
            n += 1
        counts[k] = n

    cpu, start = time.process_time(), clock()
    async with anyio.create_task_group() as group:
        for k, client in enumerate(sessions):
            group.start_soon(worker, k, client)
    elapsed, cpu = clock() - start, time.process_time() - cpu
    expect(not wrong, f"{len(wrong)} calls failed under load, e.g. {wrong[0] if wrong else ''}")
    return sum(counts) / elapsed, cpu / max(1, sum(counts))


@contextlib.asynccontextmanager
async def bare_proxy(upstream: Upstream) -> AsyncIterator[Any]:
    """The SDK server machinery Tether's face is built on (a lowlevel ``Server``'s
    streamable HTTP app), forwarding every call to the same upstream through an
    ``UpstreamSession``, with no enforcement at all: the cost of any MCP hop."""
    async with UpstreamSession(upstream) as session:

        async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
            tools = await session.list_tools()
            return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in tools])

        async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> Any:
            said = await session.call_tool(params.name, dict(params.arguments or {}))
            return types.CallToolResult.model_validate(said)

        server: Server[Any] = Server("bare-proxy", on_list_tools=list_tools, on_call_tool=call_tool)
        app = server.streamable_http_app(
            streamable_http_path="/mcp", transport_security=None, host="proxy"
        )
        async with server.session_manager.run():
            yield app


PATHS = ("lean", "sdk")  # the face's two paths (gateway_path), side by side


async def bench_http(tether: Tether, url: str, token: str, plan: Plan) -> list[Result]:
    """The face on each path (``tether``: lean, the default; an SDK-path Tether on the
    same store) vs direct and the bare proxy, in both protocol modes, then under load."""
    rows: list[Result] = []
    sdk_settings = tether.settings.model_copy(update={"gateway_path": "sdk"})
    with Tether.open(sdk_settings) as sdk_tether:
        apps = {"lean": create_app(tether), "sdk": create_app(sdk_tether)}
        async with (
            apps["lean"].router.lifespan_context(apps["lean"]),
            apps["sdk"].router.lifespan_context(apps["sdk"]),
            bare_proxy(tether.upstreams.get(HTTP_NAME)) as proxy_app,
        ):
            via = {path: httpx2.ASGITransport(app=app) for path, app in apps.items()}
            proxy_via = httpx2.ASGITransport(app=proxy_app)
            for mode in ("legacy", "auto"):
                rows += await http_latencies(tether, mode, url, via, proxy_via, token, plan)
            for n in plan.sessions:
                rows += await http_load(n, url, via, proxy_via, token, plan)
    return rows


async def http_latencies(
    tether: Tether,
    mode: str,
    url: str,
    via: dict[str, Any],
    proxy_via: Any,
    token: str,
    plan: Plan,
) -> list[Result]:
    face, bare = f"{BASE}/mcp/{HTTP_NAME}", f"{BASE}/mcp"
    rows: list[Result] = []
    async with (
        clients(1, url, mode) as [direct],
        clients(1, face, mode, via["lean"], token) as [lean_client],
        clients(1, face, mode, via["sdk"], token) as [sdk_client],
        clients(1, bare, mode, proxy_via) as [proxy],
    ):
        paths = {
            "direct": echo(direct),
            "lean": echo(lean_client),
            "sdk": echo(sdk_client),
            "proxy": echo(proxy),
        }
        for name, client in (
            ("direct", direct),
            ("lean", lean_client),
            ("sdk", sdk_client),
            ("proxy", proxy),
        ):
            await checked(lambda t, c=client: c.call_tool(TOOL, {"text": t}), f"{mode} {name}")
        print(
            f"http {mode}: direct speaks MCP {direct.protocol_version}, through Tether "
            f"{lean_client.protocol_version} (lean) / {sdk_client.protocol_version} (sdk), "
            f"through the bare proxy {proxy.protocol_version}",
            file=sys.stderr,
        )
        times = await latencies(paths, plan.samples)
        for path in PATHS:
            rows += latency_rows(f"http {mode} {path}", times, path)
        await breakdown(f"http {mode} lean", tether, paths["lean"], paths["direct"], plan.breakdown)
        missed = any(r.ratio > 1 for r in rows if r.name.startswith(f"http {mode} lean added"))
        if mode == "legacy" and missed:
            await profile("http legacy through the face (lean)", paths["lean"], plan.breakdown)
    return rows


async def http_load(
    n: int, url: str, via: dict[str, Any], proxy_via: Any, token: str, plan: Plan
) -> list[Result]:
    face, bare = f"{BASE}/mcp/{HTTP_NAME}", f"{BASE}/mcp"
    async with (
        clients(n, url, "legacy") as direct_set,
        clients(n, face, "legacy", via["lean"], token) as lean_set,
        clients(n, face, "legacy", via["sdk"], token) as sdk_set,
        clients(n, bare, "legacy", proxy_via) as proxy_set,
    ):
        sets = {"lean": lean_set, "sdk": sdk_set, "proxy": proxy_set, "direct": direct_set}
        for found in sets.values():
            await burst(found, 0.2)  # warm up
        best = dict.fromkeys(sets, (0.0, 0.0))
        for _ in range(ROUNDS):
            for name, found in sets.items():
                best[name] = max(best[name], await burst(found, plan.seconds))
    many = "session" if n == 1 else "sessions"
    rows = [
        result(f"http {n} {many} {path}", best[path][0], best["direct"][0], "calls/s")
        for path in PATHS
    ]
    print(
        f"http {n} {many}: "
        + ", ".join(
            f"{name} {rate:,.0f} calls/s ({cpu * 1e3:.1f} ms CPU per call here)"
            for name, (rate, cpu) in best.items()
        ),
        file=sys.stderr,
    )
    return rows


# ---- the run ----------------------------------------------------------------------------


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        home = Path(tmp)
        with http_upstream(home / "upstream.log") as url, opened(home / "home") as tether:
            tokens = setup(tether, url)

            async def both() -> list[Result]:
                rows, _ = await bench_stdio(tether, tokens[STDIO_NAME], plan)
                rows += await bench_rules(tether, plan)
                return rows + await bench_http(tether, url, tokens[HTTP_NAME], plan)

            return anyio.run(both)


def goals(results: list[Result]) -> list[str]:
    found = {r.name: r for r in results}
    lines = []
    for label in ("stdio", *(f"http {m} {p}" for m in ("legacy", "auto") for p in PATHS)):
        p50, p99 = found.get(f"{label} added p50"), found.get(f"{label} added p99")
        if p50 is None or p99 is None:
            continue
        verdict = "met" if p50.value <= GOAL_P50 and p99.value <= GOAL_P99 else "MISSED"
        lines.append(
            f"goal {label}: added p50 <= {GOAL_P50:,.0f} µs and p99 <= {GOAL_P99:,.0f} µs: "
            f"{verdict} at +{p50.value:,.0f} µs / +{p99.value:,.0f} µs"
        )
    return lines


def footer(results: list[Result]) -> list[str]:
    return [
        "baseline = the same mcp SDK client calling the same test server directly",
        "(stdio: a server process of its own; http: the upstream over localhost HTTP)",
        "added rows = Tether - direct at that percentile; their baseline column is the goal,",
        f"so a ratio at most 1{TIMES} meets it; vs proxy rows: the baseline is a bare SDK proxy",
        "(same server machinery as the face, no enforcement) to the same upstream",
        f"ratio = Tether ÷ baseline: µs above 1{TIMES} and calls/s below 1{TIMES} are slower",
        *goals(results),
    ]


if __name__ == "__main__":
    main("gateway", __doc__ or "", run, footer, baseline="direct", width=26)
