"""Raw MCP messages over streamable HTTP (the handshake protocol, 2025-06-18), for tests
that speak to the gateway without an SDK client: what a session is opened, used and named
with."""

from __future__ import annotations

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
INITIALISED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "echo", "arguments": {"text": "hi"}},
}


def mcp_headers(token: str, session: str | None = None) -> dict[str, str]:
    """The headers of a request with bearer ``token`` (in ``session``, if given)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    return headers | ({"Mcp-Session-Id": session} if session else {})
