"""The policy enforcement point: what an agent's token may see and use upstream.

Every listing shows only the pinned tools, resources and prompts the token's chain may
use (delegation rule, token scope); every ``tools/call``, ``resources/read`` and
``prompts/get`` is decided by the PDP and written to the audit log *before* it is
forwarded. A deny, a token that no longer verifies, a changed definition or any failure on
the way is refused with the reason (a tool call gets an MCP error result; a read or a
prompt an MCP error), and the upstream never sees the request. The result is audited too
(outcome, size, latency). Grants name items as ``SERVER/<tool, resource or prompt name>``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from anyio import to_thread

from tether.core import Tether
from tether.errors import TetherError
from tether.policy.decision import AccessRequest
from tether.tokens import VerifiedToken

__all__ = [
    "Gateway",
    "Refused",
    "ToolSource",
    "error_result",
    "request_for",
    "results_recorded",
]

log = logging.getLogger("tether.gateway")

# kind -> (the action decided, the field naming an item in a listing, its name in grants)
_KINDS = {
    "tool": ("tools/call", "name"),
    "resource": ("resources/read", "uri"),
    "prompt": ("prompts/get", "name"),
}


class ToolSource(Protocol):
    async def list_tools(self) -> list[dict[str, Any]]: ...
    async def known_tools(self) -> list[dict[str, Any]]: ...
    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]: ...


class Refused(Exception):
    """The request was refused (and recorded); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_result(text: str) -> dict[str, Any]:
    """An MCP tool result that says why nothing was done."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def request_for(token: VerifiedToken, action: str, resource: str) -> AccessRequest:
    """The PDP question for a request made with ``token``: its chain and scope."""
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


Listing = Callable[[], Awaitable[list[dict[str, Any]]]]

# Records the results of forwarded requests behind the answers (one worker: in order).
_RESULTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-results")


class Gateway:
    """Enforcement for one upstream server ``server`` (resource ``<issuer>/mcp/<server>``)."""

    def __init__(self, tether: Tether, server: str) -> None:
        self.tether = tether
        self.server = server
        self.resource = f"{tether.settings.issuer}/mcp/{server}"

    def verify(self, bearer: str) -> VerifiedToken:
        """The caller's token, for this server only; raises InvalidToken."""
        return self.tether.tokens.verify(bearer, self.resource)

    # ---- listings -------------------------------------------------------------------------

    async def list_tools(self, bearer: str, upstream: ToolSource) -> list[dict[str, Any]]:
        return await self._listing(bearer, upstream.list_tools, "tool")

    async def list_resources(self, bearer: str, upstream: Any) -> list[dict[str, Any]]:
        return await self._listing(bearer, upstream.list_resources, "resource")

    async def list_prompts(self, bearer: str, upstream: Any) -> list[dict[str, Any]]:
        return await self._listing(bearer, upstream.list_prompts, "prompt")

    async def _listing(self, bearer: str, fetch: Listing, kind: str) -> list[dict[str, Any]]:
        action, _ = _KINDS[kind]
        token = await to_thread.run_sync(self.verify, bearer)
        offered = await fetch()
        shown = await to_thread.run_sync(self.tether.pins.observe, self.server, kind, offered)
        requests = [request_for(token, action, self._path(kind, item)) for item in shown]
        decisions = await to_thread.run_sync(lambda: [self.tether.pdp.decide(r) for r in requests])
        return [dict(item) for item, d in zip(shown, decisions, strict=True) if d.allowed]

    # ---- uses -----------------------------------------------------------------------------

    async def call_tool(
        self, bearer: str, upstream: ToolSource, name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            token, path = await self._admit(bearer, upstream.known_tools, "tool", name)
        except Refused as refused:
            return error_result(f"denied: {refused.reason}")
        return await self._forward(
            token, "tools/call", path, lambda: upstream.call_tool(name, arguments), tool=True
        )

    async def read_resource(self, bearer: str, upstream: Any, uri: str) -> dict[str, Any]:
        """The resource's contents; raises :class:`Refused`."""
        token, path = await self._admit(bearer, upstream.list_resources, "resource", uri)
        return await self._forward(
            token, "resources/read", path, lambda: upstream.read_resource(uri)
        )

    async def get_prompt(
        self, bearer: str, upstream: Any, name: str, arguments: dict[str, str]
    ) -> dict[str, Any]:
        """The prompt's messages; raises :class:`Refused`."""
        token, path = await self._admit(bearer, upstream.list_prompts, "prompt", name)
        return await self._forward(
            token, "prompts/get", path, lambda: upstream.get_prompt(name, arguments)
        )

    async def _admit(
        self, bearer: str, fetch: Listing, kind: str, wanted: str
    ) -> tuple[VerifiedToken, str]:
        """Verify the token, find the pinned item, decide and record; raises Refused
        (recorded) when the request may not go upstream."""
        action, key = _KINDS[kind]
        try:
            token = await to_thread.run_sync(self.verify, bearer)
        except TetherError as exc:
            await self._refused(f"{self.server}/*", action, exc.description)
            raise Refused(exc.description) from None
        actor = str(token.claims["client_id"])
        try:  # only an item the upstream serves, as pinned, may be used
            offered = [item for item in await fetch() if item.get(key) == wanted]
            shown = await to_thread.run_sync(self.tether.pins.observe, self.server, kind, offered)
        except Exception as exc:  # the upstream or the store failed: fail closed
            why = f"the request was not made: {_reason(exc)}"
            await self._refused(f"{self.server}/{wanted}", action, why, actor)
            raise Refused(why) from None
        if not shown:
            detail = (
                f"no such {kind}"
                if not offered
                else "its definition changed: blocked until approved"
            )
            why = f"{kind} {wanted} is not available ({detail})"
            await self._refused(f"{self.server}/{wanted}", action, why, actor)
            raise Refused(why)
        path = self._path(kind, shown[0])
        [decision] = await to_thread.run_sync(
            self.tether.decide_all, [request_for(token, action, path)]
        )
        if not decision.allowed:
            raise Refused("; ".join(decision.reasons))
        return token, path

    async def _forward(
        self,
        token: VerifiedToken,
        action: str,
        path: str,
        send: Callable[[], Awaitable[dict[str, Any]]],
        *,
        tool: bool = False,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await send()
            outcome = "error" if result.get("isError") else "ok"
        except Exception as exc:
            if not tool:
                await self._result(token, action, path, "failed", 0, started)
                raise Refused(f"the upstream failed: {_reason(exc)}") from None
            result, outcome = error_result(f"the upstream failed: {_reason(exc)}"), "failed"
        size = len(json.dumps(result, separators=(",", ":")).encode())
        await self._result(token, action, path, outcome, size, started)
        return result

    def _path(self, kind: str, item: Mapping[str, Any]) -> str:
        """How grants name an item: ``SERVER/<name>`` (a resource by its name, or its URI
        when it has none)."""
        name = item.get("name") if kind != "resource" else item.get("name") or item.get("uri")
        return f"{self.server}/{name}"

    async def _refused(self, path: str, action: str, why: str, actor: str = "anonymous") -> None:
        await to_thread.run_sync(
            lambda: self.tether.refused(
                actor, why, "mcp", type="tool.refused", action=action, resource=path
            )
        )

    async def _result(
        self,
        token: VerifiedToken,
        action: str,
        path: str,
        outcome: str,
        size: int,
        started: float,
    ) -> None:
        actor = str(token.claims["client_id"])
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        # The decision was recorded before the call; the result is recorded behind the
        # answer (through the group commit), so it does not hold the response up.
        future = _RESULTS.submit(
            self.tether.events.record,
            "tool.result",
            actor=actor,
            subject=actor,
            chain=token.chain,
            action=action,
            resource=path,
            detail={"outcome": outcome, "size": size, "latency_ms": latency_ms},
        )
        future.add_done_callback(_log_failure)


def results_recorded() -> None:
    """Wait until every result handed to the recorder so far is written (tests, shutdown)."""
    _RESULTS.submit(lambda: None).result()


def _log_failure(future: Future[Any]) -> None:
    if future.exception() is not None:
        log.error("a tool result could not be recorded: %s", future.exception())


def _reason(exc: Exception) -> str:
    return exc.description if isinstance(exc, TetherError) else type(exc).__name__
