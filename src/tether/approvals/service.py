"""Human approval of held calls: asked by the gateway, decided by a person, used once.

A call the decision point *holds* (``Decision.approval`` = ``owner`` | ``admin``: a grant
with ``approval``, a guardrail annotated ``@approval(...)``, the trifecta rule in approval
mode) gets a pending approval (:meth:`Approvals.request`), bound to the call's digest
(:func:`tether.approvals.arguments.call_digest`: chain, action, resource, arguments); asking again
for the same call while it is pending returns the same approval (retries do not pile up).

- **Who decides.** ``owner``: the acting agent's current owner or an admin; ``admin``:
  admins only. Someone who may not see the approval (not an admin, not the owner) gets
  "not found" (404); an owner who may see it but not decide it (an ``admin`` approval) gets
  403; both refusals are recorded.
- **When.** Only a pending approval before its ``expires_at`` (now + ``guard.approval_ttl``)
  can be approved or denied; anything else is a 409 that says what it is.
- **Used once.** An approved approval lets exactly one call through, until it expires:
  :meth:`Approvals.consume` is one conditional ``UPDATE`` (state approved, not used, not
  expired, the same digest), run in the transaction that records the decision, so two
  processes racing for it cannot both win.
- **What is kept.** The store keeps the exact arguments for the approver
  (:meth:`Approvals.get` shows them to those who may decide); the audit log, the listing
  and the webhook get the digest and the redacted form
  (:func:`tether.approvals.arguments.redact_arguments`) only.

Events: ``approval.requested`` (actor: the agent), ``approval.approved`` /
``approval.denied`` (actor: the person), ``approval.used`` (with the decision it let
through), refusals as ``approval.refused``.
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, text, update

from tether.approvals.arguments import call_digest, redact_arguments
from tether.approvals.record import (
    APPROVERS,
    STATES,
    Approval,
    approval_of,
    decided_entry,
    requested_entry,
    row_of,
)
from tether.approvals.webhook import Webhook
from tether.audit.record import Entry
from tether.audit.throttle import RefusalLog
from tether.callers import Caller
from tether.errors import Forbidden, IllegalTransition, InvalidRequest, NotFound
from tether.metrics import Metrics
from tether.model import parse_text
from tether.registry import Registry
from tether.services import Services
from tether.store import agents, approvals

__all__ = ["MAX_LIMIT", "Approvals"]

MAX_LIMIT = 1000
_ID = re.compile(r"ap_[0-9a-f]{16}")


class Approvals:
    """The approvals of one store (see the module documentation)."""

    def __init__(
        self,
        services: Services,
        registry: Registry,
        refusals: RefusalLog,
        metrics: Metrics,
        webhook: Webhook | None = None,
    ) -> None:
        self._store = services.store
        self._settings = services.settings
        self._log = services.events
        self._clock = services.clock
        self._registry = registry
        self._refusals = refusals
        self._metrics = metrics
        self.webhook = webhook

    # ---- the gateway's side ---------------------------------------------------------------

    def request(
        self,
        *,
        chain: Sequence[str],
        agent: str,
        action: str,
        resource: str,
        args: dict[str, Any] | None,
        reasons: Sequence[str],
        approver: str,
        request_seq: int | None = None,
    ) -> Approval:
        """The pending approval for this held call: the one already pending for the same
        digest (not expired), or a new one (recorded, and told to the webhook)."""
        if approver not in APPROVERS:
            raise InvalidRequest(f"approver is one of {', '.join(APPROVERS)}, not {approver!r}")
        digest = call_digest(chain, action, resource, args)
        redacted = redact_arguments(args or {})
        now = self._clock()
        with self._store.write() as conn:
            if conn.dialect.name == "postgresql":  # one asker per call at a time (SQLite's
                # write transactions are serial already): concurrent retries find one approval
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(digest)})
            found = conn.execute(
                select(approvals)
                .where(
                    approvals.c.digest == digest,
                    approvals.c.approver == approver,  # one asked of another role is not it
                    approvals.c.state == "pending",
                    approvals.c.expires_at > now,
                )
                .limit(1)
            ).first()
            if found is not None:
                return approval_of(found, now)
            approval = Approval(
                id="ap_" + secrets.token_hex(8),
                digest=digest,
                agent=agent,
                owner=self._owner_now(conn, agent),
                approver=approver,
                chain=tuple(chain),
                action=action,
                resource=resource,
                arguments=json.dumps(args or {}, sort_keys=True, separators=(",", ":")),
                redacted=json.dumps(redacted, sort_keys=True, separators=(",", ":")),
                reasons=tuple(reasons),
                state="pending",
                requested_at=now,
                expires_at=now + self._settings.guard.approval_ttl,
                request_seq=request_seq,
                decided_by=None,
                decided_at=None,
                decision_reason=None,
                used_at=None,
            )
            conn.execute(insert(approvals).values(**row_of(approval)))
            self._log.append(conn, requested_entry(approval, redacted))
        self._metrics.inc("tether_approvals_total", state="requested")
        if self.webhook is not None:
            self.webhook.notify(approval.notification())
        return approval

    def granted(self, digest: str, role: str = "owner") -> Approval | None:
        """An approved, unused, unexpired approval of the call with this digest, if any,
        asked of ``role`` or a stronger one: a hold that now needs an admin is not lifted
        by an approval that was asked of (and given by) the agent's owner."""
        if role not in APPROVERS:
            raise InvalidRequest(f"approver is one of {', '.join(APPROVERS)}, not {role!r}")
        roles = APPROVERS[APPROVERS.index(role) :]
        now = self._clock()
        with self._store.read() as conn:
            found = conn.execute(
                select(approvals)
                .where(_usable(now), approvals.c.digest == digest, approvals.c.approver.in_(roles))
                .order_by(approvals.c.decided_at)
                .limit(1)
            ).first()
        return None if found is None else approval_of(found, now)

    def consume(self, conn: Connection, approval_id: str, digest: str) -> bool:
        """Use the approval for the call with ``digest`` in the caller's write transaction
        ``conn`` (the one that records the decision it allows): True for exactly one
        caller, ever; False when it was used already, expired or is not approved."""
        now = self._clock()
        done = conn.execute(
            update(approvals)
            .where(_usable(now), approvals.c.id == approval_id, approvals.c.digest == digest)
            .values(state="used", used_at=now)
        )
        if done.rowcount != 1:
            return False
        row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).one()
        used = approval_of(row, now)
        self._log.append(
            conn,
            Entry.of(
                "approval.used",
                actor=used.agent,
                subject=used.agent,
                chain=used.chain,
                action=used.action,
                resource=used.resource,
                detail={"id": used.id, "digest": used.digest},
            ),
        )
        self._metrics.inc("tether_approvals_total", state="used")
        return True

    def state(self, approval_id: str) -> str:
        """The approval's state now (a waiting call polls this); NotFound if there is none."""
        with self._store.read() as conn:
            row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).first()
        if row is None:
            raise NotFound(f"no approval {approval_id}")
        return approval_of(row, self._clock()).state

    # ---- people's side --------------------------------------------------------------------

    def get(self, by: Caller, approval_id: str) -> Approval:
        """One approval, for someone who may see it (else NotFound, recorded)."""
        with self._guard(by, "approval.read"), self._store.read() as conn:
            return self._visible(conn, by, approval_id, lock=False)

    def list(
        self, by: Caller, *, state: str | None = None, limit: int = 100
    ) -> builtins.list[Approval]:
        """Approvals newest first: an admin's all, an owner's those of their agents."""
        if state is not None and state not in STATES:
            raise InvalidRequest(f"invalid state {state!r}: one of {', '.join(STATES)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        now = self._clock()
        query = select(approvals).order_by(approvals.c.requested_at.desc(), approvals.c.id.desc())
        if state is not None:
            query = query.where(_in_state(state, now))
        with self._store.read() as conn:
            if not by.is_admin:
                if by.email is None:
                    return []
                owned = conn.execute(select(agents.c.name).where(agents.c.owner == by.email))
                ids = [self._registry.agent_id(name) for name in owned.scalars()]
                query = query.where(approvals.c.agent.in_(ids))
            return [approval_of(row, now) for row in conn.execute(query.limit(limit))]

    def approve(self, by: Caller, approval_id: str, reason: str = "") -> Approval:
        """Approve a pending approval: the call it holds may run once, until it expires."""
        return self._decide(by, approval_id, "approved", reason)

    def deny(self, by: Caller, approval_id: str, reason: str = "") -> Approval:
        """Deny a pending approval: it stays denied (a new call needs a new approval)."""
        return self._decide(by, approval_id, "denied", reason)

    def _decide(self, by: Caller, approval_id: str, to: str, reason: str) -> Approval:
        reason = parse_text(reason, "reason").strip()
        event = f"approval.{to}"
        with self._guard(by, event), self._store.write() as conn:
            found = self._visible(conn, by, approval_id, lock=True)
            if found.approver == "admin" and not by.is_admin:
                raise _Refused(found.id, "only an admin can decide this approval")
            if found.state != "pending":
                raise IllegalTransition(
                    f"approval {found.id} is {found.state}: only a pending approval can be "
                    f"{to}" + (" (the call needs a new approval)" if found.state != to else "")
                )
            now = self._clock()
            done = conn.execute(
                update(approvals)
                .where(
                    approvals.c.id == found.id,
                    approvals.c.state == "pending",
                    approvals.c.expires_at > now,
                )
                .values(state=to, decided_by=by.subject, decided_at=now, decision_reason=reason)
            )
            if done.rowcount != 1:
                raise IllegalTransition(
                    f"approval {found.id} is no longer pending: it was not {to}"
                )
            decided = replace(
                found, state=to, decided_by=by.subject, decided_at=now, decision_reason=reason
            )
            self._log.append(conn, decided_entry(decided, event, by, reason))
        self._metrics.inc("tether_approvals_total", state=to)
        return decided

    # ---- helpers ----------------------------------------------------------------------------

    def _visible(self, conn: Connection, by: Caller, approval_id: str, *, lock: bool) -> Approval:
        if not isinstance(approval_id, str) or _ID.fullmatch(approval_id) is None:
            raise _Hidden(str(approval_id)[:64], exists=False)
        query = select(approvals).where(approvals.c.id == approval_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise _Hidden(approval_id, exists=False)
        if by.is_admin or by.owns(self._owner_now(conn, row.agent)):
            return approval_of(row, self._clock())
        raise _Hidden(approval_id, exists=True)

    def _owner_now(self, conn: Connection, agent: str) -> str | None:
        """The current owner of ``agent`` (None: unowned, or no longer registered)."""
        try:
            name = self._registry.parse_ref(agent)
        except InvalidRequest:
            return None
        owner = conn.execute(select(agents.c.owner).where(agents.c.name == name)).scalar()
        return None if owner is None else str(owner)

    @contextmanager
    def _guard(self, by: Caller, what: str) -> Iterator[None]:
        """A hidden approval is "not found", a refused decision "forbidden"; both are
        recorded once the transaction is over."""
        try:
            yield
        except _Hidden as hidden:
            if hidden.exists:
                self._refusals.record(
                    by.subject,
                    "not the agent's owner",
                    what,
                    type="approval.refused",
                    subject=hidden.id,
                )
            raise NotFound(f"no approval {hidden.id}") from None
        except _Refused as refused:
            self._refusals.record(
                by.subject, refused.reason, what, type="approval.refused", subject=refused.id
            )
            raise Forbidden(refused.reason) from None


class _Hidden(Exception):
    def __init__(self, approval_id: str, *, exists: bool) -> None:
        super().__init__(approval_id)
        self.id = approval_id
        self.exists = exists


class _Refused(Exception):
    def __init__(self, approval_id: str, reason: str) -> None:
        super().__init__(reason)
        self.id = approval_id
        self.reason = reason


def _lock_key(digest: str) -> int:
    """A PostgreSQL advisory lock key (signed 64-bit) for the call with ``digest``."""
    return int(digest[:15], 16)  # 60 bits: always a positive bigint


def _usable(now: datetime) -> Any:
    return and_(
        approvals.c.state == "approved", approvals.c.used_at.is_(None), approvals.c.expires_at > now
    )


def _in_state(state: str, now: datetime) -> Any:
    if state in ("pending", "approved"):
        return and_(approvals.c.state == state, approvals.c.expires_at > now)
    if state == "expired":
        return or_(
            approvals.c.state == "expired",
            and_(approvals.c.state.in_(("pending", "approved")), approvals.c.expires_at <= now),
        )
    return approvals.c.state == state
