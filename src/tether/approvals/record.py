"""One approval as stored and shown (:class:`Approval`), its rows and its audit events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from tether.audit.record import Entry
from tether.callers import Caller

__all__ = [
    "APPROVERS",
    "STATES",
    "Approval",
    "approval_of",
    "decided_entry",
    "requested_entry",
    "row_of",
]

APPROVERS = ("owner", "admin")
STATES = ("pending", "approved", "denied", "used", "expired")


@dataclass(frozen=True, slots=True)
class Approval:
    """One held call and what became of it. ``state`` is as of when it was read: a pending
    or approved approval past ``expires_at`` reads as ``expired``."""

    id: str
    digest: str
    agent: str
    owner: str | None
    approver: str  # owner | admin
    chain: tuple[str, ...]
    action: str
    resource: str
    arguments: str  # exact, canonical JSON
    redacted: str  # what the log keeps (JSON)
    reasons: tuple[str, ...]
    state: str
    requested_at: datetime
    expires_at: datetime
    request_seq: int | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    used_at: datetime | None

    def to_dict(self, *, exact: bool = False) -> dict[str, Any]:
        """Its public form; ``exact`` adds the exact arguments (for an approver)."""
        shown: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "agent": self.agent,
            "owner": self.owner,
            "approver": self.approver,
            "chain": list(self.chain),
            "action": self.action,
            "resource": self.resource,
            "digest": self.digest,
            "redacted_arguments": json.loads(self.redacted),
            "reasons": list(self.reasons),
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "request_seq": self.request_seq,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decision_reason": self.decision_reason,
            "used_at": self.used_at.isoformat() if self.used_at else None,
        }
        if exact:
            shown["arguments"] = json.loads(self.arguments)
        return shown

    def notification(self) -> dict[str, Any]:
        """What the webhook is told: never the exact arguments."""
        return {
            "type": "approval.requested",
            "id": self.id,
            "agent": self.agent,
            "chain": list(self.chain),
            "action": self.action,
            "tool": self.resource,
            "redacted_arguments": json.loads(self.redacted),
            "digest": self.digest,
            "expires_at": self.expires_at.isoformat(),
            "reasons": list(self.reasons),
            "approver": self.approver,
        }


def row_of(a: Approval) -> dict[str, Any]:
    return {
        "id": a.id,
        "digest": a.digest,
        "agent": a.agent,
        "owner": a.owner,
        "approver": a.approver,
        "chain": list(a.chain),
        "action": a.action,
        "resource": a.resource,
        "arguments": a.arguments,
        "redacted": a.redacted,
        "reasons": list(a.reasons),
        "state": a.state,
        "requested_at": a.requested_at,
        "expires_at": a.expires_at,
        "request_seq": a.request_seq,
        "decided_by": a.decided_by,
        "decided_at": a.decided_at,
        "decision_reason": a.decision_reason,
        "used_at": a.used_at,
    }


def approval_of(row: Row[Any], now: datetime) -> Approval:
    state = str(row.state)
    if state in ("pending", "approved") and row.expires_at <= now:
        state = "expired"
    return Approval(
        id=row.id,
        digest=row.digest,
        agent=row.agent,
        owner=row.owner,
        approver=row.approver,
        chain=tuple(row.chain),
        action=row.action,
        resource=row.resource,
        arguments=row.arguments,
        redacted=row.redacted,
        reasons=tuple(row.reasons),
        state=state,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        request_seq=row.request_seq,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        used_at=row.used_at,
    )


def requested_entry(a: Approval, redacted: Any) -> Entry:
    return Entry.of(
        "approval.requested",
        actor=a.agent,
        subject=a.agent,
        chain=a.chain,
        action=a.action,
        resource=a.resource,
        reasons=a.reasons,
        detail={
            "id": a.id,
            "approver": a.approver,
            "digest": a.digest,
            "redacted_arguments": redacted,
            "expires_at": a.expires_at.isoformat(),
            "request_seq": a.request_seq,
        },
    )


def decided_entry(a: Approval, event: str, by: Caller, reason: str) -> Entry:
    return Entry.of(
        event,
        actor=by.subject,
        subject=a.agent,
        reason=reason,
        action=a.action,
        resource=a.resource,
        detail={"id": a.id, "digest": a.digest, "chain": list(a.chain), "approver": a.approver},
    )
