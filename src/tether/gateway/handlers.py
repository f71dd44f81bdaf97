"""The MCP server side of the gateway, shared by its faces (``/mcp/NAME`` and stdio):
each request is answered through :class:`Gateway` for the caller's token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from tether.errors import InvalidToken, TetherError
from tether.gateway.enforce import Gateway, Progress, Refused, error_result
from tether.gateway.upstream import UpstreamSession

__all__ = [
    "DENIED",
    "UNAVAILABLE",
    "Opened",
    "Resolve",
    "build_server",
    "call",
    "get_prompt",
    "listing",
    "opening",
    "read",
]

DENIED = -32003  # a JSON-RPC server error: the request was refused (and recorded)
UNAVAILABLE = -32004  # a JSON-RPC server error: the upstream cannot be reached now

# For a request: the gateway of its server, the caller's bearer token, the open upstream.
Opened = tuple[Gateway, str, UpstreamSession]
Resolve = Callable[[Any], Awaitable[Opened]]


# ---- the answers, shared by the SDK server below and the lean path (plain dicts) ----------


async def opening(resolved: Awaitable[Opened]) -> Opened:
    """The request's gateway, bearer and upstream; raises MCPError (-32004) when there is
    no such upstream or it cannot be started now."""
    try:
        return await resolved
    except TetherError as exc:
        why = f"upstream unavailable: {exc.description}"
        raise MCPError(code=UNAVAILABLE, message=why) from None


async def listing(resolved: Awaitable[Opened], kind: str) -> list[dict[str, Any]]:
    """What the caller may see of the upstream's tools, resources or prompts (``kind``);
    raises MCPError (-32004) when the upstream is away or the listing is too large."""
    gate, bearer, upstream = await opening(resolved)
    fetch = {"tool": gate.list_tools, "resource": gate.list_resources}.get(kind, gate.list_prompts)
    try:
        return await fetch(bearer, upstream)
    except Refused as refused:  # too large a listing: refused whole
        raise MCPError(code=UNAVAILABLE, message=refused.reason) from None
    except InvalidToken as exc:  # it stopped verifying since the request came in
        raise MCPError(code=DENIED, message=f"denied: {exc.description}") from None
    except TetherError as exc:  # the upstream failed (or the store): an MCP error, with why
        raise MCPError(code=UNAVAILABLE, message=f"unavailable: {exc.description}") from None


async def call(
    resolved: Awaitable[Opened],
    name: str,
    arguments: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The tool's result: a refusal or an unavailable upstream is an error result (a held
    call's names the pending approval, in its text and its ``_meta``)."""
    try:
        gate, bearer, upstream = await opening(resolved)
    except MCPError as exc:
        return error_result(exc.error.message)
    if progress is None:
        return await gate.call_tool(bearer, upstream, name, arguments)
    return await gate.call_tool(bearer, upstream, name, arguments, progress=progress)


def _refusal(refused: Refused) -> MCPError:
    """-32003 with what the agent is told (a held request's ``data`` names its approval)."""
    return MCPError(code=DENIED, message=refused.message, data=refused.meta)


async def read(
    resolved: Awaitable[Opened], uri: str, progress: Progress | None = None
) -> dict[str, Any]:
    """The resource's contents; raises MCPError (-32003 denied or held, -32004 unavailable)."""
    gate, bearer, upstream = await opening(resolved)
    try:
        return await gate.read_resource(bearer, upstream, uri, progress)
    except Refused as refused:
        raise _refusal(refused) from None


async def get_prompt(
    resolved: Awaitable[Opened],
    name: str,
    arguments: dict[str, str],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The prompt's messages; raises MCPError (-32003 denied or held, -32004 unavailable)."""
    gate, bearer, upstream = await opening(resolved)
    try:
        return await gate.get_prompt(bearer, upstream, name, arguments, progress)
    except Refused as refused:
        raise _refusal(refused) from None


def _progress(ctx: Any) -> Progress | None:
    """Progress notifications for the request of ``ctx``, when it carries a
    ``progressToken`` (None otherwise: nothing to tell)."""
    meta = getattr(ctx, "meta", None)
    if not isinstance(meta, Mapping) or meta.get("progress_token") is None:
        return None

    async def report(progress: float, total: float | None, message: str) -> None:
        await ctx.session.report_progress(progress, total, message)

    return report


# ---- the SDK server ---------------------------------------------------------------------


def build_server(
    resolve: Resolve,
    *,
    version: str,
    input_schema: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> Server[Any]:
    """An MCP server whose every handler enforces through the resolved gateway
    (``input_schema``: a tool's input schema, if known, for the SDK's header checks)."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = await listing(resolve(ctx), "tool")
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in tools])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await call(resolve(ctx), params.name, dict(params.arguments or {}), _progress(ctx))
        return types.CallToolResult.model_validate(result)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        found = await listing(resolve(ctx), "resource")
        return types.ListResourcesResult(
            resources=[types.Resource.model_validate(r) for r in found]
        )

    async def read_resource(
        ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        found = await read(resolve(ctx), str(params.uri), _progress(ctx))
        return types.ReadResourceResult.model_validate(found)

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        found = await listing(resolve(ctx), "prompt")
        return types.ListPromptsResult(prompts=[types.Prompt.model_validate(p) for p in found])

    async def prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        arguments = {k: str(v) for k, v in (params.arguments or {}).items()}
        got = await get_prompt(resolve(ctx), params.name, arguments, _progress(ctx))
        return types.GetPromptResult.model_validate(got)

    return Server(
        "tether-gateway",
        version=version,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=prompt,
        get_tool_input_schema=input_schema,
    )
