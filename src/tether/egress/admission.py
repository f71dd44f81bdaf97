"""How one request to a destination is judged before anything of it leaves: its target
normalised, what rules may read of it (``context.http``), and the decision, recorded.

:meth:`Admission.judge` runs on a worker thread (it works on the store); every refusal it
makes is recorded with the agent as actor (``egress.refused``) or is a recorded decision,
and reaches the face as :class:`Stop`, carrying the :class:`~tether.egress.exchange.Answer`
to give. Each hop of a redirect is judged here again, as its own request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from tether.core import Tether
from tether.egress import paths
from tether.egress.context import Undecidable, http_context
from tether.egress.exchange import Answer, refusal
from tether.egress.overrides import override_in
from tether.errors import InvalidRequest
from tether.gateway.deciding import Deciding, Denial
from tether.gateway.refusals import Held, Refused, reason_of
from tether.policy.decision import Decision
from tether.tokens import VerifiedToken
from tether.upstreams.destinations import Destination

__all__ = ["APPROVAL_HEADER", "Admission", "Judged", "Stop"]

log = logging.getLogger("tether.egress")

APPROVAL_HEADER = "tether-approval"  # a held request's pending approval


class Stop(Exception):
    """The request goes no further: ``answer`` is what the agent is told (the refusal or
    the decision behind it is on record already)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Judged:
    """A request allowed: its normalised ``target``, its ``resource`` and the recorded
    ``decision`` that let it through."""

    target: paths.Target
    resource: str
    decision: Decision


class Admission:
    """The judging of requests through the egress proxy of ``tether``."""

    def __init__(self, tether: Tether) -> None:
        self.tether = tether
        self._deciding = Deciding(tether, self._refused_deciding)

    def refuse(self, actor: str, why: str, resource: str, action: str) -> None:
        """Record a refusal that is not a decision (``egress.refused``); a failure to
        record it is logged, and the request is refused all the same."""
        try:
            self.tether.refused(
                actor, why, "egress", type="egress.refused", action=action, resource=resource
            )
        except Exception as exc:  # the refusal stands; only its record failed
            log.error("egress refusal not recorded (%s): %s", type(exc).__name__, why)

    def judge(
        self,
        token: VerifiedToken,
        destination: Destination,
        method: str,
        target: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        *,
        absolute: bool,
    ) -> Judged:
        """Normalise ``target``, decide ``method`` on its resource and record it; raises
        :class:`Stop` with the answer when the request may not go."""
        actor = token.client_id
        whole = f"{destination.name}/*"
        try:
            normal = paths.normalise(target, destination.base_path, absolute=absolute)
            resource = paths.resource(destination.name, normal)
        except InvalidRequest as exc:
            self.refuse(actor, exc.description, whole, method)
            raise Stop(refusal(400, "invalid_target", exc.description)) from None
        overriding = override_in(headers, normal.query, body)
        if overriding is not None:  # the destination could run what was not decided
            self.refuse(actor, overriding, resource, method)
            raise Stop(refusal(400, "invalid_request", overriding))
        http: dict[str, Any] | None = None
        try:
            if self.tether.reads_context("http"):
                http = http_context(
                    method, normal.path, normal.query, headers, body, self.tether.settings.egress
                )
        except Undecidable as exc:
            why = f"the request cannot be decided on: {exc}"
            self.refuse(actor, why, resource, method)
            raise Stop(refusal(403, "access_denied", f"denied: {why}", reasons=[why])) from None
        bound = _bound(method, normal, http, body, self.tether.settings.egress.body_max_bytes)
        try:
            decision = self._deciding.decide(
                token, method, resource, None, actor, http=http, bound=bound
            )
        except Held as held:
            raise Stop(_held(held)) from None
        except Denial as denial:
            raise Stop(_denied(denial.decision)) from None
        except Refused as refused:  # recorded by the deciding already
            why = refused.reason
            raise Stop(refusal(403, "access_denied", f"denied: {why}", reasons=[why])) from None
        except InvalidRequest as exc:  # a request the decision point cannot take
            self.refuse(actor, exc.description, resource, method)
            raise Stop(refusal(400, "invalid_target", exc.description)) from None
        except Exception as exc:  # fail closed: no decision, no request
            why = f"the request was not made: {reason_of(exc)}"
            self.refuse(actor, why, resource, method)
            raise Stop(refusal(403, "access_denied", f"denied: {why}", reasons=[why])) from None
        return Judged(normal, resource, decision)

    def _refused_deciding(self, path: str, action: str, why: str, actor: str) -> None:
        self.refuse(actor, why, path, action)


def _bound(
    method: str, target: paths.Target, http: dict[str, Any] | None, body: bytes, shown: int
) -> dict[str, Any]:
    """What an approval of this request is bound to (with the chain and the resource):
    the method, the query, the body's digest, and what rules read (``context.http``), so
    the approved request is the only one it lets through. The approver also sees the body
    as text when it is UTF-8 of at most ``shown`` bytes (the log keeps it redacted)."""
    bound: dict[str, Any] = {
        "method": method,
        "query": [list(pair) for pair in target.query],
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
    }
    if body and len(body) <= shown:
        with contextlib.suppress(UnicodeDecodeError):  # bytes: bound by their digest
            bound["body"] = body.decode("utf-8")
    if http is not None:
        bound["http"] = http
    return bound


def _denied(decision: Decision) -> Answer:
    reasons = list(decision.reasons)
    why = "; ".join(reasons) or "denied"
    return refusal(403, "access_denied", f"denied: {why}", reasons=reasons, decision=decision.seq)


def _held(held: Held) -> Answer:
    return refusal(
        403,
        "approval_required",
        held.reason,
        headers=((APPROVAL_HEADER, held.approval),),
        approval=held.approval,
    )
