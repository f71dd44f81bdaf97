"""An MCP server (the official SDK's lowlevel server, over stdio) that records what it
parsed: each call of its one tool, ``record``, appends ``json.dumps(arguments)`` as one
line to the file named by ``RECORD_FILE``. The differential test of the gateway's two
paths compares these lines with what the gateway decided."""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

RECORD = types.Tool(
    name="record",
    description="Record the arguments as parsed.",
    input_schema={"type": "object"},
)


async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[RECORD])


async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    line = json.dumps(params.arguments, sort_keys=True)
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as out:
        out.write(line + "\n")
    return types.CallToolResult(content=[types.TextContent(type="text", text="recorded")])


app = Server("recording-server", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await app.run(read, write, app.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
