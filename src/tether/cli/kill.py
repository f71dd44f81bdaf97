"""``tether kill``: the emergency stop (one agent and what it spawned, an owner's agents,
or every agent)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason
from tether.errors import InvalidRequest

__all__ = ["kill"]


def kill(
    ref: Annotated[
        str | None, typer.Argument(help="SPIFFE ID or bare name of the agent to kill.")
    ] = None,
    cascade: Annotated[
        bool,
        typer.Option("--cascade/--no-cascade", help="Also kill every agent it spawned."),
    ] = True,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Kill every agent of this owner.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Kill every agent (needs --confirm).")
    ] = False,
    confirm: Annotated[bool, typer.Option("--confirm", help="Yes, every agent.")] = False,
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Kill an agent at once, everywhere: irreversible. Revokes its tokens (and every token
    exchanged through it), its vault leases, rotates the secrets it read, closes its gateway
    sessions; by default the same for every agent it spawned."""
    if sum((ref is not None, owner is not None, all_)) != 1:
        raise InvalidRequest("give exactly one of an agent, --owner EMAIL or --all --confirm")
    with open_client() as client:
        if ref is not None:
            done = client.kill(ref, cascade=cascade, reason=reason)
        elif owner is not None:
            done = client.kill_bulk(owner=owner, reason=reason)
        else:
            done = client.kill_bulk(all=True, confirm=confirm, reason=reason)
    if json_:
        output.emit(done)
        return
    _summary(done)
    if done["failures"]:
        raise typer.Exit(1)


def _summary(done: dict[str, Any]) -> None:
    say = output.console.print
    killed = done["agents_killed"]
    say(f"killed {len(killed)} agent(s): {', '.join(killed) or '-'}", markup=False)
    say(
        f"tokens revoked: {done['tokens_revoked']} "
        f"({done['token_families_revoked']} families); "
        f"vault leases revoked: {len(done['leases_revoked'])}; "
        f"secrets rotated: {len(done['secrets_rotated'])}; "
        f"gateway sessions closed: {done['sessions_closed']}",
        markup=False,
    )
    for item in done["leases_revoked"] + done["secrets_rotated"]:
        say(f"  {item}", markup=False)
    for failure in done["failures"]:
        say(f"FAILED (retried by tether up until done): {failure}", markup=False, style="bold red")
