"""``/v1/agents`` and ``/v1/owners``: the registry over HTTP."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody, optional_duration
from tether.api.deps import CallerDep, TetherDep
from tether.errors import InvalidRequest
from tether.registry import AgentSpec

__all__ = ["router"]

router = APIRouter(tags=["agents"])


class RegisterAgent(StrictBody):
    name: str = Field(description="1-63 of a-z 0-9 . _ -")
    owner: str | None = Field(default=None, description="the accountable human's email")
    public_key: str = Field(description="Ed25519 public key, base64url (32 bytes) or PEM")
    kind: str = "other"
    purpose: str = ""
    parent: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    expires: str | None = Field(default=None, description="lifetime, e.g. 90d")


class ChangeAgent(StrictBody):
    owner: str | None = None
    state: Literal["active", "suspended"] | None = None
    purpose: str | None = None
    labels: dict[str, str] | None = None
    reason: str = ""


class RotateKey(StrictBody):
    public_key: str
    reason: str = ""


class Kill(StrictBody):
    cascade: bool = True
    reason: str = ""


class BulkKill(StrictBody):
    owner: str | None = None
    all: bool = False
    confirm: bool = False
    reason: str = ""


class Offboard(StrictBody):
    reason: str = ""


@router.get("/v1/agents")
def list_agents(
    tether: TetherDep,
    caller: CallerDep,
    state: str | None = None,
    owner: str | None = None,
    unowned: bool = False,
    after: str | None = Query(None, max_length=63, description="the last name of the page before"),
    limit: int | None = Query(None, ge=1, le=1000, description="a page of at most this many"),
) -> dict[str, Any]:
    """Agents by name; with ``limit``, one page, and ``next`` to pass as ``after`` for the
    next one (null on the last page)."""
    found = tether.registry.list(
        caller, state=state, owner=owner, unowned=unowned, after=after, limit=limit
    )
    listed: dict[str, Any] = {"agents": [agent.to_dict() for agent in found]}
    if limit is not None:
        listed["next"] = found[-1].name if len(found) == limit else None
    return listed


@router.post("/v1/agents", status_code=201)
def register_agent(tether: TetherDep, caller: CallerDep, body: RegisterAgent) -> dict[str, Any]:
    spec = AgentSpec(
        name=body.name,
        owner=body.owner,
        public_key=body.public_key,
        kind=body.kind,
        purpose=body.purpose,
        parent=body.parent,
        labels=body.labels,
        expires_in=optional_duration(body.expires),
    )
    return tether.registry.register(caller, spec).to_dict()


@router.post("/v1/agents/{ref:path}/rotate-key")
def rotate_key(tether: TetherDep, caller: CallerDep, ref: str, body: RotateKey) -> dict[str, Any]:
    return tether.registry.rotate_key(caller, ref, body.public_key, body.reason).to_dict()


@router.get("/v1/agents/{ref:path}")
def show_agent(tether: TetherDep, caller: CallerDep, ref: str) -> dict[str, Any]:
    return tether.registry.get(caller, ref).to_dict()


@router.patch("/v1/agents/{ref:path}")
def change_agent(
    tether: TetherDep, caller: CallerDep, ref: str, body: ChangeAgent
) -> dict[str, Any]:
    registry = tether.registry
    others = body.owner is not None or body.purpose is not None or body.labels is not None
    if body.state is not None:
        if others:
            raise InvalidRequest("change state on its own, not together with other fields")
        move = registry.resume if body.state == "active" else registry.suspend
        return move(caller, ref, body.reason).to_dict()
    if not others:
        raise InvalidRequest("nothing to change: give owner, state, purpose or labels")
    if body.owner is not None and (body.purpose is not None or body.labels is not None):
        raise InvalidRequest("change the owner on its own, not together with other fields")
    if body.owner is not None:
        return registry.set_owner(caller, ref, body.owner, body.reason).to_dict()
    return registry.update(
        caller, ref, purpose=body.purpose, labels=body.labels, reason=body.reason
    ).to_dict()


@router.delete("/v1/agents/{ref:path}")
def retire_agent(
    tether: TetherDep, caller: CallerDep, ref: str, reason: str = Query(default="")
) -> dict[str, Any]:
    return tether.registry.retire(caller, ref, reason).to_dict()


@router.post("/v1/agents/{ref}/kill")
def kill_agent(
    tether: TetherDep, caller: CallerDep, ref: str, body: Kill | None = None
) -> dict[str, Any]:
    """Kill the agent (and, unless ``cascade`` is false, every agent it spawned)."""
    body = body or Kill()
    return tether.killswitch.kill(caller, ref, cascade=body.cascade, reason=body.reason).to_dict()


@router.post("/v1/kill")
def kill_bulk(tether: TetherDep, caller: CallerDep, body: BulkKill) -> dict[str, Any]:
    """Kill every agent of ``owner``, or with ``all`` and ``confirm`` every agent."""
    if (body.owner is None) == (not body.all):
        raise InvalidRequest("give exactly one of owner or all")
    if body.owner is not None:
        return tether.killswitch.kill_owner(caller, body.owner, reason=body.reason).to_dict()
    return tether.killswitch.kill_all(caller, confirm=body.confirm, reason=body.reason).to_dict()


@router.post("/v1/owners/{email}/offboard")
def offboard_owner(
    tether: TetherDep, caller: CallerDep, email: str, body: Offboard | None = None
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    found = tether.registry.offboard_owner(caller, email, reason)
    return {"owner": email.strip().lower(), "agents": [agent.to_dict() for agent in found]}
