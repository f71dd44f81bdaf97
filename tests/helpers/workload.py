"""A seeded generator of audit events for the detector's scenario tests and benchmark.

Two benign shapes, deliberately unlike each other, so that false-positive figures measured
on one are not an artefact of tuning to it:

**Shape A, "office"** (:func:`shape_a`, seed 1515): a dozen agents (4 owners x copilot /
connector / worker), each owner's team in its own time zone, working weekdays only, from a start
hour drawn in 07:30-09:30 to an end drawn in 17:00-19:00 local, ramping up and down over
half an hour, a lunch dip, and 25 % of days running up to 1.5 h late. Calls are a Poisson
process (0.8-2.5 calls/min at the plateau). Each agent has a stable set of 5-12 tools on
1-3 servers, used with Zipf (s = 1.1) weights; half of them also read 10-25 resources
(20 % of their calls). 1 % of calls are denied, at random. A token per working hour
(audience: one of its servers), 2-5 credential fetches a day, copilots delegate to one
or two workers of their owner three times a day. Results are log-normal, median 4 KiB
(tools, sigma 1.0) or 8 KiB (resources, sigma 0.8).

**Shape B, "night shift and batch"** (:func:`shape_b`, seed 4242), how it differs:
* *hours*: a third of the agents work 22:00-06:00 local (across midnight), two thirds are
  24 x 7 batch agents; none follows office hours;
* *burstiness*: work comes in on/off sessions (lengths ~ exp(20 min), gaps ~ exp(40 min))
  at 3-8 calls/min inside a session, instead of a smooth Poisson day;
* *weekly cycle*: weekends run at a third of the sessions, Mondays at 1.3x the rate;
* *wider sets with a long tail*: 20-40 tools on 3-5 servers with Zipf s = 0.8, 40% of calls
  reading 30-60 resources with Zipf s = 0.9 (the tail appears during learning, but rarely);
* *denials*: 2 % at random plus, in 2 % of sessions, a run of 3 denials (an expired grant);
* *volumes*: results of 32 KiB median (sigma 1.2) for batch agents, 8 KiB (sigma 1.3) at
  night; a credential fetch and a token at the start of every session;
* *delegation*: ETL agents hand a third of their sessions to a batch agent of their owner;
* other zones, owners, kinds, server names and seed.

:mod:`helpers.attacks` makes the events of attacks, for the tests to append after the
benign traffic; :func:`number` gives events their ``seq`` in time order.
"""

from __future__ import annotations

import math
import random
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from tether.detect.model import AgentFacts
from tether.model import Event

__all__ = [
    "START",
    "Emitter",
    "Profile",
    "Raw",
    "Roster",
    "Workload",
    "number",
    "shape_a",
    "shape_b",
]

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DOMAIN = "spiffe://tether.local/agent/"

# (at, type, actor, chain, action, resource, decision, detail)
Raw = tuple[datetime, str, str, tuple[str, ...], str | None, str | None, str | None, dict[str, Any]]


@dataclass
class Profile:
    """One simulated agent and its habits."""

    name: str
    owner: str
    kind: str
    zone: str
    pattern: str  # office, night, batch
    tools: tuple[str, ...]
    tool_cum: tuple[float, ...]
    resources: tuple[str, ...] = ()
    resource_cum: tuple[float, ...] = ()
    read_share: float = 0.0
    rate: float = 1.0  # calls per minute at full intensity
    deny: float = 0.01
    size: tuple[float, float] = (4096.0, 1.0)  # median bytes, sigma
    creds_per_day: float = 3.0
    delegates: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return DOMAIN + self.name

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(sorted({t.split("/", 1)[0] for t in self.tools}))

    def audience(self, server: str) -> str:
        return f"https://tether.local/mcp/{server}"


@dataclass
class Roster:
    """The registry's facts about the simulated agents (a :class:`Facts`)."""

    facts: dict[str, AgentFacts] = field(default_factory=dict)

    def agent(self, agent_id: str) -> AgentFacts | None:
        return self.facts.get(agent_id)

    def add(self, p: Profile) -> None:
        self.facts[p.id] = AgentFacts(p.id, p.kind, p.owner, "active")


