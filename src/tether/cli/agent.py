"""``tether agent ...``: register, list, show and change agents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.agent_keys import generate_key_pair, label_key_file, write_private_key
from tether.cli import output
from tether.cli.context import keys_dir, open_client
from tether.cli.options import Json, Reason
from tether.durations import parse_duration
from tether.errors import InvalidRequest
from tether.model import parse_name

__all__ = ["app"]

app = typer.Typer(help="Register agents and manage their lifecycle.", no_args_is_help=True)

AgentRef = Annotated[str, typer.Argument(help="SPIFFE ID or bare agent name.")]


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidRequest(f"invalid label {pair!r}: use KEY=VALUE")
        labels[key] = value
    return labels


def _show(agent: dict[str, Any], as_json: bool, extra: dict[str, str] | None = None) -> None:
    if as_json:
        output.emit({**agent, **(extra or {})})
    else:
        output.agent_detail(agent, extra)


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="1-63 of a-z 0-9 . _ -")],
    owner: Annotated[str | None, typer.Option(help="Accountable human (email). Required.")] = None,
    kind: Annotated[
        str, typer.Option(help="chatbot, copilot, connector, mcp-server, ...")
    ] = "other",
    purpose: Annotated[str, typer.Option(help="What the agent is for.")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d (default from config).")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="The agent that spawned it.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    key_out: Annotated[
        Path | None, typer.Option(help="Private key file (default TETHER_HOME/keys/NAME.pem).")
    ] = None,
    json_: Json = False,
) -> None:
    """Register an agent with an owner; its private key is written once to a 0600 file."""
    valid = parse_name(name)
    body: dict[str, Any] = {
        "name": valid,
        "owner": owner,
        "kind": kind,
        "purpose": purpose,
        "parent": parent,
        "labels": _labels(label or []),
        "expires": expires,
    }
    if expires is not None:
        parse_duration(expires)
    with open_client() as client:
        path = key_out or keys_dir() / f"{valid}.pem"
        pair = generate_key_pair()
        write_private_key(path, pair.private_pem)
        try:
            agent = client.register_agent({**body, "public_key": pair.public_key})
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        label_key_file(path, str(agent["id"]))  # the key file names its agent
    _show(agent, json_, {"key_file": str(path)})


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="Only agents in this state.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's agents.")] = None,
    unowned: Annotated[
        bool, typer.Option("--unowned", help="Only agents without an owner.")
    ] = False,
    json_: Json = False,
) -> None:
    """List agents (a non-admin sees only their own)."""
    with open_client() as client:
        agents = client.list_agents(state=state, owner=owner, unowned=unowned)
    if json_:
        output.emit({"agents": agents})
    else:
        output.agent_table(agents)


@app.command()
def show(ref: AgentRef, json_: Json = False) -> None:
    """Show one agent."""
    with open_client() as client:
        agent = client.get_agent(ref)
    _show(agent, json_)


@app.command("set-owner")
def set_owner(
    ref: AgentRef,
    email: Annotated[str, typer.Argument(help="The new accountable owner.")],
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Give an agent a new owner (also adopts an unowned agent)."""
    with open_client() as client:
        agent = client.change_agent(ref, owner=email, reason=reason)
    _show(agent, json_)


@app.command()
def suspend(ref: AgentRef, reason: Reason = "", json_: Json = False) -> None:
    """Suspend an active agent (reversible)."""
    with open_client() as client:
        agent = client.change_agent(ref, state="suspended", reason=reason)
    _show(agent, json_)


@app.command()
def resume(ref: AgentRef, reason: Reason = "", json_: Json = False) -> None:
    """Resume a suspended agent (never an expired, retired or killed one)."""
    with open_client() as client:
        agent = client.change_agent(ref, state="active", reason=reason)
    _show(agent, json_)


@app.command()
def retire(ref: AgentRef, reason: Reason = "", json_: Json = False) -> None:
    """Retire an agent for good (its name is never reused)."""
    with open_client() as client:
        agent = client.retire_agent(ref, reason)
    _show(agent, json_)


@app.command("rotate-key")
def rotate_key(
    ref: AgentRef,
    key_out: Annotated[Path | None, typer.Option(help="Where the new private key goes.")] = None,
    reason: Reason = "",
    json_: Json = False,
) -> None:
    """Give an agent a new key pair; the new private key replaces the old file."""
    name = parse_name(ref.rsplit("/", 1)[-1]) if ref.startswith("spiffe://") else parse_name(ref)
    with open_client() as client:
        path = key_out or keys_dir() / f"{name}.pem"
        pair = generate_key_pair()
        staged = path.with_name(f".{path.name}.new")
        staged.unlink(missing_ok=True)
        write_private_key(staged, pair.private_pem)
        try:
            agent = client.rotate_key(ref, pair.public_key, reason)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        label_key_file(staged, str(agent["id"]))
        os.replace(staged, path)
    _show(agent, json_, {"key_file": str(path)})
