"""``/v1/grants``, ``/v1/policies`` and ``/v1/review``: least privilege over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody, optional_duration
from tether.api.deps import CallerDep, TetherDep
from tether.grants import GrantSpec
from tether.policy.schema import SCHEMA_TEXT

__all__ = ["router"]

router = APIRouter(tags=["least privilege"])


class AddGrant(StrictBody):
    principal: str = Field(description="agent SPIFFE ID or name, or user:<email>")
    action: str = Field(description="tools/call, resources/read, prompts/get, delegate, ...")
    resource: str = Field(description="a path or pattern: github/create_issue, github/*")
    when: str | None = Field(default=None, description="an extra Cedar condition")
    expires: str | None = Field(default=None, description="lifetime, e.g. 7d")
    reason: str = ""
    allow_broad: bool = False
    limits: list[str] = Field(
        default_factory=list,
        description="budgets: calls=100/1m (calls per window), bytes=10MB/1h (result bytes)",
    )
    approval: str | None = Field(
        default=None, description="each call it allows waits for approval: owner or admin"
    )


class AddPolicy(StrictBody):
    text: str = Field(description="Cedar policies, each with an @id annotation")
    source: str = ""


@router.get("/v1/grants")
def list_grants(
    tether: TetherDep,
    caller: CallerDep,
    principal: str | None = None,
    unused: str | None = None,
    expiring: str | None = None,
    broad: bool = False,
) -> dict[str, Any]:
    found = tether.reports.grants(
        caller,
        principal=principal,
        unused=optional_duration(unused),
        expiring=optional_duration(expiring),
        broad=broad,
    )
    return {"grants": [r.to_dict(tether.settings.trust_domain) for r in found]}


@router.post("/v1/grants", status_code=201)
def add_grant(tether: TetherDep, caller: CallerDep, body: AddGrant) -> dict[str, Any]:
    spec = GrantSpec(
        principal=body.principal,
        action=body.action,
        resource=body.resource,
        condition=body.when,
        expires_in=optional_duration(body.expires),
        reason=body.reason,
        allow_broad=body.allow_broad,
        limits=tuple(body.limits),
        approval=body.approval,
    )
    return tether.grants.add(caller, spec).to_dict(tether.settings.trust_domain)


@router.delete("/v1/grants/{grant_id}")
def revoke_grant(
    tether: TetherDep, caller: CallerDep, grant_id: str, reason: str = Query(default="")
) -> dict[str, Any]:
    return tether.grants.revoke(caller, grant_id, reason).to_dict(tether.settings.trust_domain)


@router.get("/v1/policies")
def list_policies(tether: TetherDep, caller: CallerDep) -> dict[str, Any]:
    return {"policies": [rail.to_dict() for rail in tether.guardrails.list()]}


@router.get("/v1/policies/schema")
def policy_schema(caller: CallerDep) -> dict[str, str]:
    return {"schema": SCHEMA_TEXT}


@router.post("/v1/policies", status_code=201)
def add_policy(tether: TetherDep, caller: CallerDep, body: AddPolicy) -> dict[str, Any]:
    added = tether.guardrails.add(caller, body.text, body.source)
    return {"policies": [rail.to_dict() for rail in added]}


@router.delete("/v1/policies/{policy_id}")
def remove_policy(
    tether: TetherDep, caller: CallerDep, policy_id: str, reason: str = Query(default="")
) -> dict[str, Any]:
    return tether.guardrails.remove(caller, policy_id, reason).to_dict()


@router.get("/v1/review")
def review(tether: TetherDep, caller: CallerDep, owner: str | None = None) -> dict[str, Any]:
    return {"owners": tether.reports.review(caller, owner)}
