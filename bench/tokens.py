"""Access token throughput: tokens issued and verified per second through Tether vs raw PyJWT.

One SQLite store (in a temporary directory) holds one agent, ``helper``, registered with a
fresh key pair and granted ``tools/call`` on ``github/*``. Every figure stands beside raw
PyJWT doing the same signature work with the same Ed25519 key (Tether's current signing
key, ``tether.keys.current()``) in the same run:

- ``issue``: ``tether.tokens.client_credentials(helper, <issuer>/mcp/github, None)``, vs
  ``jwt.encode`` of a payload of the same claims (a fresh ``jti`` and times each call) with
  the same ``typ`` and ``kid`` headers. Tether's issue also reads the agent's grants to
  work out the scope and writes the issued-token row and a ``token.issued`` event in one
  write transaction; the raw encode does none of that.
- ``verify cold``: ``tether.tokens.verify(token, audience)`` of a distinct fresh token each
  call (issued before the round is timed, each verified once, so the verified-token cache
  always misses), vs ``jwt.decode(token, public_key, algorithms=["EdDSA"], audience=...)``
  of the same tokens. Goal: Tether within 1.3 times the raw cost (ratio at least 0.77).
- ``verify cached``: ``tether.tokens.verify`` of one token again and again (a cache hit),
  vs ``jwt.decode`` of that token again and again. Goal: Tether at least 20 times faster.
- ``exchange``: ``tether.tokens.exchange(worker, helper's token for worker, ...)`` (one
  RFC 8693 hop: verify the subject token, check the delegate grant and every identity's
  grants, sign and record the new token), vs raw ``jwt.decode`` of the subject token plus
  ``jwt.encode`` of the new one.
- ``issue, 8 threads`` and ``exchange, 8 threads``: the same calls from 8 threads at once,
  vs the same raw work from 8 threads. Each token is still on record (its row and event
  committed) before it is returned; tokens issued together share the commit
  (``tether.tokens.records``), which is where the single-thread figure spends most of its
  time (an ``fsync`` on SQLite).

On stderr, a breakdown of one issue's time by stage (client authentication, audience
check, grant read, scope computation, signing, the issued-token row, the audit event, the
commit), each measured by calling the stage's own code in turn, and the top of a cProfile
of the issue call.

ratio = Tether ÷ raw on operations per second, so above 1 Tether is faster and below 1 it is
slower. The store is opened with ``decision_staleness_ms=60000`` so that the cache-hit
figure measures the verifier, not the polling of the state epoch (at most one store read
a minute). Each figure is the best of three timed rounds, the measures taking turns within
a round.

    .venv/bin/python bench/tokens.py [--quick] [--json]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from _common import TIMES, Op, Result, best_of, expect, in_threads, main, opened, result

from tether import AgentSpec, Caller, Tether, generate_key_pair
from tether.audit.record import prepare
from tether.grants import GrantSpec
from tether.model import Agent
from tether.tokens import ASSERTION_TYPE
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
OWNER = "bench@example.com"
AGENT = "helper"
ACTION = "tools/call"
RESOURCE = "github/*"
ROUNDS = 3  # as in _common.best_of
STALENESS_MS = 60_000  # the epoch is polled at most once a minute: measure the engine
CALIBRATE_CALLS = 200  # at most this many calls (and fresh tokens) to calibrate
COLD_GOAL = 1 / 1.3  # verify cold: Tether within 1.3x the raw cost
CACHED_GOAL = 20.0  # verify cached: Tether at least 20x faster than raw
THREADS = 8  # callers at once for the concurrent rows


@dataclass(frozen=True, slots=True)
class Plan:
    seconds: float  # length of one timed round of one measure
    cold_cap: int  # fresh tokens per round of verify cold (each is issued before timing)
    staged: int  # tokens issued stage by stage for the breakdown


QUICK = Plan(seconds=0.25, cold_cap=1500, staged=300)
FULL = Plan(seconds=1.5, cold_cap=10_000, staged=2000)


# ---- the measures -----------------------------------------------------------------------


def bench_tokens(tether: Tether, plan: Plan) -> list[Result]:
    tokens = tether.tokens
    settings = tether.settings
    audience = f"{settings.issuer}/mcp/github"
    tether.upstreams.add(ADMIN, UpstreamSpec("github", url="http://127.0.0.1:9/mcp"))
    key_pair = generate_key_pair()
    key = key_pair.public_key
    tether.registry.register(ADMIN, AgentSpec(name=AGENT, owner=OWNER, public_key=key))
    tether.grants.add(ADMIN, GrantSpec(AGENT, ACTION, RESOURCE, reason="bench tokens"))
    agent = tether.registry.get(ADMIN, AGENT)
    agent_pem = key_pair.private_pem
    kid, private = tether.keys.current()
    public = private.public_key()
    lifetime = settings.token_ttl_default

    def issue_one() -> str:
        return tokens.client_credentials(agent, audience, None).access_token

    # Check both paths agree before timing anything.
    sample = issue_one()
    verified = tokens.verify(sample, audience)
    expect(verified.claims["sub"] == agent.id, f"unexpected subject {verified.claims['sub']}")
    expect(verified.scope == (f"{ACTION}:{RESOURCE}",), f"unexpected scope {verified.scope}")
    expect(jwt.get_unverified_header(sample)["kid"] == kid, "not signed with the current key")
    raw_claims = jwt.decode(sample, public, algorithms=["EdDSA"], audience=audience)
    expect(raw_claims == verified.claims, "raw PyJWT reads other claims than Tether")
    expect(set(payload(agent, audience, lifetime, settings.issuer)) == set(raw_claims), "shape")

    def issue(_tag: str, _n: int) -> Op:
        return lambda _i: tokens.client_credentials(agent, audience, None)

    def encode(_tag: str, _n: int) -> Op:
        headers = {"typ": "at+jwt", "kid": kid}

        def op(_i: int) -> None:
            claims = payload(agent, audience, lifetime, settings.issuer)
            jwt.encode(claims, private, algorithm="EdDSA", headers=headers)

        return op

    fresh: list[str] = [sample]  # the tokens of the latest verify-cold round

    def cold(_tag: str, n: int) -> Op:
        fresh[:] = [issue_one() for _ in range(n)]
        batch = list(fresh)
        return lambda i: tokens.verify(batch[i], audience)

    def decode(_tag: str, _n: int) -> Op:
        batch = list(fresh)  # the same tokens Tether just verified cold
        return lambda i: jwt.decode(
            batch[i % len(batch)], public, algorithms=["EdDSA"], audience=audience
        )

    same = issue_one()

    def cached(_tag: str, _n: int) -> Op:
        tokens.verify(same, audience)
        return lambda _i: tokens.verify(same, audience)

    def decode_same(_tag: str, _n: int) -> Op:
        return lambda _i: jwt.decode(same, public, algorithms=["EdDSA"], audience=audience)

    worker_key = generate_key_pair().public_key
    tether.registry.register(ADMIN, AgentSpec(name="worker", owner=OWNER, public_key=worker_key))
    tether.grants.add(ADMIN, GrantSpec("worker", ACTION, RESOURCE, reason="bench tokens"))
    tether.grants.add(ADMIN, GrantSpec(AGENT, "delegate", "worker", reason="bench tokens"))
    worker = tether.registry.get(ADMIN, "worker")
    handed = tokens.client_credentials(agent, worker.id, None).access_token

    def exchange(_tag: str, _n: int) -> Op:
        return lambda _i: tokens.exchange(
            worker, handed, "urn:ietf:params:oauth:token-type:access_token", audience, None
        )

    def decode_encode(_tag: str, _n: int) -> Op:
        headers = {"typ": "at+jwt", "kid": kid}

        def op(_i: int) -> None:
            jwt.decode(handed, public, algorithms=["EdDSA"], audience=worker.id)
            claims = payload(worker, audience, lifetime, settings.issuer)
            jwt.encode(claims, private, algorithm="EdDSA", headers=headers)

        return op

    rates = best_of(
        {
            "issue": (issue, 10_000_000),
            "encode": (encode, 10_000_000),
            "cold": (cold, plan.cold_cap),
            "decode": (decode, 10_000_000),
            "cached": (cached, 10_000_000),
            "decode same": (decode_same, 10_000_000),
            "exchange": (exchange, 10_000_000),
            "decode+encode": (decode_encode, 10_000_000),
        },
        plan.seconds,
        warm_calls=CALIBRATE_CALLS,
    )
    together = concurrent(
        {
            "issue": issue("threads", 0),
            "encode": encode("threads", 0),
            "exchange": exchange("threads", 0),
            "decode+encode": decode_encode("threads", 0),
        },
        plan.seconds,
    )
    breakdown(tether, agent, agent_pem, audience, plan.staged)
    return [
        result("issue", rates["issue"], rates["encode"], "tokens/s"),
        result(f"issue, {THREADS} threads", together["issue"], together["encode"], "tokens/s"),
        result("verify cold", rates["cold"], rates["decode"], "verifies/s"),
        result("verify cached", rates["cached"], rates["decode same"], "verifies/s"),
        result("exchange", rates["exchange"], rates["decode+encode"], "exchanges/s"),
        result(
            f"exchange, {THREADS} threads",
            together["exchange"],
            together["decode+encode"],
            "exchanges/s",
        ),
    ]


def concurrent(ops: dict[str, Op], seconds: float) -> dict[str, float]:
    """Operations per second of each op called from :data:`THREADS` threads at once for
    ``seconds``; the best of :data:`ROUNDS` rounds, the ops taking turns."""
    best = dict.fromkeys(ops, 0.0)
    for _ in range(ROUNDS):
        for name, op in ops.items():
            best[name] = max(best[name], threaded(op, seconds))
    return best


def threaded(op: Op, seconds: float) -> float:
    done, elapsed = in_threads(lambda _k, n: op(n), THREADS, seconds)
    return done / elapsed


# ---- where an issue's time goes (stderr) ---------------------------------------------------


class Stages:
    """Seconds spent per named stage, summed over calls."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.spent[name] += time.perf_counter() - began


