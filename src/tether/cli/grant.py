"""``tether grant ...`` and ``tether review``: narrow, expiring permissions."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason

__all__ = ["app", "review"]

app = typer.Typer(help="Give, list and revoke permissions.", no_args_is_help=True)


@app.command()
def add(
    principal: Annotated[str, typer.Argument(help="Agent ID or name, or user:EMAIL.")],
    action: Annotated[str, typer.Option(help="tools/call, resources/read, delegate, GET ...")],
    resource: Annotated[str, typer.Option(help="Path or pattern: github/create_issue, fs/**.")],
    when: Annotated[str | None, typer.Option(help="An extra Cedar condition.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 7d.")] = None,
    reason: Reason = "",
    allow_broad: Annotated[
        bool,
        typer.Option(
            "--allow-broad",
            help="Allow a broad grant: action *, or a wildcard in the server segment "
            "(needs --reason).",
        ),
    ] = False,
    limit: Annotated[
        list[str] | None,
        typer.Option(
            "--limit",
            help="A budget, repeatable: calls=100/1m (calls per window) or bytes=10MB/1h "
            "(result bytes per window); windows are aligned on the Unix epoch.",
        ),
    ] = None,
    approval: Annotated[
        str | None,
        typer.Option(help="Each call it allows waits for a person's approval: owner or admin."),
    ] = None,
    json_: Json = False,
) -> None:
    """Grant PRINCIPAL one action on a resource (default deny everywhere else)."""
    body = {
        "principal": principal,
        "action": action,
        "resource": resource,
        "when": when,
        "expires": expires,
        "reason": reason,
        "allow_broad": allow_broad,
        "limits": limit or [],
        "approval": approval,
    }
    with open_client() as client:
        grant = client.add_grant(body)
    if json_:
        output.emit(grant)
    else:
        output.grant_table([grant])


@app.command("list")
def list_(
    principal: Annotated[str | None, typer.Option(help="Only this principal's grants.")] = None,
    unused: Annotated[
        str | None, typer.Option(help="Not used within this window, e.g. 30d.")
    ] = None,
    expiring: Annotated[str | None, typer.Option(help="Expiring within, e.g. 7d.")] = None,
    broad: Annotated[bool, typer.Option("--broad", help="Only broad grants.")] = False,
    json_: Json = False,
) -> None:
    """List live grants, with their last use."""
    params = {"principal": principal, "unused": unused, "expiring": expiring}
    query = {k: v for k, v in params.items() if v is not None}
    if broad:
        query["broad"] = "true"
    with open_client() as client:
        grants = client.list_grants(query)
    if json_:
        output.emit({"grants": grants})
    else:
        output.grant_table(grants)


@app.command()
def revoke(
    grant_id: Annotated[str, typer.Argument(help="The grant's ID (g_...).")],
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Revoke a grant at once."""
    with open_client() as client:
        grant = client.revoke_grant(grant_id, reason)
    if json_:
        output.emit(grant)
    else:
        output.console.print(f"revoked {grant['id']} ({grant['action']}:{grant['resource']})")


def review(
    owner: Annotated[str | None, typer.Option(help="Only this owner's agents.")] = None,
    json_: Json = False,
) -> None:
    """Per owner: each agent's grants, last use and a keep/revoke suggestion."""
    with open_client() as client:
        owners = client.review(owner)
    if json_:
        output.emit({"owners": owners})
        return
    if not owners:
        output.console.print("nothing to review")
    for entry in owners:
        output.console.print(f"[bold]{escape(entry['owner'])}[/]", markup=True)
        table = Table(box=None, header_style="bold")
        for column in ("AGENT", "STATE", "GRANT", "PERMISSION", "LAST USED", "SUGGESTION"):
            table.add_column(column)
        for agent in entry["agents"]:
            rows: list[dict[str, Any]] = agent["grants"] or [{}]
            for grant in rows:
                table.add_row(
                    agent["agent"].rsplit("/", 1)[-1],
                    agent["state"],
                    grant.get("id", "-"),
                    f"{grant['action']}:{grant['resource']}" if grant else "(no grants)",
                    output.short_time(grant.get("last_used")) if grant else "-",
                    grant.get("suggestion", "-"),
                )
        output.console.print(table)
