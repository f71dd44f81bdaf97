"""How the gateway decides a call it found and may forward: what the work touched so far
(``context.session``), the decision recorded with what an allowed call takes in (written
as an effect of the decision's record, in its transaction), and a held call: a granted
approval for exactly this call used once in the transaction that records the allow, or
a pending approval asked and named (:class:`~tether.gateway.refusals.Held`).

The egress proxy decides its API calls here too: their request (``context.http``) is
given as ``http``, and an approval of one is bound to ``bound`` (what the call sends: its
method, query and body), not only to what rules read of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tether.approvals import Approval, call_digest
from tether.audit.record import Effect, Entry
from tether.core import Tether, Then, decision_entry
from tether.errors import TetherError
from tether.gateway.refusals import Held, Refused, reason_of
from tether.policy.decision import AccessRequest, Decision, canonical
from tether.tokens import VerifiedToken
from tether.upstreams.flows import TRACKED, flow_reads, flow_scopes

__all__ = ["Deciding", "Denial", "Refuse"]

# refuse(path, action, why, actor): record a refusal at the gateway
Refuse = Callable[[str, str, str, str], None]


class Denial(Refused):
    """A deny of the decision point, on record (``decision.seq``; None when even the
    deny could not be written)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("; ".join(decision.reasons))
        self.decision = decision


class Deciding:
    """The decision on one call of the gateway of ``tether`` (``refuse`` records a
    refusal that is not a decision: the flow unreadable, no approval could be asked)."""

    def __init__(self, tether: Tether, refuse: Refuse) -> None:
        self.tether = tether
        self._refuse = refuse

    def decide(
        self,
        token: VerifiedToken,
        action: str,
        path: str,
        args: dict[str, Any] | None,
        actor: str,
        *,
        http: dict[str, Any] | None = None,
        bound: dict[str, Any] | None = None,
    ) -> Decision:
        """The allowed, recorded decision on the call; raises :class:`Denial` (a deny,
        with its reasons) or :class:`Held` (the pending approval it waits for). ``http``:
        an API call's request, for ``context.http``; ``bound``: what an approval of the
        call is bound to and shows (``args`` when not given)."""
        scopes = flow_scopes(token.family, token.chain)
        reads = flow_reads(token.family, token.chain)
        session = self._session(reads, path, action, actor)
        binding = args if bound is None else bound
        decision = self._decide(token, action, path, args, session, scopes, http, binding)
        if decision.allowed:
            return decision
        if decision.approval is None or decision.seq is None:  # not held, or not on record
            raise Denial(decision)
        try:
            pending = self.tether.approvals.request(
                chain=token.chain,
                agent=actor,
                action=action,
                resource=path,
                args=binding,
                reasons=decision.reasons,
                approver=decision.approval,
                request_seq=decision.seq,
            )
        except Exception as exc:  # the held decision is on record; nobody can approve it
            cause = str(exc) if isinstance(exc, ValueError) else reason_of(exc)
            why = f"held for approval, but no approval could be asked: {cause}"
            self._refuse(path, action, why, actor)
            raise Refused(why) from None
        raise Held(pending.id, decision.reasons)

    def _decide(
        self,
        token: VerifiedToken,
        action: str,
        path: str,
        args: dict[str, Any] | None,
        session: dict[str, Any],
        scopes: tuple[str, ...],
        http: dict[str, Any] | None,
        binding: dict[str, Any] | None,
    ) -> Decision:
        """The recorded decision on the call. Only a call the decision point holds costs a
        look for an approval granted for it (by its digest: chain, action, path and
        ``binding``, the arguments or what an API call sends); when there is one, the call
        is decided again with it and the approval used (:meth:`_consume`), so the record
        shows the hold, then the allow that names the approval. What an allowed call takes
        in (its ``sensitive`` and ``untrusted`` labels) is written for the flow's scopes
        with the decision's record, naming its event (:meth:`_taking`): if that cannot be
        written, the call is denied."""
        request = token.request(action, path, args=args, http=http)
        if session:  # what the work touched so far: context.session
            request = replace(request, session=canonical(session))
        taking = self._taking(scopes, path)
        [decision] = self.tether.decide_all([request], then=taking)
        if decision.approval is None or decision.seq is None:
            return decision
        try:
            digest = call_digest(token.chain, action, path, binding)
        except ValueError:  # no approval can name it: it stays held (and is refused)
            return decision
        try:
            granted = self.tether.approvals.granted(digest, decision.approval)
        except TetherError as exc:  # fail closed: the hold stands, nothing is asked
            why = f"held, and no approval could be looked up: {exc.description}"
            self._refuse(path, action, why, token.client_id)
            return replace(decision, reasons=(why,), approval=None)
        if granted is None:
            return decision
        return self._consume(replace(request, approval=granted.id), granted, digest, taking)

    def _taking(self, scopes: tuple[str, ...], path: str) -> Then:
        """For a decision on ``path``: the effect that records, for each of ``scopes``,
        the labels an allowed call takes in (none for a deny, or a call that takes in
        nothing tracked)."""
        now = self.tether.clock()

        def then(decision: Decision) -> Effect | None:
            if not decision.allowed:
                return None
            taken = TRACKED.intersection(decision.labels)
            return self.tether.flows.effect(scopes, taken, path, now)

        return then

    def _consume(
        self, request: AccessRequest, granted: Approval, digest: str, taking: Then
    ) -> Decision:
        """Decide a call an approval was granted for, and use the approval in the
        transaction that records the decision: an allow only for the one call that
        consumes it (across processes); a deny names the approval already used."""
        [(decision, entry)] = self.tether.decide_with_effect([request])
        if not decision.allowed:
            return self._record(decision, entry)
        try:
            with self.tether.store.write() as conn:
                used = self.tether.approvals.consume(conn, granted.id, digest)
                if used:  # written now, for its sequence number (the flow names it)
                    [seq] = self.tether.events.insert(conn, entry)
                    effect = taking(decision)
                    if effect is not None:
                        effect(conn, seq)
        except TetherError as exc:  # rolled back: the approval is still there to use
            why = f"decision record could not be written, denied: {exc.description}"
            denied = replace(decision, allowed=False, reasons=(why,), grants=())
            return self._record(denied, decision_entry(denied))
        if used:
            return replace(decision, seq=seq)
        why = (
            f"approval {granted.id} was already used (or expired): a new call needs a new approval"
        )
        denied = replace(decision, allowed=False, reasons=(why,), grants=())
        return self._record(denied, decision_entry(denied))

    def _record(self, decision: Decision, entry: Entry) -> Decision:
        """Write a decision's event on its own; if that fails, the answer is a deny that
        says so (fail closed), as :meth:`tether.core.Tether.record` does."""
        try:
            [seq] = self.tether.events.record(entry)
        except TetherError as exc:
            why = f"decision record could not be written, denied: {exc.description}"
            return replace(decision, allowed=False, reasons=(why,), grants=(), approval=None)
        return replace(decision, seq=seq)

    def _session(
        self, scopes: tuple[str, ...], path: str, action: str, actor: str
    ) -> dict[str, Any]:
        """What the work (the token's family, each agent with its person) touched so far:
        the request's ``session``; refused (recorded) when it cannot be read."""
        try:
            return self.tether.flows.touched(scopes)
        except Exception as exc:  # the store failed: no decision without the session
            why = f"the request was not made: its data flow could not be read ({reason_of(exc)})"
            self._refuse(path, action, why, actor)
            raise Refused(why) from None
