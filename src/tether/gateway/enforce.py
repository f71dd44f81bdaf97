"""The policy enforcement point: what an agent's token may see and call upstream.

Every listing shows only the pinned tools the token's chain may use (delegation rule,
token scope); every call is decided by the PDP and written to the audit log *before* it
is forwarded. A deny, a token that no longer verifies, a changed tool or any failure on
the way comes back as an MCP error result with the reason, and the upstream never sees
the call. The result is audited too (outcome, size, latency).
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from anyio import to_thread

from tether.core import Tether
from tether.errors import TetherError
from tether.policy.decision import AccessRequest
from tether.tokens import VerifiedToken

__all__ = ["Gateway", "ToolSource", "error_result", "request_for"]


class ToolSource(Protocol):
    async def list_tools(self) -> list[dict[str, Any]]: ...
    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]: ...


def error_result(text: str) -> dict[str, Any]:
    """An MCP tool result that says why nothing was done."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def request_for(token: VerifiedToken, action: str, resource: str) -> AccessRequest:
    """The PDP question for a call made with ``token``: its chain and scope."""
    people = [c for c in token.chain if c.startswith("user:")]
    agents = [c for c in token.chain if not c.startswith("user:")]
    return AccessRequest.of(
        str(token.claims["client_id"]),
        action,
        resource,
        on_behalf_of=people[0] if people else None,
        chain=agents[:-1],
        scope=token.scope,
    )


class Gateway:
    """Enforcement for one upstream server ``server`` (resource ``<issuer>/mcp/<server>``)."""

    def __init__(self, tether: Tether, server: str) -> None:
        self.tether = tether
        self.server = server
        self.resource = f"{tether.settings.issuer}/mcp/{server}"

    def verify(self, bearer: str) -> VerifiedToken:
        """The caller's token, for this server only; raises InvalidToken."""
        return self.tether.tokens.verify(bearer, self.resource)

    async def list_tools(self, bearer: str, upstream: ToolSource) -> list[dict[str, Any]]:
        token = await to_thread.run_sync(self.verify, bearer)
        offered = await upstream.list_tools()
        shown = await to_thread.run_sync(self.tether.pins.observe, self.server, "tool", offered)
        requests = [request_for(token, "tools/call", f"{self.server}/{t['name']}") for t in shown]
        decisions = await to_thread.run_sync(lambda: [self.tether.pdp.decide(r) for r in requests])
        return [dict(t) for t, d in zip(shown, decisions, strict=True) if d.allowed]

    async def call_tool(
        self, bearer: str, upstream: ToolSource, name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        resource = f"{self.server}/{name}"
        try:
            token = await to_thread.run_sync(self.verify, bearer)
        except TetherError as exc:
            await to_thread.run_sync(self._refused, resource, exc.description)
            return error_result(f"denied: {exc.description}")
        try:  # only a tool the upstream serves as pinned may run
            offered = [t for t in await upstream.list_tools() if t.get("name") == name]
            shown = await to_thread.run_sync(self.tether.pins.observe, self.server, "tool", offered)
        except Exception as exc:  # the upstream or the store failed: fail closed
            return error_result(f"the call was not made: {_reason(exc)}")
        request = request_for(token, "tools/call", resource)
        [decision] = await to_thread.run_sync(self.tether.decide_all, [request])
        if not offered or not shown:
            why = (
                "no such tool" if not offered else "its definition changed: blocked until approved"
            )
            return error_result(f"denied: {name} is not available ({why})")
        if not decision.allowed:
            return error_result("denied: " + "; ".join(decision.reasons))
        started = time.perf_counter()
        try:
            result = await upstream.call_tool(name, arguments)
            outcome = "error" if result.get("isError") else "ok"
        except Exception as exc:
            result, outcome = error_result(f"the upstream failed: {_reason(exc)}"), "failed"
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        size = len(json.dumps(result, separators=(",", ":")).encode())
        await to_thread.run_sync(self._result, token, resource, outcome, size, latency_ms)
        return result

    def _refused(self, resource: str, why: str, actor: str = "anonymous") -> None:
        self.tether.refused(
            actor, why, "mcp", type="tool.refused", action="tools/call", resource=resource
        )

    def _result(
        self, token: VerifiedToken, resource: str, outcome: str, size: int, latency_ms: float
    ) -> None:
        actor = str(token.claims["client_id"])
        self.tether.events.record(
            "tool.result",
            actor=actor,
            subject=actor,
            chain=token.chain,
            action="tools/call",
            resource=resource,
            detail={"outcome": outcome, "size": size, "latency_ms": latency_ms},
        )


def _reason(exc: Exception) -> str:
    return exc.description if isinstance(exc, TetherError) else type(exc).__name__
