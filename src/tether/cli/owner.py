"""``tether owner ...``: what happens to agents when their people leave."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason

__all__ = ["app"]

app = typer.Typer(help="Manage agent owners.", no_args_is_help=True)


@app.command()
def offboard(
    email: Annotated[str, typer.Argument(help="The owner who is leaving.")],
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """The owner leaves: their agents become unowned, and are suspended after the grace period."""
    with open_client() as client:
        result = client.offboard_owner(email, reason)
    if json_:
        output.emit(result)
        return
    output.console.print(f"{len(result['agents'])} agent(s) of {result['owner']} are now unowned:")
    output.agent_table(result["agents"])
