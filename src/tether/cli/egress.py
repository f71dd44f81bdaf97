"""``tether egress ...``: the HTTP APIs agents reach through the egress proxy (docs/egress.md).

Like every command group, these speak only the admin API (:class:`tether.client.Client`):
in-process on ``TETHER_HOME``, or a running Tether at ``TETHER_URL``. What they print
names where secrets live, never a secret."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason
from tether.cli.proxy import ca_command

__all__ = ["app"]

app = typer.Typer(
    help="HTTP APIs agents call through the egress proxy, without holding their keys.",
    no_args_is_help=True,
)

_LABEL_HELP = "sensitive, untrusted, egress, destructive or plain."


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="The destination: /egress/NAME, grants NAME/path.")],
    base: Annotated[
        str, typer.Option(help="https://host[:port][/prefix]: what NAME/<path> is below.")
    ],
    credential: Annotated[
        list[str] | None,
        typer.Option(
            "--credential",
            help="HEADER=REF, 'HEADER=Bearer {REF}', query:NAME=REF or basic:USER=REF "
            "(REF: env:VAR or vault:<path>#<field>); repeat for more.",
        ),
    ] = None,
    oauth_token_url: Annotated[
        str | None, typer.Option(help="OAuth client credentials: the token endpoint.")
    ] = None,
    oauth_client_id: Annotated[str | None, typer.Option(help="The OAuth client ID.")] = None,
    oauth_client_secret: Annotated[
        str | None, typer.Option(help="Where the client secret lives (a REF).")
    ] = None,
    oauth_scope: Annotated[str, typer.Option(help="The scope to ask the token for.")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", help=_LABEL_HELP)] = None,
    internal: Annotated[
        bool,
        typer.Option(
            "--internal", help="An API inside the network: private addresses are allowed."
        ),
    ] = False,
    owner: Annotated[
        str | None, typer.Option(help="The accountable person's email: labels it, as admins do.")
    ] = None,
    json_: Json = False,
) -> None:
    """Register an HTTP API destination (admins). Secrets stay where REF says they are."""
    given = {
        "token_url": oauth_token_url,
        "client_id": oauth_client_id,
        "client_secret": oauth_client_secret,
    }
    oauth = None  # a part alone is sent too: the API says what is missing
    if oauth_scope or any(v is not None for v in given.values()):
        oauth = {**given, "scope": oauth_scope}
    body = {
        "name": name,
        "base": base,
        "credentials": list(credential or []),
        "oauth": oauth,
        "labels": list(label or []),
        "internal": internal,
        "owner": owner,
    }
    with open_client() as client:
        destination = client.egress_add(body)
    if json_:
        output.emit(destination)
    else:
        output.console.print(
            f"added {destination['name']}: audience {destination['resource']}", markup=False
        )


@app.command("list")
def list_(json_: Json = False) -> None:
    """The destinations (credentials as references, never secrets)."""
    with open_client() as client:
        destinations = client.egress_destinations()
    if json_:
        output.emit({"destinations": destinations})
        return
    if not destinations:
        output.console.print("no egress destinations")
        return
    table = Table("name", "base", "credentials", "labels", "owner", "audience", box=None)
    for entry in destinations:
        if "base" not in entry:  # neither an admin nor its owner: no definition
            base = creds = labels = owner = "(hidden)"
        else:
            base, creds = entry["base"], _credentials(entry)
            labels, owner = _labels(entry), entry.get("owner") or "-"
        table.add_row(
            *(output.cell(v) for v in (entry["name"], base, creds, labels, owner)),
            output.cell(entry["resource"]),
        )
    output.console.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="The destination's name.")],
    json_: Json = False,
) -> None:
    """A destination and how an agent reaches it: the route, the token audience, the
    forward proxy; its credentials (references) and labels (admins and its owner)."""
    with open_client() as client:
        destination = client.egress_show(name)
    if json_:
        output.emit(destination)
        return
    rows: list[tuple[str, str]] = [("name", destination["name"])]
    if "base" in destination:
        rows += [
            ("base", destination["base"]),
            ("internal", "yes: private addresses allowed" if destination["internal"] else "no"),
            ("owner", destination.get("owner") or "-"),
            ("credentials", _credentials(destination)),
            ("labels", _labels(destination)),
        ]
    rows += [
        ("route", destination["route"]),
        ("audience", destination["resource"] + "   (tether token issue AGENT --audience ...)"),
    ]
    if destination.get("proxy"):
        proxy = destination["proxy"].replace("://", "://agent:$TOKEN@", 1)
        rows.append(("proxy", f"HTTPS_PROXY={proxy}   (trust the CA of `tether egress ca`)"))
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(output.cell(key), output.cell(value))
    output.console.print(table)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The destination's name.")],
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Remove a destination (admins): its tokens stop working at the proxy."""
    with open_client() as client:
        done = client.egress_remove(name, reason)
    if json_:
        output.emit(done)
    else:
        output.console.print(f"removed {name}", markup=False)


@app.command()
def label(
    name: Annotated[str, typer.Argument(help="The destination's name.")],
    add: Annotated[list[str] | None, typer.Option("--add", help=_LABEL_HELP)] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A label to remove.")] = None,
    json_: Json = False,
) -> None:
    """Add or remove a destination's labels (admins and its owner)."""
    with open_client() as client:
        changed = client.egress_label(name, list(add or []), list(remove or []))
    if json_:
        output.emit(changed)
    else:
        output.console.print(f"{changed['name']}: {_labels(changed)}", markup=False)


# `tether egress ca`: the installation's CA for the forward proxy (tether/cli/proxy.py)
app.command("ca")(ca_command)


def _credentials(destination: dict[str, Any]) -> str:
    shown = list(destination["credentials"])
    oauth = destination.get("oauth")
    if oauth:
        scope = f", scope {oauth['scope']}" if oauth.get("scope") else ""
        shown.append(
            f"OAuth client {oauth['client_id']} at {oauth['token_url']}"
            f" (secret {oauth['client_secret']}{scope})"
        )
    return "; ".join(shown) or "-"


def _labels(destination: dict[str, Any]) -> str:
    effective = ", ".join(destination["effective_labels"]) or "none (plain)"
    if destination["labels_from"] == "explicit":
        return effective
    return f"{effective} (the [egress] unlabelled default: nobody labelled it)"
