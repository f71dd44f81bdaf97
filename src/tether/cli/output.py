"""What the CLI prints: one JSON document with ``--json``, Rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["agent_detail", "agent_table", "console", "emit", "error", "stderr"]

console = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

_STATE_STYLE = {
    "active": "green",
    "suspended": "yellow",
    "expired": "dim",
    "retired": "dim",
    "killed": "bold red",
}


def emit(document: Any) -> None:
    """Print exactly one JSON document on stdout."""
    print(json.dumps(document, indent=2, sort_keys=True))


def error(document: dict[str, str], *, as_json: bool) -> None:
    if as_json:
        emit(document)
    stderr.print(f"[bold red]error:[/] {document['error_description']}", markup=True)


def _short_time(iso: str | None) -> str:
    return "-" if not iso else iso[:16].replace("T", " ") + "Z"


def _state(agent: dict[str, Any]) -> str:
    state = str(agent["state"])
    return f"[{_STATE_STYLE.get(state, '')}]{state}[/]"


def _owner(agent: dict[str, Any]) -> str:
    return agent["owner"] or "[bold red](unowned)[/]"


def agent_table(agents: Sequence[dict[str, Any]]) -> None:
    if not agents:
        console.print("no agents")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "OWNER", "STATE", "EXPIRES", "PARENT"):
        table.add_column(column)
    for agent in agents:
        parent = agent["parent"].rsplit("/", 1)[-1] if agent["parent"] else "-"
        table.add_row(
            agent["name"],
            agent["kind"],
            _owner(agent),
            _state(agent),
            _short_time(agent["expires_at"]),
            parent,
        )
    console.print(table)


def agent_detail(agent: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    labels = ", ".join(f"{k}={v}" for k, v in agent["labels"].items()) or "-"
    rows = [
        ("id", agent["id"]),
        ("kind", agent["kind"]),
        ("owner", _owner(agent)),
        ("state", _state(agent)),
        ("purpose", agent["purpose"] or "-"),
        ("parent", agent["parent"] or "-"),
        ("labels", labels),
        ("created", f"{_short_time(agent['created_at'])} by {agent['created_by']}"),
        ("expires", _short_time(agent["expires_at"])),
        ("public key", agent["public_key"]),
    ]
    if agent.get("unowned_since"):
        rows.append(("unowned since", _short_time(agent["unowned_since"])))
    rows.extend((extra or {}).items())
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