@dataclass
class Workload:
    profiles: list[Profile]
    raws: list[Raw]
    roster: Roster
    end: datetime

    def events(self, start_seq: int = 1) -> list[Event]:
        return number(self.raws, start_seq)

    def profile(self, name: str) -> Profile:
        return next(p for p in self.profiles if p.name == name)


def number(raws: Iterable[Raw], start_seq: int = 1) -> list[Event]:
    """Events in time order (stable), numbered from ``start_seq``."""
    ordered = sorted(raws, key=lambda r: r[0])
    return [
        Event(
            seq=start_seq + i,
            at=r[0],
            type=r[1],
            actor=r[2],
            # a lifecycle event is about its subject (carried in the raw's resource)
            subject=r[5] if r[1].startswith("agent.") else r[2],
            chain=r[3],
            action=r[4],
            resource=None if r[1].startswith("agent.") else r[5],
            decision=r[6],
            detail=r[7],
        )
        for i, r in enumerate(ordered)
    ]


def _zipf(n: int, s: float) -> tuple[float, ...]:
    return tuple(accumulate(1.0 / (k**s) for k in range(1, n + 1)))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


class Emitter:
    """Writes one agent's events (the same vocabulary as the gateway, token service and
    vault broker write)."""

    def __init__(self, rng: random.Random, out: list[Raw]) -> None:
        self.rng = rng
        self.out = out

    def call(
        self,
        p: Profile,
        at: datetime,
        *,
        path: str | None = None,
        read: bool | None = None,
        deny: bool | None = None,
        size: float | None = None,
        chain: tuple[str, ...] | None = None,
    ) -> None:
        rng = self.rng
        if read is None:
            read = bool(p.resources) and rng.random() < p.read_share
        if path is None:
            pool, cum = (p.resources, p.resource_cum) if read else (p.tools, p.tool_cum)
            path = rng.choices(pool, cum_weights=cum)[0]
        action = "resources/read" if read else "tools/call"
        denied = rng.random() < p.deny if deny is None else deny
        chain = chain or (f"user:{p.owner}", p.id)
        self.out.append(
            (at, "decision", p.id, chain, action, path, "deny" if denied else "allow", {})
        )
        if denied:
            return
        if size is None:
            median, sigma = p.size if not read else (p.size[0] * 2, p.size[1] * 0.8)
            size = rng.lognormvariate(math.log(median), sigma)
        later = at + timedelta(milliseconds=rng.uniform(5, 400))
        self.out.append(
            (
                later,
                "tool.result",
                p.id,
                chain,
                action,
                path,
                None,
                {"outcome": "ok", "size": int(size), "latency_ms": 12.0},
            )
        )

    def token(self, p: Profile, at: datetime, server: str | None = None) -> None:
        server = server or self.rng.choice(p.servers)
        aud = p.audience(server)
        self.out.append(
            (
                at,
                "token.issued",
                p.id,
                (p.id,),
                "token/issue",
                aud,
                "allow",
                {"aud": aud, "scope": "tools/call", "parent": None},
            )
        )

    def credential(self, p: Profile, at: datetime, ref: str | None = None) -> None:
        resource = ref or f"vault/kv/{p.name}/db"
        self.out.append((at, "decision", p.id, (p.id,), "credentials/read", resource, "allow", {}))
        self.out.append(
            (
                at + timedelta(milliseconds=30),
                "credential.issued",
                p.id,
                (p.id,),
                "credential.issued",
                resource,
                None,
                {"ref": resource, "kind": "static"},
            )
        )

    def delegate(self, p: Profile, target: Profile, at: datetime) -> None:
        person = f"user:{p.owner}"
        self.out.append((at, "decision", p.id, (person, p.id), "delegate", target.id, "allow", {}))
        aud = target.audience(target.servers[0])
        self.out.append(
            (
                at + timedelta(milliseconds=20),
                "token.exchanged",
                target.id,
                (person, p.id, target.id),
                "token/exchange",
                aud,
                "allow",
                {"aud": aud, "scope": "tools/call", "parent": "jti"},
            )
        )


