"""``tether keys rotate`` and ``tether token ...``: signing keys and agents' access tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import jwt
import typer

from tether.agent_keys import client_assertion, load_private_key
from tether.cli import output
from tether.cli.context import keys_dir, open_client
from tether.cli.options import Json
from tether.errors import InvalidRequest, InvalidToken
from tether.model import parse_name
from tether.tokens import ASSERTION_TYPE, EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT

__all__ = ["dev_app", "keys_app", "token_app"]

keys_app = typer.Typer(help="Tether's token-signing keys.", no_args_is_help=True)
token_app = typer.Typer(help="Agents' access tokens.", no_args_is_help=True)
dev_app = typer.Typer(help="Development helpers (only with --demo).", no_args_is_help=True)


@dev_app.command("user-token")
def user_token(
    email: Annotated[str, typer.Argument(help="The person.")],
    group: Annotated[
        list[str] | None, typer.Option(help="An IdP group of the person (repeatable).")
    ] = None,
    json_: Json = False,
) -> None:
    """A person's token from the development IdP (on with `up --demo` or dev_idp = true)."""
    with open_client() as client:
        result = client.dev_user_token(email, group or ())
    if json_:
        output.emit(result)
    else:
        output.stderr.print(
            "[yellow]development identity provider: not for real people[/]", markup=True
        )
        print(result["token"])


@keys_app.command()
def rotate(json_: Json = False) -> None:
    """Make a new signing key; the previous one stays published until its tokens expire."""
    with open_client() as client:
        result = client.rotate_signing_key()
    if json_:
        output.emit(result)
    else:
        output.console.print(f"new signing key {result['kid']}")


def _assertion(client: Any, agent: str, key: Path | None) -> tuple[str, str]:
    """(agent ID, a fresh client assertion signed with the agent's own key)."""
    name = (
        parse_name(agent.rsplit("/", 1)[-1]) if agent.startswith("spiffe://") else parse_name(agent)
    )
    private = load_private_key(key or keys_dir() / f"{name}.pem")
    meta = client.oauth_metadata()
    agent_id = str(client.get_agent(agent)["id"])
    return agent_id, client_assertion(agent_id, meta["token_endpoint"], private)


def _print_token(issued: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.emit(issued)
    else:
        print(issued["access_token"])


@token_app.command()
def exchange(
    subject_token: Annotated[str, typer.Option(help="A person's IdP token or a Tether token.")],
    actor: Annotated[str, typer.Option(help="The agent that will act (its key signs).")],
    audience: Annotated[str, typer.Option(help="The next agent's ID or the resource.")],
    scope: Annotated[
        str | None, typer.Option(help="ACTION:RESOURCE ... (default: narrowest).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="The actor's key (default TETHER_HOME/keys/NAME.pem).")
    ] = None,
    json_: Json = False,
) -> None:
    """Delegation (RFC 8693): a token for ACTOR acting in the subject token's chain."""
    with open_client() as client:
        _, assertion = _assertion(client, actor, key)
        kind = TOKEN_TYPE_JWT
        try:
            if jwt.get_unverified_header(subject_token).get("typ", "").lower() == "at+jwt":
                kind = TOKEN_TYPE_ACCESS
        except jwt.PyJWTError:
            raise InvalidRequest("--subject-token is not a JWT") from None
        form = {
            "grant_type": EXCHANGE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "subject_token": subject_token,
            "subject_token_type": kind,
            "audience": audience,
        }
        if scope:
            form["scope"] = scope
        issued = client.token(form)
    _print_token(issued, json_)


@token_app.command()
def issue(
    agent: Annotated[str, typer.Argument(help="The agent (SPIFFE ID or name).")],
    audience: Annotated[str, typer.Option(help="The resource the token is for.")],
    scope: Annotated[
        str | None, typer.Option(help="ACTION:RESOURCE ... (default: all fitting grants).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Lifetime, e.g. 5m (capped by config).")] = None,
    key: Annotated[
        Path | None, typer.Option(help="The agent's key (default TETHER_HOME/keys/NAME.pem).")
    ] = None,
    json_: Json = False,
) -> None:
    """Get an access token as the agent: signs a client assertion with its own key."""
    with open_client() as client:
        _, assertion = _assertion(client, agent, key)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "resource": audience,
        }
        if scope:
            form["scope"] = scope
        if ttl:
            form["ttl"] = ttl
        issued = client.token(form)
    _print_token(issued, json_)


@token_app.command()
def inspect(
    token: Annotated[str, typer.Argument(help="An access token.")],
    json_: Json = False,
) -> None:
    """Verify a token and print its chain, human first; exit 4 if it does not verify."""
    with open_client() as client:
        claims = client.introspect(token)
    if not claims.get("active"):
        raise InvalidToken("the token is not active (invalid, expired or revoked)")
    subject = str(claims["sub"])
    chain = [] if subject.startswith("spiffe://") else [f"user:{subject}"]
    actors: list[str] = []
    act = claims.get("act")
    while isinstance(act, dict):
        actors.append(str(act.get("sub")))
        act = act.get("act")
    chain += list(reversed(actors)) or [claims["client_id"]]
    if json_:
        output.emit({**claims, "chain": chain})
        return
    output.console.print("active: chain " + " -> ".join(chain), markup=False)
    for key in ("aud", "scope", "exp", "jti"):
        output.console.print(f"  {key}: {claims.get(key)}", markup=False)
