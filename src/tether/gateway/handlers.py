"""The MCP server side of the gateway, shared by its faces (``/mcp/NAME`` and stdio):
each request is answered through :class:`Gateway` for the caller's token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from tether.errors import TetherError
from tether.gateway.enforce import Gateway, Refused, error_result
from tether.gateway.upstream import UpstreamSession

__all__ = ["DENIED", "UNAVAILABLE", "Resolve", "build_server"]

DENIED = -32003  # a JSON-RPC server error: the request was refused (and recorded)
UNAVAILABLE = -32004  # a JSON-RPC server error: the upstream cannot be reached now

# For a request: the gateway of its server, the caller's bearer token, the open upstream.
Resolve = Callable[[Any], Awaitable[tuple[Gateway, str, UpstreamSession]]]


def build_server(
    resolve: Resolve,
    *,
    version: str,
    input_schema: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> Server[Any]:
    """An MCP server whose every handler enforces through the resolved gateway
    (``input_schema``: a tool's input schema, if known, for the SDK's header checks)."""

    async def opened(ctx: Any) -> tuple[Gateway, str, UpstreamSession]:
        try:
            return await resolve(ctx)
        except TetherError as exc:  # no such upstream, or it cannot be started now
            why = f"upstream unavailable: {exc.description}"
            raise MCPError(code=UNAVAILABLE, message=why) from None

    async def listed(ctx: Any, kind: str) -> list[dict[str, Any]]:
        gate, bearer, upstream = await opened(ctx)
        fetch = {"tool": gate.list_tools, "resource": gate.list_resources}.get(
            kind, gate.list_prompts
        )
        try:
            return await fetch(bearer, upstream)
        except Refused as refused:  # too large a listing: refused whole
            raise MCPError(code=UNAVAILABLE, message=refused.reason) from None

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = await listed(ctx, "tool")
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in tools])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            gate, bearer, upstream = await opened(ctx)
        except MCPError as exc:
            return types.CallToolResult.model_validate(error_result(exc.error.message))
        result = await gate.call_tool(bearer, upstream, params.name, dict(params.arguments or {}))
        return types.CallToolResult.model_validate(result)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        found = await listed(ctx, "resource")
        return types.ListResourcesResult(
            resources=[types.Resource.model_validate(r) for r in found]
        )

    async def read_resource(
        ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        gate, bearer, upstream = await opened(ctx)
        try:
            read = await gate.read_resource(bearer, upstream, str(params.uri))
        except Refused as refused:
            raise MCPError(code=DENIED, message=f"denied: {refused.reason}") from None
        return types.ReadResourceResult.model_validate(read)

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        found = await listed(ctx, "prompt")
        return types.ListPromptsResult(prompts=[types.Prompt.model_validate(p) for p in found])

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        gate, bearer, upstream = await opened(ctx)
        arguments = {k: str(v) for k, v in (params.arguments or {}).items()}
        try:
            got = await gate.get_prompt(bearer, upstream, params.name, arguments)
        except Refused as refused:
            raise MCPError(code=DENIED, message=f"denied: {refused.reason}") from None
        return types.GetPromptResult.model_validate(got)

    return Server(
        "tether-gateway",
        version=version,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        get_tool_input_schema=input_schema,
    )
