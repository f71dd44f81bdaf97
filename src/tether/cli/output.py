"""What the CLI prints: one JSON document with ``--json``, Rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "agent_detail",
    "agent_table",
    "console",
    "emit",
    "error",
    "grant_table",
    "short_time",
    "stderr",
]

# Piped output is not squeezed into 80 columns: tables keep one row per line.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
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


def short_time(iso: str | None) -> str:
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
            short_time(agent["expires_at"]),
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
        ("created", f"{short_time(agent['created_at'])} by {agent['created_by']}"),
        ("expires", short_time(agent["expires_at"])),
        ("public key", agent["public_key"]),
    ]
    if agent.get("unowned_since"):
        rows.append(("unowned since", short_time(agent["unowned_since"])))
    rows.extend((extra or {}).items())
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def grant_table(grants: Sequence[dict[str, Any]]) -> None:
    if not grants:
        console.print("no grants")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "PRINCIPAL", "PERMISSION", "EXPIRES", "LAST USED", "NOTE"):
        table.add_column(column)
    for grant in grants:
        principal = grant["principal"]
        if principal.startswith("spiffe://"):
            principal = principal.rsplit("/", 1)[-1]
        note = grant.get("suggestion") or ""
        if grant["broad"]:
            note = ("[bold red]broad[/] " + note).strip()
        if grant.get("condition"):
            note = (note + " when " + grant["condition"]).strip()
        table.add_row(
            grant["id"],
            principal,
            f"{grant['action']}:{grant['resource']}",
            short_time(grant["expires_at"]),
            short_time(grant.get("last_used")),
            note,
        )
    console.print(table)
