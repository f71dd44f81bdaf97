"""``/v1/alerts``: the behaviour detector's alerts, and the people's answers to them.

Owners see and answer the alerts of their own agents, admins all (another owner's alert
is a 404); the rules -- who may resolve what, which reasons are needed -- are the
library's (:mod:`tether.detect.alerts`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody
from tether.api.deps import CallerDep, TetherDep
from tether.detect.alerts import MAX_LIMIT
from tether.errors import NotFound

__all__ = ["router"]

router = APIRouter(tags=["alerts"])

_MOVES = {"ack": "acknowledged", "resolve": "resolved", "suppress": "suppressed"}


class Answer(StrictBody):
    reason: str = Field(
        default="", description="why (required to resolve or suppress; at most 1000 chars)"
    )


@router.get("/v1/alerts")
def list_alerts(
    tether: TetherDep,
    caller: CallerDep,
    state: str | None = Query(default=None, description="open, acknowledged, resolved, suppressed"),
    severity: str | None = Query(default=None, description="low, medium, high, critical"),
    agent: str | None = Query(default=None, description="SPIFFE ID or bare agent name"),
    limit: int = Query(default=100, ge=1, le=MAX_LIMIT),
    after: str | None = Query(default=None, description="an alert id: the page after it"),
) -> dict[str, Any]:
    """Alerts, newest first."""
    found = tether.alerts.list(
        caller, state=state, severity=severity, agent=agent, limit=limit, after=after
    )
    return {"alerts": [alert.to_dict() for alert in found]}


@router.get("/v1/alerts/{alert_id}")
def show_alert(tether: TetherDep, caller: CallerDep, alert_id: str) -> dict[str, Any]:
    return tether.alerts.get(caller, alert_id).to_dict()


@router.get("/v1/alerts/{alert_id}/{rest:path}", include_in_schema=False)
def no_such_alert(caller: CallerDep, alert_id: str, rest: str) -> None:
    """A path under an alert that is not one: 404 (after authentication), as for any
    unknown alert."""
    raise NotFound("no such alert resource")


@router.post("/v1/alerts/{alert_id}/{move}")
def answer_alert(
    tether: TetherDep,
    caller: CallerDep,
    alert_id: str,
    move: Literal["ack", "resolve", "suppress"],
    body: Answer | None = None,
) -> dict[str, Any]:
    """Acknowledge, resolve or suppress an alert."""
    reason = body.reason if body is not None else ""
    return tether.alerts.transition(caller, alert_id, _MOVES[move], reason).to_dict()
