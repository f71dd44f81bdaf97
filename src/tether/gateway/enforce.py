"""The policy enforcement point: what an agent's token may see and use upstream.

Every listing shows only the pinned tools, resources and prompts the token's chain may
use (delegation rule, token scope), through :meth:`tether.core.Tether.visible`, an
unrecorded filter that can hide but never allow; every ``tools/call``,
``resources/read`` and ``prompts/get`` is decided by the PDP and written to the audit
log *before* it is forwarded. A deny, a token that no longer verifies, a changed
definition or any failure on the way is refused with the reason (a tool call gets an MCP
error result; a read or a prompt an MCP error), and the upstream never sees the request.
The result is audited too (outcome, size, latency, the secrets taken out of it: with
``[guard] scan_results``, every secret in it is redacted before the agent sees it, and a
result that could not be checked is withheld: :mod:`tether.gateway.scrub`). Grants name
tools and prompts as ``SERVER/<name>`` and resources by their URI
(:mod:`tether.upstreams.paths`). A listing of more items than ``gateway_max_items`` is
refused whole, with the reason; nothing of it is pinned or shown.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from anyio import to_thread

from tether.audit.record import Entry
from tether.core import Tether
from tether.errors import TetherError
from tether.gateway import scrub
from tether.tokens import VerifiedToken
from tether.upstreams.paths import FIELD, item_path

__all__ = [
    "Gateway",
    "Refused",
    "ToolSource",
    "error_result",
]

log = logging.getLogger("tether.gateway")

# a result larger than this (bytes of JSON) is scanned for secrets off the event loop
_SCAN_INLINE = 64 * 1024
# kind -> the action decided
_ACTIONS = {"tool": "tools/call", "resource": "resources/read", "prompt": "prompts/get"}


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


Listing = Callable[[], Awaitable[list[dict[str, Any]]]]


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
        """What the token's chain may see of a listing; raises :class:`Refused` when the
        listing is larger than the cap."""
        action = _ACTIONS[kind]
        token = await to_thread.run_sync(self.verify, bearer)
        offered = await fetch()
        try:
            self._capped(kind, offered)
        except Refused as refused:
            actor, path = str(token.claims["client_id"]), f"{self.server}/*"
            await to_thread.run_sync(self._refuse, path, action, refused.reason, actor)
            raise

        def visible() -> list[dict[str, Any]]:
            # an unrecorded filter: it hides what the chain may not use; every use of what
            # it shows is decided and recorded on its own (_judge), never taken from here
            shown = self.tether.pins.observe(self.server, kind, offered)
            return [
                dict(item)
                for item in self.tether.visible(
                    shown, lambda i: token.request(action, item_path(self.server, kind, i))
                )
            ]

        return await to_thread.run_sync(visible)

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
        (recorded) when the request may not go upstream. The work on the store is one
        thread hop; a tool is looked up in the upstream's last listing, so the token is
        checked with the rest, while a resource or prompt costs a fresh listing, which is
        only fetched for a valid token."""
        action, key = _ACTIONS[kind], FIELD[kind]
        caller: str | VerifiedToken = bearer
        if kind != "tool":
            caller = await to_thread.run_sync(self._verified, bearer, action)
        try:  # only an item the upstream serves, as pinned, may be used
            listing = await fetch()
            self._capped(kind, listing)
            offered: list[dict[str, Any]] | Exception = [
                item for item in listing if item.get(key) == wanted
            ]
        except Exception as exc:  # the upstream failed: refused below, with the caller
            offered = exc
        return await to_thread.run_sync(self._judge, caller, kind, wanted, offered)

    def _verified(self, bearer: str, action: str) -> VerifiedToken:
        try:
            return self.verify(bearer)
        except TetherError as exc:
            self._refuse(f"{self.server}/*", action, exc.description)
            raise Refused(exc.description) from None

    def _judge(
        self,
        caller: str | VerifiedToken,
        kind: str,
        wanted: str,
        offered: list[dict[str, Any]] | Exception,
    ) -> tuple[VerifiedToken, str]:
        action = _ACTIONS[kind]
        token = self._verified(caller, action) if isinstance(caller, str) else caller
        actor = str(token.claims["client_id"])
        try:
            if isinstance(offered, Exception):
                raise offered
            shown = self.tether.pins.observe(self.server, kind, offered, complete=False)
            held: dict[str, str] = {}
            if not shown:  # why it is held (the pins are settled now: nothing is recorded twice)
                held = self.tether.pins.sort(self.server, kind, offered, complete=False).held
        except Exception as exc:  # the upstream or the store failed: fail closed
            why = f"the request was not made: {_reason(exc)}"
            self._refuse(f"{self.server}/{wanted}", action, why, actor)
            raise Refused(why) from None
        if not shown:
            why = f"{kind} {wanted} is not available ({held.get(wanted, f'no such {kind}')})"
            self._refuse(f"{self.server}/{wanted}", action, why, actor)
            raise Refused(why)
        path = item_path(self.server, kind, shown[0])
        [decision] = self.tether.decide_all([token.request(action, path)])
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
                self._result(token, action, path, "failed", 0, started)
                raise Refused(f"the upstream failed: {_reason(exc)}") from None
            result, outcome = error_result(f"the upstream failed: {_reason(exc)}"), "failed"
        size = len(json.dumps(result, separators=(",", ":")).encode())
        # the injected credentials, taken out by the upstream session
        found = scrub.injected(
            getattr(result, "redacted", None) or {}, getattr(result, "fingerprints", None) or {}
        )
        if self.tether.settings.guard.scan_results:
            try:  # any other secret, before the agent sees it (a large result off the loop)
                if size > _SCAN_INLINE:
                    result, more = await to_thread.run_sync(self._scrubbed, result)
                else:
                    result, more = self._scrubbed(result)
                found.update(more)
            except Exception as exc:  # not checked, not shown (fail closed)
                why = "the result was withheld: it could not be checked for secrets"
                why = f"{why} ({_reason(exc)})"
                log.warning("%s %s: %s", action, path, why)
                self.tether.metrics.inc("tether_gateway_results_withheld_total")
                self._result(token, action, path, "withheld", size, started, found)
                if not tool:
                    raise Refused(why) from None
                return error_result(why)
        for item, count in found.items():
            self.tether.metrics.inc("tether_gateway_redactions_total", count, type=item.type)
        self._result(token, action, path, outcome, size, started, found)
        return result

    def _scrubbed(self, result: dict[str, Any]) -> tuple[dict[str, Any], Counter[scrub.Found]]:
        return scrub.scrub(result, self.tether.settings.home)

    def _capped(self, kind: str, listing: list[dict[str, Any]]) -> None:
        """Refuse a listing of more items than ``gateway_max_items`` (before any of it
        is pinned: a huge listing costs neither pins nor decisions)."""
        cap = self.tether.settings.gateway_max_items
        if len(listing) > cap:
            raise Refused(
                f"upstream {self.server} lists {len(listing)} {kind}s, more than the "
                f"gateway's cap of {cap} (gateway_max_items): refused"
            )

    def _refuse(self, path: str, action: str, why: str, actor: str = "anonymous") -> None:
        self.tether.refused(actor, why, "mcp", type="tool.refused", action=action, resource=path)

    def _result(
        self,
        token: VerifiedToken,
        action: str,
        path: str,
        outcome: str,
        size: int,
        started: float,
        redacted: Mapping[scrub.Found, int] | None = None,
    ) -> None:
        actor = str(token.claims["client_id"])
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        detail: dict[str, Any] = {"outcome": outcome, "size": size, "latency_ms": latency_ms}
        if redacted:  # the secrets taken out: type and fingerprint, never a value
            detail["redacted"] = scrub.summary(redacted)
        # The decision was recorded before the call; the result rides along with the next
        # commit of the log (or its own within 50 ms), so it does not hold answers up.
        self.tether.events.defer(
            Entry.of(
                "tool.result",
                actor=actor,
                subject=actor,
                chain=token.chain,
                action=action,
                resource=path,
                detail=detail,
            )
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, Refused):
        return exc.reason
    return exc.description if isinstance(exc, TetherError) else type(exc).__name__
