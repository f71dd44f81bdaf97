"""``/v1/egress/destinations``: the HTTP APIs agents reach through the egress proxy.

Admins add and remove destinations; admins and a destination's owner change its labels;
any other authenticated person gets 403 for a change, and the refusal is recorded. Like
upstream servers behind the gateway, a destination's definition (base URL, credential
references, OAuth client, labels, owner) is shown to admins and its owner only; anyone
else sees what an agent needs to reach it: name, audience and route. Bodies are checked
before anything changes (400 ``invalid_request`` naming the field); nothing shown is ever
a secret, only where it lives. The rules are the library's
(:mod:`tether.upstreams.destinations`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody
from tether.api.deps import CallerDep, TetherDep
from tether.upstreams.destinations import DestinationSpec

__all__ = ["router"]

router = APIRouter(tags=["egress"])

_MAX_LABELS = 8


class OAuthBody(StrictBody):
    """All three of ``token_url``, ``client_id`` and ``client_secret`` are needed (the
    library says which is missing)."""

    token_url: str | None = Field(
        default=None, description="the token endpoint (https; http only when internal)"
    )
    client_id: str | None = Field(default=None, description="the OAuth client ID")
    client_secret: str | None = Field(
        default=None, description="where the client secret lives: env:VAR or vault:<path>#<field>"
    )
    scope: str = Field(default="", description="the scope to ask for (space-separated)")


class AddDestination(StrictBody):
    name: str = Field(description="routes /egress/NAME/..., grants name NAME/<path>")
    base: str = Field(description="https://host[:port][/prefix]: no query, fragment or userinfo")
    credentials: list[str] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "HEADER=REF, 'HEADER=Bearer {REF}', query:NAME=REF or basic:USER=REF "
            "(REF: env:VAR or vault:<path>#<field>)"
        ),
    )
    oauth: OAuthBody | None = Field(
        default=None, description="an OAuth client whose token is sent as a bearer"
    )
    labels: list[str] = Field(
        default_factory=list,
        max_length=_MAX_LABELS,
        description="sensitive, untrusted, egress, destructive or plain",
    )
    internal: bool = Field(
        default=False,
        strict=True,
        description="an API inside the network: private and loopback addresses allowed",
    )
    owner: str | None = Field(default=None, description="the accountable person's email")


class LabelChange(StrictBody):
    add: list[str] = Field(default_factory=list, max_length=_MAX_LABELS, description="to add")
    remove: list[str] = Field(default_factory=list, max_length=_MAX_LABELS, description="to remove")


@router.get("/v1/egress/destinations", summary="List egress destinations")
def list_destinations(tether: TetherDep, caller: CallerDep) -> dict[str, Any]:
    """Every destination, by name (definitions for admins and each one's owner)."""
    destinations = tether.destinations
    return {"destinations": [destinations.view(caller, d) for d in destinations.list()]}


@router.post("/v1/egress/destinations", status_code=201, summary="Register an egress destination")
def add_destination(tether: TetherDep, caller: CallerDep, body: AddDestination) -> dict[str, Any]:
    """Admins only (403 recorded otherwise); 409 when the name is taken by a destination
    or an upstream MCP server. Recorded as ``egress.destination_added``."""
    oauth = body.oauth
    spec = DestinationSpec(
        name=body.name,
        base=body.base,
        credentials=tuple(body.credentials),
        labels=tuple(body.labels),
        internal=body.internal,
        owner=body.owner,
        oauth_token_url=oauth.token_url if oauth else None,
        oauth_client_id=oauth.client_id if oauth else None,
        oauth_client_secret=oauth.client_secret if oauth else None,
        oauth_scope=oauth.scope if oauth else "",
    )
    destination = tether.destinations.add(caller, spec)
    return tether.destinations.view(caller, destination)


@router.get("/v1/egress/destinations/{name}", summary="Show an egress destination")
def show_destination(tether: TetherDep, caller: CallerDep, name: str) -> dict[str, Any]:
    """One destination: its definition, effective labels, route, audience and the
    forward proxy's address (admins and its owner), else name, audience and route."""
    return tether.destinations.view(caller, tether.destinations.get(name))


@router.delete("/v1/egress/destinations/{name}", summary="Remove an egress destination")
def remove_destination(
    tether: TetherDep,
    caller: CallerDep,
    name: str,
    reason: str = Query(default="", max_length=1000, description="why; recorded"),
) -> dict[str, Any]:
    """Admins only (403 recorded otherwise). Tokens for it are no longer issued, nor
    accepted by the proxy. Recorded as ``egress.destination_removed``."""
    tether.destinations.remove(caller, name, reason)
    return {"removed": name}


@router.post(
    "/v1/egress/destinations/{name}/labels", summary="Change an egress destination's labels"
)
def change_labels(
    tether: TetherDep, caller: CallerDep, name: str, body: LabelChange
) -> dict[str, Any]:
    """``{"add": [...], "remove": [...]}``: admins and the destination's owner (403
    recorded otherwise). Recorded as ``egress.labelled`` when something changed."""
    changed = tether.destinations.label(caller, name, add=body.add, remove=body.remove)
    return tether.destinations.view(caller, changed)
