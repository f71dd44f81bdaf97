"""``/v1/gateway/servers``: the upstream MCP servers behind the gateway, their pins and the
labels of what they serve.

A server's upstream definition (command line, URL, environment, credential references,
owner), its pins and its labels are shown to admins and the server's owner only; any other
authenticated person sees what an agent needs to reach it: name, transport and resource.

``/v1/gateway/servers/{name}/labels``: ``GET`` lists the server's items with their
effective labels and where each comes from; ``POST`` ``{"item", "kind", "add", "remove"}``
changes an item's explicit labels; ``DELETE ?item=&kind=&label=`` removes some (admins and
the server's owner; see :mod:`tether.upstreams.labels`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody
from tether.api.deps import CallerDep, TetherDep
from tether.callers import Caller
from tether.upstreams.servers import Upstream, UpstreamSpec

__all__ = ["router"]

router = APIRouter(tags=["gateway"])

PUBLIC_FIELDS = ("name", "transport", "resource")


def _sees_definition(caller: Caller, upstream: Upstream) -> bool:
    return caller.is_admin or caller.owns(upstream.owner)


def _view(tether: TetherDep, caller: Caller, upstream: Upstream) -> dict[str, Any]:
    full = upstream.to_dict(tether.settings.issuer)
    if _sees_definition(caller, upstream):
        return full
    return {key: full[key] for key in PUBLIC_FIELDS}


class AddServer(StrictBody):
    name: str
    command: str | None = Field(default=None, description="stdio: the command line to start")
    url: str | None = Field(default=None, description="HTTP: the streamable-HTTP endpoint")
    env: list[str] = Field(default_factory=list, description="KEY=VALUE, not secret")
    credentials: list[str] = Field(default_factory=list, description="NAME=REF, e.g. env:VAR")
    owner: str | None = Field(
        default=None, description="the accountable person's email (approves changed tools)"
    )


class Approve(StrictBody):
    name: str = Field(description="the tool (or resource URI, prompt) whose change to approve")
    kind: Literal["tool", "resource", "prompt"] = "tool"


class LabelChange(StrictBody):
    item: str = Field(description="the tool or prompt name, or the resource URI", max_length=2048)
    kind: str = Field(default="tool", description="tool, resource or prompt")
    add: list[str] = Field(default_factory=list, description="labels to add", max_length=8)
    remove: list[str] = Field(default_factory=list, description="labels to remove", max_length=8)


@router.get("/v1/gateway/servers")
def list_servers(tether: TetherDep, caller: CallerDep) -> dict[str, Any]:
    return {"servers": [_view(tether, caller, u) for u in tether.upstreams.list()]}


@router.post("/v1/gateway/servers", status_code=201)
def add_server(tether: TetherDep, caller: CallerDep, body: AddServer) -> dict[str, Any]:
    spec = UpstreamSpec(
        name=body.name,
        command=body.command,
        url=body.url,
        env=tuple(body.env),
        credentials=tuple(body.credentials),
        owner=body.owner,
    )
    return tether.upstreams.add(caller, spec).to_dict(tether.settings.issuer)


@router.get("/v1/gateway/servers/{name}")
def show_server(tether: TetherDep, caller: CallerDep, name: str) -> dict[str, Any]:
    upstream = tether.upstreams.get(name)
    if not _sees_definition(caller, upstream):
        return _view(tether, caller, upstream)
    return {
        **upstream.to_dict(tether.settings.issuer),
        "pins": [p.to_dict() for p in tether.pins.list(upstream.name)],
    }


@router.delete("/v1/gateway/servers/{name}")
def remove_server(
    tether: TetherDep, caller: CallerDep, name: str, reason: str = ""
) -> dict[str, Any]:
    tether.upstreams.remove(caller, name, reason)
    return {"removed": name}


@router.post("/v1/gateway/servers/{name}/approve")
def approve(tether: TetherDep, caller: CallerDep, name: str, body: Approve) -> dict[str, Any]:
    return tether.pins.approve(caller, name, body.name, body.kind).to_dict()


@router.get("/v1/gateway/servers/{name}/labels")
def list_labels(tether: TetherDep, caller: CallerDep, name: str) -> dict[str, Any]:
    items = tether.labels.list(caller, name)
    return {"server": name, "items": [i.to_dict() for i in items]}


@router.post("/v1/gateway/servers/{name}/labels")
def change_labels(
    tether: TetherDep, caller: CallerDep, name: str, body: LabelChange
) -> dict[str, Any]:
    changed = tether.labels.change(
        caller, name, body.item, add=body.add, remove=body.remove, kind=body.kind
    )
    return changed.to_dict()


@router.delete("/v1/gateway/servers/{name}/labels")
def remove_labels(
    tether: TetherDep,
    caller: CallerDep,
    name: str,
    item: Annotated[
        str, Query(max_length=2048, description="the tool or prompt name, or resource URI")
    ],
    label: Annotated[list[str], Query(description="a label to remove (repeat for more)")],
    kind: Annotated[str, Query(description="tool, resource or prompt")] = "tool",
) -> dict[str, Any]:
    return tether.labels.change(caller, name, item, remove=label, kind=kind).to_dict()
