"""What the CLI prints: one JSON document with ``--json``, Rich tables for people.

Values shown come from anyone (an agent's name, a reason, an error), so the consoles here
never take text for markup unless the caller says ``markup=True`` (then values in it are
passed through :func:`rich.markup.escape`), and every string they render has its control
and bidirectional characters shown as ``\\uXXXX`` escapes (:mod:`tether.safe_text`; line
breaks and tabs kept). A table cell is a :func:`cell`: a line break there is escaped too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, JustifyMethod, OverflowMethod
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tether.safe_text import neutralise

__all__ = [
    "agent_detail",
    "agent_table",
    "cell",
    "console",
    "emit",
    "error",
    "grant_table",
    "short_time",
    "stderr",
]


class _SafeConsole(Console):
    """A console that shows every control or bidirectional character of a string it
    renders (a table cell, a printed value) as its escape, and takes no markup unasked."""

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: Callable[[str | Text], Text] | None = None,
    ) -> Text:
        return super().render_str(
            neutralise(text, keep="\n\t"),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=emoji,
            markup=markup,
            highlight=highlight,
            highlighter=highlighter,
        )


# Piped output is not squeezed into 80 columns: tables keep one row per line.
console = _SafeConsole(
    highlight=False,
    soft_wrap=True,
    markup=False,
    width=None if sys.stdout.isatty() else 200,
)
stderr = _SafeConsole(stderr=True, highlight=False, soft_wrap=True, markup=False)


def cell(value: object, style: str = "") -> Text:
    """A table cell showing ``value`` literally: no markup, every control character
    (line breaks too) and bidirectional character as its escape."""
    return Text(neutralise(str(value)), style=style)


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
    stderr.print(Text("error:", style="bold red"), cell(document["error_description"]))


def short_time(iso: str | None) -> str:
    return "-" if not iso else iso[:16].replace("T", " ") + "Z"


def _state(agent: dict[str, Any]) -> Text:
    state = str(agent["state"])
    return cell(state, _STATE_STYLE.get(state, ""))


def _owner(agent: dict[str, Any]) -> Text:
    return cell(agent["owner"]) if agent["owner"] else cell("(unowned)", "bold red")


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
            cell(agent["name"]),
            cell(agent["kind"]),
            _owner(agent),
            _state(agent),
            cell(short_time(agent["expires_at"])),
            cell(parent),
        )
    console.print(table)


def agent_detail(agent: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    labels = ", ".join(f"{k}={v}" for k, v in agent["labels"].items()) or "-"
    rows: list[tuple[str, str | Text]] = [
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
    if agent.get("held_by"):
        rows.append(("admin hold", f"by {agent['held_by']}: only an admin can resume it"))
    rows.extend((extra or {}).items())
    for key, value in rows:
        table.add_row(cell(key), value if isinstance(value, Text) else cell(value))
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
        notes = [cell("broad", "bold red")] if grant["broad"] else []
        if grant.get("suggestion"):
            notes.append(cell(grant["suggestion"]))
        if grant.get("condition"):
            notes.append(cell("when " + grant["condition"]))
        if grant.get("limits"):
            notes.append(cell("limit " + ", ".join(grant["limits"])))
        if grant.get("approval"):
            notes.append(cell(f"approval by {grant['approval']}"))
        table.add_row(
            cell(grant["id"]),
            cell(principal),
            cell(f"{grant['action']}:{grant['resource']}"),
            cell(short_time(grant["expires_at"])),
            cell(short_time(grant.get("last_used"))),
            Text(" ").join(notes),
        )
    console.print(table)
