"""Rules on a tool's arguments at the gateway, against a real MCP server (official SDK)
over stdio: a grant condition on ``context.args.path`` lets the tool be listed and called
under the allowed prefix only; the shipped ``..`` guardrail refuses a path that climbs out
of it; refused calls never reach the server; every decision keeps the arguments' digest."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ADMIN, spec

from tether.core import Tether
from tether.gateway.enforce import Gateway
from tether.gateway.upstream import UpstreamSession
from tether.grants import GrantSpec
from tether.policy.decision import canonical
from tether.upstreams.servers import UpstreamSpec

SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
NO_DOTDOT = Path(__file__).resolve().parents[1] / "docs" / "policies" / "no-dotdot.cedar"


def _text(result: dict[str, Any]) -> str:
    return " ".join(c.get("text", "") for c in result["content"])


@pytest.mark.slow
def test_a_path_rule_and_the_dotdot_guardrail_at_the_gateway(
    tether: Tether, tmp_path: Path
) -> None:
    allowed = tmp_path / "reports"
    allowed.mkdir()
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
    tether.registry.register(ADMIN, spec("helper"))
    when = f"context.args.path like {json.dumps(str(allowed) + '/*')}"
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/write_note", condition=when))
    tether.guardrails.add(ADMIN, NO_DOTDOT.read_text())
    agent = tether.registry.get(ADMIN, "helper")
    token = tether.tokens.client_credentials(
        agent, f"{tether.settings.issuer}/mcp/test", None, None
    ).access_token
    inside = {"path": str(allowed / "q1.txt"), "text": "ok"}
    outside = {"path": str(tmp_path / "elsewhere.txt"), "text": "pwned"}
    climbing = {"path": str(allowed / ".." / "climbed.txt"), "text": "pwned"}

    async def run() -> list[dict[str, Any]]:
        gate = Gateway(tether, "test")
        async with UpstreamSession(tether.upstreams.get("test")) as upstream:
            listed = [t["name"] for t in await gate.list_tools(token, upstream)]
            assert listed == ["write_note"]  # some call of it could be allowed
            return [
                await gate.call_tool(token, upstream, "write_note", args)
                for args in (inside, outside, climbing)
            ]

    wrote, refused, climbed = anyio.run(run)
    assert not wrote.get("isError") and (allowed / "q1.txt").read_text() == "ok"
    assert refused["isError"] and "holds no grant" in _text(refused)
    assert climbed["isError"] and "no-dotdot" in _text(climbed)
    assert not (tmp_path / "elsewhere.txt").exists() and not (tmp_path / "climbed.txt").exists()
    decisions = tether.events.list(type="decision")
    assert [d.decision for d in decisions] == ["allow", "deny", "deny"]
    digests = [d.detail["args_digest"] for d in decisions]
    expected = [canonical(a) for a in (inside, outside, climbing)]
    assert digests == [hashlib.sha256(e.encode()).hexdigest() for e in expected]


@pytest.mark.slow
def test_an_argument_of_the_wrong_type_does_not_slip_past_an_equality_guardrail(
    tether: Tether,
) -> None:
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/env_value"))
    tether.guardrails.add(
        ADMIN,
        '@id("no-fail") forbid (principal, action, resource) '
        "when { context.args has fail && context.args.fail == true };",
    )
    agent = tether.registry.get(ADMIN, "helper")
    token = tether.tokens.client_credentials(
        agent, f"{tether.settings.issuer}/mcp/test", None, None
    ).access_token

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        gate = Gateway(tether, "test")
        async with UpstreamSession(tether.upstreams.get("test")) as upstream:
            await gate.list_tools(token, upstream)
            typed = await gate.call_tool(token, upstream, "env_value", {"name": "X", "fail": True})
            spelled = await gate.call_tool(
                token, upstream, "env_value", {"name": "X", "fail": "true"}
            )
            return typed, spelled

    typed, spelled = anyio.run(run)
    assert typed["isError"] and "no-fail" in _text(typed)
    # the upstream coerces "true" to True: the call the guardrail forbids must not run
    assert "cannot use" not in _text(spelled)
    assert spelled["isError"] and "denied" in _text(spelled)