def breakdown(tether: Tether, agent: Agent, pem: bytes, audience: str, n: int) -> None:
    """Issue ``n`` tokens (after authenticating the agent with a fresh client assertion)
    stage by stage, calling each stage's own code in turn, and print the mean time of each
    stage per token, then the top of a cProfile of the issue call, on stderr."""
    tokens = tether.tokens
    # The bench looks inside on purpose: the stages are the issuer's own parts.
    issuer = tokens._issuer
    snapshots, records = issuer._snapshots, issuer._records
    assertions = [assertion(agent, pem, tokens.token_endpoint) for _ in range(n)]
    stages = Stages()
    for signed in assertions:
        with stages("client authentication"):
            tokens.authenticate_client(ASSERTION_TYPE, signed)
        with stages("audience check"):
            target = issuer.audience(audience)
        with stages("grant read"):
            grants = snapshots.grants_of(agent.id, tether.clock())
        with stages("scope computation"):
            scope = issuer.scope(grants, target, None)
        with stages("signing"):
            claims = {"sub": agent.id, "client_id": agent.id}
            _, record = issuer.sign(claims, target, scope, None, None, agent.expires_at)
        committing = time.perf_counter()
        with tether.store.write() as conn:
            with stages("issued-token row"):
                records.insert_rows(conn, [record])
            with stages("audit event"):
                entries = [prepare(e) for e in record.entries]  # what the commit would run
                tether.events._insert(conn, entries)
            committing = time.perf_counter()
        stages.spent["commit"] += time.perf_counter() - committing
    total = sum(stages.spent.values())
    print(f"issue, stage by stage ({n} tokens, mean per token):", file=sys.stderr)
    for name, spent in stages.spent.items():
        print(f"  {name:<24}{spent / n * 1e6:>9.1f} us {spent / total:>6.1%}", file=sys.stderr)
    print(f"  {'total':<24}{total / n * 1e6:>9.1f} us", file=sys.stderr)
    profile(lambda: tokens.client_credentials(agent, audience, None), n)


