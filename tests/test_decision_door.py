"""One door for decisions (DESIGN.md §5, invariant 8): every allow comes from
``Tether.decide_all`` / ``authorize`` and is recorded; a listing is filtered through
``Tether.visible``, which hands back items (never a ``Decision``) and records nothing, so
it can hide but never allow; nothing outside the core calls the decision point."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import anyio
import pytest
import test_gateway_enforce
import test_pdp
from conftest import ADMIN

from tether import AccessRequest, Tether
from tether.gateway.enforce import Gateway
from tether.policy.decision import Decision

SRC = Path(__file__).resolve().parents[1] / "src" / "tether"
ALICE = "user:alice@example.com"
org = test_pdp.org  # helper may create issues; alice may call any github tool
gateway = test_gateway_enforce.gateway  # helper may call test/echo and test/env_digest
TOOLS = [
    {"name": name, "description": f"the {name} tool", "inputSchema": {"type": "object"}}
    for name in ("echo", "write_note", "env_digest")
]


def test_nothing_outside_the_core_calls_the_decision_point() -> None:
    """The PDP is reached only through :class:`tether.core.Tether` (its ``pdp`` attribute
    is read nowhere else, and no other module imports the decision point)."""
    offenders: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name in ("core.py", "policy/pdp.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "pdp":
                offenders.append(f"{name}:{node.lineno} .pdp")
            if isinstance(node, ast.ImportFrom) and node.module == "tether.policy.pdp":
                offenders.append(f"{name}:{node.lineno} imports the decision point")
            if isinstance(node, ast.Import) and any(
                alias.name == "tether.policy.pdp" for alias in node.names
            ):
                offenders.append(f"{name}:{node.lineno} imports the decision point")
    assert offenders == []


def _for_alice(resource: str) -> AccessRequest:
    return AccessRequest.of("helper", "tools/call", resource, on_behalf_of=ALICE)


def test_the_filter_returns_items_and_records_nothing(org: Tether) -> None:
    seen = len(org.events.list(type="decision"))
    items = ["github/create_issue", "github/delete_repo", "github/create_issue"]
    shown = org.visible(items, _for_alice)
    assert shown == ["github/create_issue", "github/create_issue"]
    assert not any(isinstance(item, Decision) for item in shown)
    assert len(org.events.list(type="decision")) == seen  # a filter is not on record
    [recorded] = org.decide_all([_for_alice("github/create_issue")])
    assert recorded.allowed
    assert len(org.events.list(type="decision")) == seen + 1


class Upstream:
    """An MCP server's tools, in memory: what was called is kept."""

    def __init__(self) -> None:
        self.called: list[str] = []

    async def list_tools(self) -> list[dict[str, Any]]:
        return [dict(tool) for tool in TOOLS]

    async def known_tools(self) -> list[dict[str, Any]]:
        return await self.list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        self.called.append(name)
        return {"content": [{"type": "text", "text": name}]}


def _decisions(tether: Tether) -> list[tuple[str | None, str | None]]:
    return [(d.resource, d.decision) for d in tether.events.list(type="decision")]


def test_a_listing_is_not_on_record_and_every_call_is(gateway: tuple[Tether, str]) -> None:
    tether, token = gateway
    upstream = Upstream()

    async def run() -> list[str]:
        gate = Gateway(tether, "test")
        listed = [t["name"] for t in await gate.list_tools(token, upstream)]
        await gate.call_tool(token, upstream, "echo", {})
        return listed

    assert anyio.run(run) == ["echo", "env_digest"]
    assert _decisions(tether) == [("test/echo", "allow")]  # the call, not the listing


def test_a_filter_that_shows_everything_still_allows_nothing(
    gateway: tuple[Tether, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the listing filter wrong (here: it shows every item), a call of what it shows
    is still decided, recorded and denied: the listing's answer is never an allow."""
    tether, token = gateway
    upstream = Upstream()
    monkeypatch.setattr(Tether, "visible", lambda self, items, request_of: list(items))

    async def run() -> tuple[list[str], dict[str, Any]]:
        gate = Gateway(tether, "test")
        listed = [t["name"] for t in await gate.list_tools(token, upstream)]
        return listed, await gate.call_tool(token, upstream, "write_note", {})

    listed, result = anyio.run(run)
    assert "write_note" in listed
    assert result["isError"]
    assert upstream.called == []
    assert _decisions(tether) == [("test/write_note", "deny")]


def test_what_a_listing_showed_is_decided_again_when_used(gateway: tuple[Tether, str]) -> None:
    """A grant revoked after the listing: the call of a listed tool is denied."""
    tether, token = gateway
    upstream = Upstream()

    async def run() -> tuple[list[str], dict[str, Any]]:
        gate = Gateway(tether, "test")
        listed = [t["name"] for t in await gate.list_tools(token, upstream)]
        [echo] = [g for g in tether.grants.list(ADMIN) if g.resource == "test/echo"]
        await anyio.to_thread.run_sync(tether.grants.revoke, ADMIN, echo.id)
        return listed, await gate.call_tool(token, upstream, "echo", {})

    listed, result = anyio.run(run)
    assert "echo" in listed
    assert result["isError"]
    assert upstream.called == []
    assert _decisions(tether) == [("test/echo", "deny")]
