"""``tether credential get REF``: as an agent, fetch a credential through the vault broker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tether.agent_keys import client_assertion, load_private_key
from tether.cli import output
from tether.cli.context import open_client, settings
from tether.cli.options import Json
from tether.errors import InvalidRequest
from tether.model import agent_id_prefix, parse_agent_ref
from tether.tokens import ASSERTION_TYPE

__all__ = ["app"]

app = typer.Typer(help="Credentials brokered from the vault, fetched as an agent.")


@app.command()
def get(
    ref: Annotated[str, typer.Argument(help="vault:<path>#<field> or vault-token:<policy>")],
    agent: Annotated[
        str | None,
        typer.Option(
            help="The agent (SPIFFE ID or name; default TETHER_AGENT, or the key's name)."
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="The agent's private key (default TETHER_AGENT_KEY).")
    ] = None,
    json_: Json = False,
) -> None:
    """Fetch REF as the agent: sign in with its key, get a token for Tether itself, and ask
    the broker (which needs a grant of credentials/read on vault/<path> or
    vault-token/<policy>). Prints the secret (or token) alone, or JSON with its lease."""
    key_file = key or (
        Path(os.environ["TETHER_AGENT_KEY"]) if os.environ.get("TETHER_AGENT_KEY") else None
    )
    if key_file is None:
        raise InvalidRequest("give the agent's key: --key FILE or TETHER_AGENT_KEY")
    who = agent or os.environ.get("TETHER_AGENT") or key_file.stem
    config = settings()
    name = parse_agent_ref(who, config.trust_domain)
    agent_id = agent_id_prefix(config.trust_domain) + name
    private = load_private_key(key_file)
    with open_client() as client:
        meta = client.oauth_metadata()
        issued = client.token(
            {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(agent_id, meta["token_endpoint"], private),
                "resource": str(meta["issuer"]),
            }
        )
        got = client.credential(str(issued["access_token"]), ref)
    if json_:
        output.emit(got)
    else:
        print(got["value"])
