"""The MCP gateway: the enforcement point and its faces (streamable HTTP, the stdio bridge)."""
