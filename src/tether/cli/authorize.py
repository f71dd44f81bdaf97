"""``tether authorize``: ask the decision point; exit 0 on allow, 3 on deny.

``--context`` may not set what the server computes (``time``, ``hour``, ``chain_depth``,
``risk``, ``args``, ``session`` ...: :mod:`tether.policy.inputs`): the server refuses it
naming the key, a usage error (exit 2) locally and against a server (TETHER_URL) alike.
Nor may it set what an option of its own sets (``chain``: ``--chain`` ...). ``--args``
gives the call's arguments (a JSON object, as the gateway would pass a tool's arguments)
so rules on ``context.args`` can be tried; they travel as AuthZEN
``action.properties.args``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import jwt
import typer
from rich.markup import escape

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json
from tether.errors import InvalidRequest, InvalidToken

__all__ = ["authorize"]

# context keys that have an option of their own: set through --context they would be
# overridden by it, or override the option's default, so they are refused
_OPTIONS = {
    "on_behalf_of": "--on-behalf-of",
    "chain": "--chain",
    "groups": "--group",
    "token": "--token",
    "audience": "--audience",
}


def _audience_of(token: str) -> str:
    try:
        aud = jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.PyJWTError:
        raise InvalidToken("--token is not a JWT") from None
    return aud if isinstance(aud, str) else ""


def _object(text: str, option: str) -> dict[str, Any]:
    """``text``, the value of ``option``, as a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"{option} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{option} must be a JSON object")
    return value


def _context_of(context: str | None) -> dict[str, Any]:
    """The ``--context`` object, refused when it sets what an option of its own sets."""
    extra = _object(context, "--context") if context is not None else {}
    for key, option in _OPTIONS.items():
        if key in extra:
            raise InvalidRequest(f"--context key {key!r} has an option of its own: use {option}")
    return extra


def authorize(
    principal: Annotated[str, typer.Option(help="The acting agent, or user:EMAIL.")],
    action: Annotated[str, typer.Option(help="tools/call, resources/read, ...")],
    resource: Annotated[str, typer.Option(help="e.g. github/create_issue")],
    on_behalf_of: Annotated[
        str | None, typer.Option(help="The person the task is for: user:EMAIL.")
    ] = None,
    chain: Annotated[
        list[str] | None, typer.Option(help="Agents before the acting one, earliest first.")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="An IdP group of the person (repeatable); with --token, its own."),
    ] = None,
    context: Annotated[str | None, typer.Option(help="Extra Cedar context, a JSON object.")] = None,
    token: Annotated[
        str | None, typer.Option(help="A Tether access token: its chain and scope apply.")
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option(help="With --token: the resource asking (default: the token's own aud)."),
    ] = None,
    args: Annotated[
        str | None,
        typer.Option(help="The call's arguments, a JSON object (as the gateway passes them)."),
    ] = None,
    json_: Json = False,
) -> None:
    """Would this request be allowed? Every identity of the chain must hold a grant."""
    extra = _context_of(context)
    arguments = _object(args, "--args") if args is not None else None  # the call's
    if token is not None:
        extra["token"] = token
        extra["audience"] = audience or _audience_of(token)
    if on_behalf_of is not None:
        extra["on_behalf_of"] = on_behalf_of
    if chain:
        extra["chain"] = chain
    if group:
        extra["groups"] = group
    kind = "user" if principal.startswith("user:") else "agent"
    body = {
        "subject": {"type": kind, "id": principal},
        "action": {"name": action, "properties": {} if arguments is None else {"args": arguments}},
        "resource": {"type": "resource", "id": resource},
        "context": extra,
    }
    with open_client() as client:
        answer = client.evaluate(body)
    if "error" in answer["context"]:
        raise InvalidToken(answer["context"]["error"]["error_description"])
    decision = answer["context"]["tether"]
    if json_:
        output.emit(decision)
    else:
        verdict = "[bold green]ALLOW[/]" if decision["allowed"] else "[bold red]DENY[/]"
        what = f"{escape(decision['action'])} {escape(decision['resource'])}"
        output.console.print(f"{verdict} {what}", markup=True)
        output.console.print("chain: " + " -> ".join(decision["chain"]), markup=False)
        for reason in decision["reasons"]:
            output.console.print(f"  - {reason}", markup=False)
    if not decision["allowed"]:
        raise typer.Exit(3)