# ---- shape A: office hours ----------------------------------------------------------------


def shape_a(agents: int = 12, days: int = 7, seed: int = 1515, start: datetime = START) -> Workload:
    rng = random.Random(seed)
    zones = [
        "Europe/Paris",
        "America/New_York",
        "Asia/Tokyo",
        "Europe/London",
        "America/Los_Angeles",
        "UTC",
    ]
    kinds = ["copilot", "connector", "worker"]
    profiles: list[Profile] = []
    for i in range(agents):
        owner = f"owner{i // 3}@example.com"
        servers = [f"srv{rng.randrange(20)}" for _ in range(rng.randint(1, 3))]
        tools = tuple(f"{rng.choice(servers)}/tool{j}" for j in range(rng.randint(5, 12)))
        tools = tuple(dict.fromkeys(tools))
        reads = rng.random() < 0.5
        resources = tuple(f"{servers[0]}/docs/file{j}" for j in range(rng.randint(10, 25)))
        profiles.append(
            Profile(
                name=f"a{i:02d}-{kinds[i % 3]}",
                owner=owner,
                kind=kinds[i % 3],
                zone=zones[i // 3 % len(zones)],
                pattern="office",
                tools=tools,
                tool_cum=_zipf(len(tools), 1.1),
                resources=resources if reads else (),
                resource_cum=_zipf(len(resources), 1.1) if reads else (),
                read_share=0.2 if reads else 0.0,
                rate=rng.uniform(0.8, 2.5),
                deny=0.01,
                size=(4096.0, 1.0),
                creds_per_day=rng.uniform(2, 5),
            )
        )
    for p in profiles:  # copilots delegate to the workers of their owner
        if p.kind == "copilot":
            workers = [q.id for q in profiles if q.owner == p.owner and q.kind == "worker"]
            p.delegates = tuple(workers[: rng.randint(1, 2)])
    out: list[Raw] = []
    emit = Emitter(rng, out)
    by_id = {p.id: p for p in profiles}
    for p in profiles:
        _office(p, emit, by_id, start, days)
    return _workload(profiles, out, start + timedelta(days=days))


def _office(
    p: Profile, emit: Emitter, by_id: dict[str, Profile], start: datetime, days: int
) -> None:
    rng = emit.rng
    zone = zoneinfo.ZoneInfo(p.zone)
    begin_h, end_h = rng.uniform(7.5, 9.5), rng.uniform(17.0, 19.0)
    local0 = start.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    for d in range(-1, days + 1):
        day = local0 + timedelta(days=d)
        if day.weekday() >= 5:
            continue
        end = end_h + (rng.uniform(0, 1.5) if rng.random() < 0.25 else 0.0)
        minutes = []
        for m in range(int(begin_h * 60), int(end * 60)):
            h = m / 60
            ramp = min(1.0, (h - begin_h) * 2 + 0.3, (end - h) * 2 + 0.4)
            lunch = 0.5 if 12 <= h < 13 else 1.0
            minutes.append((m, p.rate * ramp * lunch))
        work = [(day + timedelta(minutes=m)).astimezone(UTC) for m, _ in minutes]
        work_in_range = [t for t in work if start <= t < start + timedelta(days=days)]
        if not work_in_range:
            continue
        for (m, lam), t in zip(minutes, work, strict=True):
            if not start <= t < start + timedelta(days=days):
                continue
            if m % 60 == int(begin_h * 60) % 60:
                emit.token(p, t + timedelta(seconds=1))
            for _ in range(_poisson(rng, lam)):
                emit.call(p, t + timedelta(seconds=rng.uniform(0, 60)))
        for _ in range(_poisson(rng, p.creds_per_day)):
            emit.credential(p, rng.choice(work_in_range) + timedelta(seconds=rng.uniform(0, 60)))
        for target in p.delegates:
            for _ in range(_poisson(rng, 3.0)):
                at = rng.choice(work_in_range) + timedelta(seconds=rng.uniform(0, 60))
                emit.delegate(p, by_id[target], at)


# ---- shape B: night shift and batch ---------------------------------------------------------


def shape_b(agents: int = 12, days: int = 7, seed: int = 4242, start: datetime = START) -> Workload:
    rng = random.Random(seed)
    zones = [
        "Australia/Sydney",
        "Asia/Kolkata",
        "America/Sao_Paulo",
        "Europe/Berlin",
        "America/Chicago",
    ]
    kinds = ["etl", "batch", "ops-bot"]
    profiles: list[Profile] = []
    for i in range(agents):
        servers = [f"svc-{rng.randrange(50)}" for _ in range(rng.randint(3, 5))]
        tools = tuple(
            dict.fromkeys(f"{rng.choice(servers)}/op{j}" for j in range(rng.randint(20, 40)))
        )
        resources = tuple(f"{servers[-1]}/data/obj{j}" for j in range(rng.randint(30, 60)))
        night = i % 3 == 2
        profiles.append(
            Profile(
                name=f"b{i:02d}-{kinds[i % 3]}",
                owner=f"team{i // 4}@example.org",
                kind=kinds[i % 3],
                zone=zones[i % len(zones)],
                pattern="night" if night else "batch",
                tools=tools,
                tool_cum=_zipf(len(tools), 0.8),
                resources=resources,
                resource_cum=_zipf(len(resources), 0.9),
                read_share=0.4,
                rate=rng.uniform(3, 8),
                deny=0.02,
                size=(8192.0, 1.3) if night else (32768.0, 1.2),
                creds_per_day=0.0,
            )
        )
    for p in profiles:
        if p.kind == "etl":
            batch = [q.id for q in profiles if q.owner == p.owner and q.kind == "batch"]
            p.delegates = tuple(batch[:1])
    out: list[Raw] = []
    emit = Emitter(rng, out)
    by_id = {p.id: p for p in profiles}
    for p in profiles:
        _sessions(p, emit, by_id, start, days)
    return _workload(profiles, out, start + timedelta(days=days))


def _sessions(
    p: Profile, emit: Emitter, by_id: dict[str, Profile], start: datetime, days: int
) -> None:
    rng = emit.rng
    zone = zoneinfo.ZoneInfo(p.zone)
    end = start + timedelta(days=days)
    t = start + timedelta(minutes=rng.uniform(0, 60))
    while t < end:
        local = t.astimezone(zone)
        weekend, monday = local.weekday() >= 5, local.weekday() == 0
        on_shift = p.pattern == "batch" or local.hour >= 22 or local.hour < 6
        gap = rng.expovariate(1 / 40) * (3 if weekend else 1)
        if not on_shift:
            t += timedelta(minutes=max(gap, 15))
            continue
        length = rng.expovariate(1 / 20)
        rate = p.rate * (1.3 if monday else 1.0)
        emit.token(p, t)
        emit.credential(p, t + timedelta(seconds=2))
        if p.delegates and rng.random() < 1 / 3:
            emit.delegate(p, by_id[p.delegates[0]], t + timedelta(seconds=3))
        minute = 0
        while minute < length and t + timedelta(minutes=minute) < end:
            base = t + timedelta(minutes=minute)
            for _ in range(_poisson(rng, rate)):
                emit.call(p, base + timedelta(seconds=rng.uniform(0, 60)))
            minute += 1
        if rng.random() < 0.02:  # an expired grant: three denials in a row
            for k in range(3):
                emit.call(p, t + timedelta(minutes=length, seconds=k), deny=True)
        t += timedelta(minutes=length + gap)


def _workload(profiles: list[Profile], out: list[Raw], end: datetime) -> Workload:
    roster = Roster()
    for p in profiles:
        roster.add(p)
    return Workload(profiles, out, roster, end)
