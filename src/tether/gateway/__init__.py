"""The MCP gateway: upstream servers, their credentials and pinned tool definitions."""
