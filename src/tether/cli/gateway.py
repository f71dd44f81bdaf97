"""``tether gateway ...``: the upstream MCP servers behind the gateway."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason
from tether.errors import NotFound

__all__ = ["app"]

app = typer.Typer(help="Upstream MCP servers behind the gateway.", no_args_is_help=True)


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="The server's name: /mcp/NAME, grants NAME/tool.")],
    command: Annotated[str | None, typer.Option(help="stdio: the command line to run.")] = None,
    url: Annotated[str | None, typer.Option(help="HTTP: the streamable-HTTP endpoint.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="KEY=VALUE for a stdio server (not secret).")
    ] = None,
    credential: Annotated[
        list[str] | None,
        typer.Option("--credential", help="NAME=REF: variable or header NAME gets REF (env:VAR)."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(help="The accountable person's email: approves changed tools, as admins do."),
    ] = None,
    json_: Json = False,
) -> None:
    """Put an upstream MCP server behind Tether."""
    body = {
        "name": name,
        "command": command,
        "url": url,
        "env": list(env or []),
        "credentials": list(credential or []),
        "owner": owner,
    }
    with open_client() as client:
        server = client.gateway_add(body)
    if json_:
        output.emit(server)
    else:
        output.console.print(f"added {server['name']}: resource {server['resource']}", markup=False)


@app.command("list")
def list_(json_: Json = False) -> None:
    """The upstream servers (credentials as references, never secrets)."""
    with open_client() as client:
        servers = client.gateway_servers()
    if json_:
        output.emit({"servers": servers})
        return
    table = Table("name", "transport", "where", "credentials", "owner", "resource")
    for server in servers:
        if "command" not in server:  # not an admin nor its owner: no upstream definition
            where, creds, owner = "(hidden)", "(hidden)", "(hidden)"
        else:
            where = " ".join(server["command"]) if server["transport"] == "stdio" else server["url"]
            creds = ", ".join(f"{c['name']}={c['ref']}" for c in server["credentials"])
            owner = server.get("owner") or "-"
        table.add_row(server["name"], server["transport"], where, creds, owner, server["resource"])
    output.console.print(table)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The server's name.")],
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Take an upstream server out of the gateway (and forget its pins)."""
    with open_client() as client:
        done = client.gateway_remove(name, reason)
    if json_:
        output.emit(done)
    else:
        output.console.print(f"removed {name}", markup=False)


@app.command()
def approve(
    server: Annotated[str, typer.Argument(help="The server's name.")],
    tool: Annotated[str, typer.Argument(help="The tool whose changed definition to approve.")],
    kind: Annotated[str, typer.Option(help="tool, resource or prompt.")] = "tool",
    json_: Json = False,
) -> None:
    """Approve the new definition of a tool that changed (it was blocked until now)."""
    with open_client() as client:
        pin = client.gateway_approve(server, tool, kind)
    if json_:
        output.emit(pin)
    else:
        output.console.print(
            f"approved {kind} {tool} on {server}: {pin['pinned_hash']}", markup=False
        )


@app.command()
def label(
    server: Annotated[str, typer.Argument(help="The server's name.")],
    item: Annotated[
        str | None,
        typer.Argument(help="The tool or prompt name, or the resource URI (none: list all)."),
    ] = None,
    add: Annotated[
        list[str] | None,
        typer.Option("--add", help="sensitive, untrusted, egress, destructive or plain."),
    ] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A label to remove.")] = None,
    kind: Annotated[str, typer.Option(help="tool, resource or prompt.")] = "tool",
    json_: Json = False,
) -> None:
    """Label what a server serves (admins and the server's owner), or show its labels:
    explicit ones, else the unlabelled default, plus what its pinned annotations add."""
    with open_client() as client:
        if item is not None and (add or remove):
            changed = client.gateway_label(server, item, kind, list(add or []), list(remove or []))
            items = [changed]
        else:
            if add or remove:
                raise typer.BadParameter("name the ITEM to label", param_hint="ITEM")
            items = client.gateway_labels(server)["items"]
            if item is not None:
                items = [i for i in items if i["item"] == item and i["kind"] == kind]
                if not items:
                    raise NotFound(f"{kind} {item} of {server} is neither pinned nor labelled")
    if json_:
        output.emit(items[0] if item is not None else {"server": server, "items": items})
    else:
        _label_table(items)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="The server's name.")],
    json_: Json = False,
) -> None:
    """A server: where it runs, its owner and (admins and its owner) each pinned item
    with its effective labels and where each comes from."""
    with open_client() as client:
        server = client.gateway_show(name)
        hidden = "command" not in server  # not an admin nor its owner
        items = [] if hidden else client.gateway_labels(name)["items"]
    if json_:
        output.emit(server if hidden else {**server, "items": items})
        return
    for key in ("name", "transport", "resource", "owner", "url"):
        if server.get(key):
            output.console.print(f"{key}: {server[key]}", markup=False)
    if server.get("command"):
        output.console.print("command: " + " ".join(server["command"]), markup=False)
    if not hidden:
        _label_table(items)


def _label_table(items: list[dict[str, Any]]) -> None:
    table = Table("kind", "item", "labels", "from", "pin")
    for entry in items:
        sources = entry["sources"]
        origin = "; ".join(f"{lbl}: {', '.join(src)}" for lbl, src in sources.items()) or "-"
        pin = entry["status"] if entry["pinned"] else "(not pinned)"
        table.add_row(
            output.cell(entry["kind"]),
            output.cell(entry["item"]),
            output.cell(", ".join(entry["labels"])),
            output.cell(origin),
            output.cell(pin),
        )
    output.console.print(table)


@app.command()
def stdio(name: Annotated[str, typer.Argument(help="The upstream server's name.")]) -> None:
    """As the agent: bridge stdio (a desktop MCP client's config) to /mcp/NAME of the running
    Tether at TETHER_URL, with the agent's own key (TETHER_AGENT_KEY) or token
    (TETHER_AGENT_TOKEN). TETHER_HOME is never read: it belongs to another OS user."""
    import os

    import anyio

    from tether.gateway.stdio import BridgeConfig, serve_stdio

    anyio.run(serve_stdio, BridgeConfig.from_env(name, os.environ))
