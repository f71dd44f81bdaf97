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
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
from anyio import to_thread

from tether.audit.record import Entry
from tether.cedar_schema import args_mismatch
from tether.core import Tether
from tether.errors import TetherError
from tether.gateway import scrub
from tether.gateway.deciding import Deciding
from tether.gateway.refusals import (
    APPROVAL_META,
    Held,
    Progress,
    Refused,
    error_result,
    reason_of,
)
from tether.policy.decision import Decision
from tether.tokens import VerifiedToken
from tether.upstreams.paths import FIELD, item_path

__all__ = [
    "APPROVAL_META",
    "Gateway",
    "Held",
    "Progress",
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


Listing = Callable[[], Awaitable[list[dict[str, Any]]]]


class Gateway:
    """Enforcement for one upstream server ``server`` (resource ``<issuer>/mcp/<server>``)."""

    def __init__(
        self,
        tether: Tether,
        server: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        poll: float = 0.25,
    ) -> None:
        self.tether = tether
        self.server = server
        self.resource = f"{tether.settings.issuer}/mcp/{server}"
        self._sleep = sleep  # how a held call waits between looks at its approval
        self._poll = poll
        self._deciding = Deciding(tether, self._refuse)

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
        self,
        bearer: str,
        upstream: ToolSource,
        name: str,
        arguments: dict[str, Any],
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The tool's result, or an error result that says why not (a held call's names
        its pending approval, also in ``_meta``)."""
        try:
            token, path, decision = await self._waiting(
                bearer, upstream.known_tools, "tool", name, arguments, progress
            )
        except Refused as refused:
            return error_result(refused.message, refused.meta)
        return await self._forward(
            token,
            "tools/call",
            path,
            lambda: upstream.call_tool(name, arguments),
            tool=True,
            decision=decision,
        )

    async def read_resource(
        self, bearer: str, upstream: Any, uri: str, progress: Progress | None = None
    ) -> dict[str, Any]:
        """The resource's contents; raises :class:`Refused` (:class:`Held`)."""
        token, path, decision = await self._waiting(
            bearer, upstream.list_resources, "resource", uri, {"uri": uri}, progress
        )
        return await self._forward(
            token, "resources/read", path, lambda: upstream.read_resource(uri), decision=decision
        )

    async def get_prompt(
        self,
        bearer: str,
        upstream: Any,
        name: str,
        arguments: dict[str, str],
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The prompt's messages; raises :class:`Refused` (:class:`Held`)."""
        token, path, decision = await self._waiting(
            bearer, upstream.list_prompts, "prompt", name, dict(arguments), progress
        )
        return await self._forward(
            token,
            "prompts/get",
            path,
            lambda: upstream.get_prompt(name, arguments),
            decision=decision,
        )

    async def _waiting(
        self,
        bearer: str,
        fetch: Listing,
        kind: str,
        wanted: str,
        args: dict[str, Any],
        progress: Progress | None,
    ) -> tuple[VerifiedToken, str, Decision]:
        """:meth:`_admit`; a held call waits up to ``guard.approval_wait`` for its approval
        (looking every ``poll`` seconds, telling ``progress`` while it waits) and is
        admitted again once approved: decided anew, consuming the approval."""
        try:
            return await self._admit(bearer, fetch, kind, wanted, args=args)
        except Held as held:
            wait = self.tether.settings.guard.approval_wait.total_seconds()
            if wait <= 0 or not await self._approved(held.approval, wait, progress):
                raise
        return await self._admit(bearer, fetch, kind, wanted, args=args)

    async def _approved(self, approval: str, wait: float, progress: Progress | None) -> bool:
        """Whether the approval was approved within ``wait`` seconds (False as soon as it
        is denied or expires, or if the store cannot say)."""
        looks = max(1, math.ceil(wait / self._poll))
        for look in range(1, looks + 1):
            await self._sleep(self._poll)
            try:
                state = await to_thread.run_sync(self.tether.approvals.state, approval)
            except Exception as exc:  # the store failed: stop waiting, the call stays held
                log.warning(
                    "approval %s could not be read while waiting: %s", approval, reason_of(exc)
                )
                return False
            if state != "pending":
                return state == "approved"
            if progress is not None:
                try:
                    await progress(look * self._poll, wait, f"waiting for approval {approval}")
                except Exception as exc:  # a client gone away: keep waiting quietly
                    log.debug("progress for %s not sent: %s", approval, type(exc).__name__)
        return False

    async def _admit(
        self,
        bearer: str,
        fetch: Listing,
        kind: str,
        wanted: str,
        *,
        args: dict[str, Any] | None = None,
    ) -> tuple[VerifiedToken, str, Decision]:
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
        return await to_thread.run_sync(self._judge, caller, kind, wanted, offered, args)

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
        args: dict[str, Any] | None = None,
    ) -> tuple[VerifiedToken, str, Decision]:
        """Decide and record the call (``args``: its arguments, which policies may read
        as ``context.args``); raises Refused (recorded) when it may not go upstream."""
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
            why = f"the request was not made: {reason_of(exc)}"
            self._refuse(f"{self.server}/{wanted}", action, why, actor)
            raise Refused(why) from None
        if not shown:
            why = f"{kind} {wanted} is not available ({held.get(wanted, f'no such {kind}')})"
            self._refuse(f"{self.server}/{wanted}", action, why, actor)
            raise Refused(why)
        path = item_path(self.server, kind, shown[0])
        if kind == "tool" and args and self.tether.reads_context("args"):
            # a rule reads the arguments: they must be what the pinned schema says they
            # are, or an upstream that coerces would act on a value no rule saw
            mismatch = args_mismatch(shown[0].get("inputSchema"), args)
            if mismatch is not None:
                why = f"the call's arguments cannot be decided on: {mismatch}"
                self._refuse(path, action, why, actor)
                raise Refused(why)
        decision = self._deciding.decide(token, action, path, args, actor)
        return token, path, decision

    async def _forward(
        self,
        token: VerifiedToken,
        action: str,
        path: str,
        send: Callable[[], Awaitable[dict[str, Any]]],
        *,
        tool: bool = False,
        decision: Decision | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await send()
            outcome = "error" if result.get("isError") else "ok"
        except Exception as exc:
            if not tool:
                self._result(token, action, path, "failed", 0, started, decision=decision)
                raise Refused(f"the upstream failed: {reason_of(exc)}") from None
            result, outcome = error_result(f"the upstream failed: {reason_of(exc)}"), "failed"
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
                why = f"{why} ({reason_of(exc)})"
                log.warning("%s %s: %s", action, path, why)
                self.tether.metrics.inc("tether_gateway_results_withheld_total")
                self._result(token, action, path, "withheld", size, started, found, decision)
                if not tool:
                    raise Refused(why) from None
                return error_result(why)
        for item, count in found.items():
            self.tether.metrics.inc("tether_gateway_redactions_total", count, type=item.type)
        self._result(token, action, path, outcome, size, started, found, decision)
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
        decision: Decision | None = None,
    ) -> None:
        if decision is not None and decision.budget and outcome != "failed":
            # what the upstream returned counts against the grants' bytes limits (the
            # gateway's own message about a failed call does not)
            self.tether.budgets.spend(decision, size)
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