def assertion(agent: Agent, pem: bytes, endpoint: str) -> str:
    """A client assertion (RFC 7523) signed with the agent's key."""
    now = int(time.time())
    claims = {"iss": agent.id, "sub": agent.id, "aud": endpoint, "exp": now + 120}
    return jwt.encode({**claims, "jti": secrets.token_urlsafe(16)}, pem, algorithm="EdDSA")


def profile(call: Callable[[], object], n: int) -> None:
    """The top of a cProfile of ``n`` calls, by cumulative time, on stderr."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(f"issue, cProfile of {n} calls:", out.getvalue(), sep="\n", file=sys.stderr)


def payload(agent: Agent, audience: str, lifetime: timedelta, issuer: str) -> dict[str, Any]:
    """The claims ``Tokens.client_credentials`` puts in an agent's own token."""
    now = int(time.time())
    jti = secrets.token_urlsafe(16)
    return {
        "sub": agent.id,
        "client_id": agent.id,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime.total_seconds()),
        "jti": jti,
        "tether_family": jti,  # an agent's own token is its family's root
        "scope": f"{ACTION}:{RESOURCE}",
    }


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    with (
        tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp,
        opened(Path(tmp), decision_staleness_ms=60_000) as tether,
    ):
        return bench_tokens(tether, plan)


def goals(results: list[Result]) -> list[str]:
    """Whether the verify goals are met, one line each."""
    found = {r.name: r.ratio for r in results}
    lines = []
    for name, goal, wanted in (
        ("verify cold", COLD_GOAL, f"within 1.3{TIMES} raw (ratio at least {COLD_GOAL:.2f})"),
        ("verify cached", CACHED_GOAL, f"at least 20{TIMES} faster than raw"),
    ):
        ratio = found[name]
        verdict = "met" if ratio >= goal else "MISSED"
        lines.append(f"goal {name}: {wanted}: {verdict} at {ratio:.2f}{TIMES}")
    return lines


def footer(results: list[Result]) -> list[str]:
    return [
        "baseline = raw PyJWT (jwt.encode / jwt.decode) with the same Ed25519 key",
        f"ratio = Tether ÷ raw in operations/s: above 1{TIMES} Tether is faster",
        "(Tether's issue also writes the issued-token row and a token.issued event)",
        *goals(results),
    ]


if __name__ == "__main__":
    main("tokens", __doc__ or "", run, footer, baseline="raw PyJWT", width=16)
