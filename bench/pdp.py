"""Decision point throughput: decisions/s through Tether vs cedarpy used directly.

One SQLite store (in a temporary directory) holds G live grants in all (G = 10, 100, 1000),
spread over many agents and people. A request is made for a person through a chain of
D agents (D = 1 .. 4, the ``dN`` in the names), so every decision evaluates D + 1
identities (the person and each agent); each of them holds a ``tools/call github/*``
grant, so every decision is an allow. Measures, for each shape ``dD gG``:

- ``hit``: ``tether.pdp.decide`` of the same request again and again (decision cache hit);
- ``miss``: ``tether.pdp.decide`` with a new resource (``github/x<n>``) every call, so the
  decision cache misses but the compiled per-chain Cedar state is warm;
- ``miss ... per identity``: the miss cost per identity evaluated, in µs;
- ``naive``: ``cedarpy.is_authorized_batch`` given the policies and entities as text,
  re-parsed on every call (a naive integration).

The baseline of every row is the engine's own limit, "raw": the same D + 1 requests in one
``cedarpy.is_authorized_batch`` call against a ``PolicySet`` of every live grant
(``Grant.to_cedar``) plus the built-in guardrails and an ``Entities`` of every principal
and the resource, both parsed before timing (one pre-parsed handle per resource of a small
pool, so the raw path pays no parsing). ratio = Tether ÷ raw, so below 1 Tether is slower
for decisions/s rows, and above 1 it is slower for the µs/identity rows (the per-identity
cost ratio, whose goal is at most 1.5).

The store is opened with ``decision_staleness_ms=60000`` so that the figures measure the
decision engine, not the polling of the state epoch (at most one store read a minute).
Each figure is the best of three timed rounds, the measures taking turns within a round.

    .venv/bin/python bench/pdp.py [--quick] [--json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy
from _common import TIMES, Op, Result, best_of, expect, main, opened, result

from tether import AgentSpec, Caller, Tether, generate_key_pair
from tether.grants import Grant, GrantSpec
from tether.model import Agent
from tether.policy.decision import AccessRequest
from tether.policy.schema import BUILTIN_GUARDRAILS

ADMIN = Caller.admin()
OWNER = "bench@example.com"
PERSON = "alice@example.com"
ACTION = "tools/call"
MAX_DEPTH = 4
CHAIN = tuple(f"chain-{i}" for i in range(1, MAX_DEPTH + 1))  # the chain's agents
FILLER_AGENTS = 40  # holders of the other grants, with FILLER_USERS people
FILLER_USERS = 60
FILLER_ACTIONS = ("tools/call", "resources/read", "prompts/get", "GET", "POST")
POOL = 64  # distinct resources pre-parsed for the raw and naive baselines
ROUNDS = 3  # as in _common.best_of
STALENESS_MS = 60_000  # the epoch is polled at most once a minute: measure the engine


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: tuple[tuple[int, tuple[int, ...]], ...]  # (grants, depths measured at that size)
    seconds: float  # length of one timed round of one measure


QUICK = Plan(sizes=((10, (1,)), (100, (1, 4)), (1000, (1,))), seconds=0.25)
FULL = Plan(sizes=tuple((g, (1, 2, 3, 4)) for g in (10, 100, 1000)), seconds=1.5)


# ---- the store --------------------------------------------------------------------------


class Fixture:
    """A Tether store grown to a given number of live grants."""

    def __init__(self, tether: Tether) -> None:
        self.tether = tether
        self.fillers: list[Grant] = []
        self.added = 0
        for name in CHAIN + tuple(f"filler-{k}" for k in range(FILLER_AGENTS)):
            key = generate_key_pair().public_key
            tether.registry.register(ADMIN, AgentSpec(name=name, owner=OWNER, public_key=key))
        for who in (f"user:{PERSON}", *CHAIN):
            tether.grants.add(ADMIN, GrantSpec(who, ACTION, "github/*", reason="bench chain"))

    def _filler(self) -> Grant:
        j = self.added
        self.added += 1
        k = j % (FILLER_AGENTS + FILLER_USERS)
        who = f"filler-{k}" if k < FILLER_AGENTS else f"user:filler{k}@example.com"
        action = FILLER_ACTIONS[j % len(FILLER_ACTIONS)]
        resource = f"svc{j % 37}/*" if j % 3 == 0 else f"svc{j % 37}/tool_{j}"
        return self.tether.grants.add(ADMIN, GrantSpec(who, action, resource, reason="filler"))

    def grow(self, total: int) -> None:
        """Add filler grants until ``total`` grants are live (the chain's included)."""
        while len(CHAIN) + 1 + len(self.fillers) < total:
            self.fillers.append(self._filler())

    def fresh_epoch(self) -> None:
        """Swap one filler grant for another: same count, new epoch, empty decision cache."""
        old = self.fillers.pop(0)
        self.tether.grants.revoke(ADMIN, old.id, reason="bench: fresh epoch")
        self.fillers.append(self._filler())


def entity(agent: Agent | None, user: str | None = None) -> dict[str, Any]:
    """An agent or a person as Cedar JSON, with the attributes the decision point gives."""
    if agent is None:
        return {
            "uid": {"type": "User", "id": user},
            "attrs": {"email": user, "groups": [], "state": "active"},
            "parents": [],
        }
    return {
        "uid": {"type": "Agent", "id": agent.name},
        "attrs": {
            "owner": agent.owner or "",
            "state": agent.state.value,
            "kind": agent.kind.value,
            "parent": agent.parent or "",
        },
        "parents": [],
        "tags": dict(agent.labels),
    }


def resource_entity(resource: str) -> dict[str, Any]:
    return {
        "uid": {"type": "Resource", "id": resource},
        "attrs": {"path": resource, "depth": resource.count("/") + 1},
        "parents": [],
    }


# ---- one shape: D agents, G grants ------------------------------------------------------


def bench_shape(store: Fixture, depth: int, size: int, seconds: float) -> list[Result]:
    tether = store.tether
    pdp = tether.pdp
    live = tether.grants.live()
    expect(len(live) == size, f"{len(live)} live grants, not {size}")
    agents = tether.registry.list(ADMIN)
    users = sorted({g.principal.id for g in live if g.principal.kind == "user"})
    principals = [entity(a) for a in agents] + [entity(None, u) for u in users]

    acting, before = CHAIN[depth - 1], CHAIN[: depth - 1]
    identities = [("User", PERSON)] + [("Agent", name) for name in CHAIN[:depth]]

    def request(resource: str) -> AccessRequest:
        return AccessRequest.of(
            acting, ACTION, resource, on_behalf_of=f"user:{PERSON}", chain=before
        )

    # The raw engine: everything parsed before timing.
    text = BUILTIN_GUARDRAILS + "".join(g.to_cedar() for g in live)
    policies = cedarpy.PolicySet.from_str(text)
    base = cedarpy.Entities.from_json_str(json.dumps(principals))
    now = tether.clock()
    context = {"chain_depth": depth, "on_behalf_of": PERSON, "time": int(now.timestamp())}
    context["hour"] = now.hour
    pool = [f"github/pool-{k}" for k in range(POOL)]
    batches = [
        [
            {
                "principal": {"type": kind, "id": ident},
                "action": {"type": "Action", "id": ACTION},
                "resource": {"type": "Resource", "id": resource},
                "context": context,
            }
            for kind, ident in identities
        ]
        for resource in pool
    ]
    handles = [base.with_added_json_str(json.dumps([resource_entity(r)])) for r in pool]
    texts = [json.dumps([*principals, resource_entity(r)]) for r in pool]

    # Check every path allows before timing anything.
    raw_first = cedarpy.is_authorized_batch(batches[0], policies, handles[0])
    naive_first = cedarpy.is_authorized_batch(batches[0], text, texts[0])
    expect(all(r.allowed for r in raw_first + naive_first), "cedarpy denied a chain request")
    first = pdp.decide(request("github/check"))
    expect(first.allowed, f"Tether denied: {first.reasons}")
    expect(len(first.chain) == depth + 1, f"unexpected chain {first.chain}")
    expect(pdp.decide(request("github/check")).cached, "a repeated request was not cached")

    def hit(_tag: str, _n: int) -> Op:
        same = request("github/same")
        pdp.decide(same)
        return lambda _i: pdp.decide(same)

    def miss(tag: str, n: int) -> Op:
        requests = [request(f"github/x{tag}-{i}") for i in range(n)]
        return lambda i: pdp.decide(requests[i])

    def raw(_tag: str, _n: int) -> Op:
        def op(i: int) -> None:
            k = i % POOL
            cedarpy.is_authorized_batch(batches[k], policies, handles[k])

        return op

    def naive(_tag: str, _n: int) -> Op:
        def op(i: int) -> None:
            k = i % POOL
            cedarpy.is_authorized_batch(batches[k], text, texts[k])

        return op

    # Keep the misses under the decision cache's size, so every miss is stored alike.
    miss_cap = tether.settings.decision_cache_size // (ROUNDS + 2)
    rates = best_of(
        {
            "hit": (hit, 10_000_000),
            "miss": (miss, miss_cap),
            "raw": (raw, 10_000_000),
            "naive": (naive, 10_000_000),
        },
        seconds,
    )
    shape = f"d{depth} g{size}"
    per_id = {k: 1e6 / v / (depth + 1) for k, v in rates.items()}
    base_rate = rates["raw"]
    return [
        result(f"hit {shape}", rates["hit"], base_rate, "decisions/s"),
        result(f"miss {shape}", rates["miss"], base_rate, "decisions/s"),
        result(f"miss {shape} per identity", per_id["miss"], per_id["raw"], "µs/identity"),
        result(f"naive {shape}", rates["naive"], base_rate, "decisions/s"),
    ]


def run(quick: bool) -> list[Result]:
    plan = QUICK if quick else FULL
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp,
        opened(Path(tmp), decision_staleness_ms=60_000) as tether,
    ):
        store = Fixture(tether)
        for size, depths in plan.sizes:
            started = time.perf_counter()
            store.grow(size)
            print(f"{size} grants live ({time.perf_counter() - started:.1f}s)", file=sys.stderr)
            for depth in depths:
                store.fresh_epoch()
                results += bench_shape(store, depth, size, plan.seconds)
    return results


def footer(results: list[Result]) -> list[str]:
    return [
        "dN = a person and N agents (N + 1 identities evaluated); gN = live grants",
        "baseline = raw pre-parsed cedarpy on the same requests; ratio = Tether ÷ raw",
        f"(decisions/s: below 1{TIMES} Tether is slower; µs/identity: above 1{TIMES} it is)",
    ]


if __name__ == "__main__":
    main("pdp", __doc__ or "", run, footer, baseline="raw cedarpy", width=26)
