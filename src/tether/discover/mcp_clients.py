"""Which MCP client keeps its configuration where: by a file's name and place
(:func:`client_for`, for any scanned tree) and the usual per-user locations on macOS,
Linux and Windows (:func:`user_locations`, for scanning a user's own machine). The table
of clients and files is in :mod:`tether.discover.mcp_configs`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["client_for", "user_locations"]


_VSCODE_DIRS = frozenset({"code", "code - insiders", "vscodium", "code - oss"})
_CONTINUE_FILES = frozenset({"config.json", "config.yaml", "config.yml"})


_CLIENT_BY_NAME = {
    "claude_desktop_config.json": "claude-desktop",
    ".mcp.json": "claude-code",
    ".claude.json": "claude-code",
    "cline_mcp_settings.json": "cline",
}
_MCP_JSON_BY_PARENT = {
    ".cursor": "cursor",
    ".vscode": "vscode",
    ".roo": "roo-code",
    ".amazonq": "amazon-q",
    "amazonq": "amazon-q",
}
_SETTINGS_BY_PARENT = {".vscode": "vscode", ".gemini": "gemini-cli", "zed": "zed", ".zed": "zed"}


def client_for(path: Path) -> str | None:
    """The MCP client whose configuration ``path`` is, by name and place (None: not one)."""
    lower = path.name.lower()
    parent = path.parent.name.lower()
    grand = path.parent.parent.name.lower()
    vscode_user = parent == "user" and grand in _VSCODE_DIRS
    if lower in _CLIENT_BY_NAME:
        return _CLIENT_BY_NAME[lower]
    if lower == "mcp.json":
        return _MCP_JSON_BY_PARENT.get(parent, "vscode" if vscode_user else "generic")
    if lower == "settings.json":
        return _SETTINGS_BY_PARENT.get(parent, "vscode" if vscode_user else None)
    if lower == "mcp_config.json" and ("windsurf" in parent or "windsurf" in grand):
        return "windsurf"
    if lower == "config.toml" and parent == ".codex":
        return "codex"
    if parent == ".continue" and lower in _CONTINUE_FILES:
        return "continue"
    continue_block = parent == "mcpservers" and grand == ".continue"
    if continue_block and path.suffix.lower() in (".yaml", ".yml", ".json"):
        return "continue"
    return None


def user_locations(home: Path, *, existing_only: bool = True) -> list[Path]:
    """The usual per-user MCP client configurations under ``home`` (macOS, Linux and
    Windows layouts), for scanning a user's own machine. With ``existing_only`` (the
    default) only those that exist; directories (``~/.continue/mcpServers``) are walked."""
    vscode_bases = ("Library/Application Support", ".config", "AppData/Roaming")
    relative: list[str] = [
        ".claude.json",
        ".mcp.json",
        "Library/Application Support/Claude/claude_desktop_config.json",
        ".config/Claude/claude_desktop_config.json",
        "AppData/Roaming/Claude/claude_desktop_config.json",
        ".cursor/mcp.json",
        ".codeium/windsurf/mcp_config.json",
        ".gemini/settings.json",
        ".codex/config.toml",
        ".continue/config.json",
        ".continue/config.yaml",
        ".continue/config.yml",
        ".continue/mcpServers",
        ".config/zed/settings.json",
        "AppData/Roaming/Zed/settings.json",
        "AppData/Local/Zed/settings.json",
        ".aws/amazonq/mcp.json",
    ]
    for base in vscode_bases:
        for product in ("Code", "Code - Insiders", "VSCodium"):
            user = f"{base}/{product}/User"
            relative += [
                f"{user}/settings.json",
                f"{user}/mcp.json",
                f"{user}/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json",
            ]
    found: list[Path] = []
    for rel in relative:
        candidate = home.joinpath(*rel.split("/"))
        if not existing_only:
            found.append(candidate)
            continue
        try:
            if candidate.exists():
                found.append(candidate)
        except OSError:
            continue
    return found
