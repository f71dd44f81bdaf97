"""A demo organisation for ``tether up --demo``: owners, agents of every kind, one unowned
agent and one expired agent, and the detector's baselines learned from two synthetic weeks
of their usual work. Seeding is idempotent."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tether.agent_keys import generate_key_pair, write_private_key
from tether.callers import Caller
from tether.core import Tether
from tether.errors import NotFound
from tether.grants import GrantSpec
from tether.model import Event
from tether.registry import AgentSpec, Registry

__all__ = [
    "DEMO_AGENTS",
    "DEMO_GRANTS",
    "DEMO_ROUTINE",
    "DemoAgent",
    "demo_history",
    "seed_demo",
]

_SEEDER = Caller.system("demo")


@dataclass(frozen=True, slots=True)
class DemoAgent:
    name: str
    owner: str
    kind: str
    purpose: str
    parent: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


DEMO_AGENTS = (
    DemoAgent(
        "support-bot",
        "alice@example.com",
        "chatbot",
        "Answers customer tickets",
        labels=(("team", "support"),),
    ),
    DemoAgent(
        "triage-worker",
        "alice@example.com",
        "autonomous",
        "Sorts incoming tickets for support-bot",
        parent="support-bot",
    ),
    DemoAgent(
        "github-connector",
        "alice@example.com",
        "connector",
        "Opens issues and pull requests on GitHub",
    ),
    DemoAgent(
        "code-copilot",
        "bob@example.com",
        "copilot",
        "Pair-programs in the IDE",
        labels=(("team", "platform"),),
    ),
    DemoAgent("desktop-client", "bob@example.com", "mcp-client", "Bob's desktop MCP client"),
    DemoAgent("files-mcp", "carol@example.com", "mcp-server", "Serves the shared drive over MCP"),
)
DEMO_GRANTS = (
    ("support-bot", "tools/call", "zendesk/*"),
    ("triage-worker", "tools/call", "zendesk/get_ticket"),
    ("support-bot", "delegate", "triage-worker"),
    ("github-connector", "tools/call", "github/create_issue"),
    ("github-connector", "tools/call", "github/list_issues"),
    ("code-copilot", "tools/call", "github/*"),
    ("code-copilot", "resources/read", "repo/**"),
    ("user:alice@example.com", "tools/call", "github/*"),
    ("user:alice@example.com", "tools/call", "zendesk/*"),
    ("user:bob@example.com", "tools/call", "github/*"),
)
NO_DELETES = """\
@id("no-deletes")
forbid (principal, action == Action::"tools/call", resource)
when { resource.path like "*delete*" };
"""
_UNOWNED = DemoAgent(
    "legacy-scraper", "dave@example.com", "other", "Scrapes the old wiki; its owner has left"
)
_EXPIRED = DemoAgent(
    "q3-report-bot", "carol@example.com", "autonomous", "Built the Q3 report; its lifetime is over"
)


def _register(registry: Registry, agent: DemoAgent, tether: Tether, lifetime: timedelta) -> None:
    pair = generate_key_pair()
    path = tether.settings.keys_dir / f"{agent.name}.pem"
    path.unlink(missing_ok=True)
    write_private_key(path, pair.private_pem)
    registry.register(
        _SEEDER,
        AgentSpec(
            name=agent.name,
            owner=agent.owner,
            public_key=pair.public_key,
            kind=agent.kind,
            purpose=agent.purpose,
            parent=agent.parent,
            labels=dict(agent.labels),
            expires_in=lifetime,
        ),
    )


def seed_demo(tether: Tether) -> bool:
    """Create the demo organisation unless it exists; True when it was created now."""
    try:
        tether.registry.get(_SEEDER, DEMO_AGENTS[0].name)
        return False
    except NotFound:
        pass
    lifetime = tether.settings.agent_lifetime_default
    for agent in DEMO_AGENTS:
        _register(
            tether.registry, agent, tether, lifetime if agent.parent is None else lifetime / 2
        )
    _register(tether.registry, _UNOWNED, tether, lifetime)
    tether.registry.offboard_owner(_SEEDER, _UNOWNED.owner, "demo: dave left the company")
    # An agent registered 100 days ago for 90 days: expired today.
    past = tether.clock() - timedelta(days=100)
    backdated = Registry(replace(tether.services, clock=lambda: past))
    _register(backdated, _EXPIRED, tether, timedelta(days=90))
    for principal, action, resource in DEMO_GRANTS:
        tether.grants.add(
            _SEEDER, GrantSpec(principal, action, resource, reason="demo organisation")
        )
    tether.guardrails.add(_SEEDER, NO_DELETES, "demo/no-deletes.cedar")
    tether.registry.sweep()
    if tether.settings.detect.enabled:  # the detector starts with baselines learned
        tether.detector.learn(demo_history(tether))
    return True


# What each demo agent usually does, office hours (09:00-17:00 UTC) on weekdays: the
# tools it calls (by weight) and the agents it delegates to. ``demo_history`` makes two
# weeks of it, so the detector's baselines start learned (nothing in it is in the log).
DEMO_ROUTINE: dict[str, tuple[tuple[tuple[str, int], ...], tuple[str, ...]]] = {
    "support-bot": (
        (("zendesk/get_ticket", 6), ("zendesk/search_tickets", 3), ("zendesk/add_comment", 2)),
        ("triage-worker",),
    ),
    "triage-worker": ((("zendesk/get_ticket", 1),), ()),
    "github-connector": ((("github/list_issues", 3), ("github/create_issue", 1)), ()),
    "code-copilot": ((("github/list_issues", 2), ("github/get_file", 5)), ()),
    "desktop-client": ((("files/read_file", 4), ("files/list_directory", 2)), ()),
}


def demo_history(tether: Tether, days: int = 14) -> list[Event]:
    """Two weeks of the demo agents' usual work before now (seeded: the same each time)."""
    rng = random.Random(8700)  # noqa: S311 -- made-up demo history, not a secret
    person = {a.name: f"user:{a.owner}" for a in DEMO_AGENTS}
    issuer = tether.settings.issuer
    end = tether.clock().replace(minute=0, second=0, microsecond=0)
    events: list[Event] = []
    for day in range(days, 0, -1):
        date = end - timedelta(days=day)
        if date.weekday() >= 5:
            continue
        for minute in range(9 * 60, 17 * 60, 7):
            at = date.replace(hour=minute // 60, minute=minute % 60)
            for name, (tools, delegates) in DEMO_ROUTINE.items():
                if rng.random() > 0.35:
                    continue
                agent = tether.registry.agent_id(name)
                chain = (person[name], agent)
                [tool] = rng.choices([t for t, _ in tools], [w for _, w in tools])
                server = tool.split("/", 1)[0]
                events.append(
                    _past(
                        at,
                        "token.issued",
                        agent,
                        chain,
                        "token/issue",
                        f"{issuer}/mcp/{server}",
                        {"aud": f"{issuer}/mcp/{server}"},
                    )
                )
                events.append(_past(at, "decision", agent, chain, "tools/call", tool, {}))
                events.append(
                    _past(
                        at,
                        "tool.result",
                        agent,
                        chain,
                        "tools/call",
                        tool,
                        {"size": int(rng.lognormvariate(7, 1)), "outcome": "ok"},
                    )
                )
                for target in delegates:
                    if rng.random() < 0.3:
                        events.append(
                            _past(
                                at,
                                "decision",
                                agent,
                                chain,
                                "delegate",
                                tether.registry.agent_id(target),
                                {},
                            )
                        )
    events.sort(key=lambda e: e.at)
    return events


def _past(
    at: datetime,
    type: str,
    actor: str,
    chain: tuple[str, ...],
    action: str,
    resource: str,
    detail: dict[str, Any],
) -> Event:
    decision = "allow" if type == "decision" else None
    return Event(0, at, type, actor, actor, chain, action, resource, decision, (), None, detail)
