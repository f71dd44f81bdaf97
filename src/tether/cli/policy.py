"""``tether policy ...``: organisation-wide Cedar guardrails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason
from tether.errors import InvalidRequest

__all__ = ["app"]

app = typer.Typer(help="Add, list and remove Cedar guardrails.", no_args_is_help=True)


@app.command()
def add(
    file: Annotated[Path, typer.Argument(help="A .cedar file; every policy needs an @id.")],
    json_: Json = False,
) -> None:
    """Validate a Cedar file against Tether's schema and add its policies."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {file}: {exc}") from None
    with open_client() as client:
        result = client.add_policy(text, file.name)
    if json_:
        output.emit(result)
        return
    for policy in result["policies"]:
        output.console.print(f"added {policy['id']}")


@app.command("list")
def list_(json_: Json = False) -> None:
    """List the guardrails in force, the built-in ones first."""
    with open_client() as client:
        policies = client.list_policies()
    if json_:
        output.emit({"policies": policies})
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "SOURCE", "ADDED BY", "FIRST LINE"):
        table.add_column(column)
    for policy in policies:
        first = next((ln for ln in policy["text"].splitlines() if not ln.startswith("@")), "")
        table.add_row(policy["id"], policy["source"], policy["added_by"], first.strip())
    output.console.print(table)


@app.command()
def remove(
    policy_id: Annotated[str, typer.Argument(help="The policy's @id.")],
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Remove a guardrail (the built-in ones cannot be removed)."""
    with open_client() as client:
        removed = client.remove_policy(policy_id, reason)
    if json_:
        output.emit(removed)
    else:
        output.console.print(f"removed {removed['id']}")


@app.command()
def schema(json_: Json = False) -> None:
    """Print Tether's Cedar schema (entity types, actions, context)."""
    with open_client() as client:
        text = client.policy_schema()
    if json_:
        output.emit({"schema": text})
    else:
        print(text, end="")
