"""``/v1/approvals``: held calls waiting for a person, and the people's answers.

Owners see and decide the approvals of their own agents, admins all (another owner's
approval is a 404, recorded); an ``admin`` approval is decided by admins only (403,
recorded). The exact arguments are shown by ``GET /v1/approvals/{id}`` (the approver must
see what they approve); the listing shows the redacted form. The rules are the library's
(:mod:`tether.approvals`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody
from tether.api.deps import CallerDep, TetherDep
from tether.approvals import MAX_LIMIT
from tether.errors import NotFound

__all__ = ["router"]

router = APIRouter(tags=["approvals"])


class Answer(StrictBody):
    reason: str = Field(default="", description="why (at most 1000 characters)")


@router.get("/v1/approvals")
def list_approvals(
    tether: TetherDep,
    caller: CallerDep,
    state: str | None = Query(default=None, description="pending, approved, denied, used, expired"),
    limit: int = Query(default=100, ge=1, le=MAX_LIMIT),
) -> dict[str, Any]:
    """Approvals, newest first (redacted arguments)."""
    found = tether.approvals.list(caller, state=state, limit=limit)
    return {"approvals": [approval.to_dict() for approval in found]}


@router.get("/v1/approvals/{approval_id}")
def show_approval(tether: TetherDep, caller: CallerDep, approval_id: str) -> dict[str, Any]:
    """One approval, with the exact arguments of the call it holds."""
    return tether.approvals.get(caller, approval_id).to_dict(exact=True)


@router.get("/v1/approvals/{approval_id}/{rest:path}", include_in_schema=False)
def no_such_approval(caller: CallerDep, approval_id: str, rest: str) -> None:
    """A path under an approval that is not one: 404 (after authentication)."""
    raise NotFound("no such approval resource")


@router.post("/v1/approvals/{approval_id}/{answer}")
def answer_approval(
    tether: TetherDep,
    caller: CallerDep,
    approval_id: str,
    answer: Literal["approve", "deny"],
    body: Answer | None = None,
) -> dict[str, Any]:
    """Approve (the call may run once, until the approval expires) or deny."""
    reason = body.reason if body is not None else ""
    decide = tether.approvals.approve if answer == "approve" else tether.approvals.deny
    return decide(caller, approval_id, reason).to_dict(exact=True)
