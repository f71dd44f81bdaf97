"""The :class:`Tether` facade: one store, its registry, event record and authentication."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from tether.admin_tokens import TOKEN_PREFIX, AdminTokens
from tether.approvals import Approvals
from tether.approvals.webhook import Webhook
from tether.audit.checkpoints import Checkpoints
from tether.audit.log import AuditLog
from tether.audit.record import Effect, Entry
from tether.audit.throttle import RefusalLog, Refusals
from tether.audit.verify import Report, verify
from tether.budgets import Budgets
from tether.callers import Caller
from tether.config import Settings
from tether.detect.alerts import Alerts
from tether.detect.response import Responder
from tether.detect.risk import RiskInput, RiskScores
from tether.detect.runner import Detector
from tether.dev_idp import DevIdp
from tether.discover.findings import Findings
from tether.discover.key import home_key
from tether.epoch import EpochListener, StateEpoch
from tether.errors import (
    Denied,
    StoreUnavailable,
    TetherError,
    Unauthenticated,
    VerificationFailed,
)
from tether.grants import Grants
from tether.idp import IdentityProviders
from tether.keys import SigningKeys
from tether.killswitch import KillSwitch
from tether.metrics import Metrics
from tether.policy.decision import AccessRequest, Decision
from tether.policy.guardrails import Guardrails
from tether.policy.pdp import DecisionPoint
from tether.registry import Registry
from tether.reports import Reports
from tether.services import Services
from tether.store import Store
from tether.tokens import Tokens
from tether.upstreams import Destinations, Flows, Labels, Pins, Upstreams
from tether.vault import Broker

log = logging.getLogger("tether")

__all__ = ["VERSION", "InitResult", "Tether", "utcnow"]

VERSION = "0.1.0"

Item = TypeVar("Item")
# what a decision's record carries besides its event (see Tether.decide_all)
Then = Callable[[Decision], Effect | None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class InitResult:
    home: str
    database: str
    revision: str
    created: bool
    admin_token: str | None  # shown once, when it was just made


def decision_entry(d: Decision) -> Entry:
    """The audit event of a decision: the chain, human first, and what was decided."""
    actor = d.chain[-1] if d.chain else "?"
    return Entry.of(
        "decision",
        actor=actor,
        subject=actor,
        chain=d.chain or (actor,),
        action=d.action,
        resource=d.resource,
        decision="allow" if d.allowed else "deny",
        reasons=d.reasons,
        detail=_decision_detail(d),
    )


def _decision_detail(d: Decision) -> dict[str, Any]:
    """What a decision's event keeps beyond its reasons: the grants and policies that
    decided it and, when they played a part, the resource's labels, the session labels
    with the events that set them, the arguments' digest and who may approve a held call."""
    detail: dict[str, Any] = {
        "grants": list(d.grants),
        "policies": list(d.policies),
        "epoch": d.epoch,
        "cached": d.cached,
    }
    if d.labels:
        detail["labels"] = list(d.labels)
    if d.session:
        detail["session"] = json.loads(d.session)
    if d.args_digest:
        detail["args_digest"] = d.args_digest
    if d.approval:
        detail["approval"] = d.approval
    if d.budget:
        detail["budget"] = json.loads(d.budget)
    return detail


class Tether:
    """A running Tether: open it on :class:`Settings`, close it when done."""

    def __init__(
        self, settings: Settings, store: Store, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.events = AuditLog(store, clock)
        self.checkpoints = Checkpoints(store, settings, self.events, clock)
        self.metrics = Metrics()
        self.refusals = RefusalLog(
            self.events,
            Refusals(settings.refusals_per_second, settings.refusals_burst),
            lambda: self.metrics.inc("tether_refusals_suppressed_total"),
        )
        self.admin_tokens = AdminTokens(store, clock)
        self.dev_idp = DevIdp(settings) if settings.dev_idp else None
        idps = (*settings.idp, self.dev_idp.config()) if self.dev_idp else settings.idp
        self.identity_providers = IdentityProviders(idps, settings.admin_groups)
        self.epoch = StateEpoch(store, settings.decision_staleness_ms / 1000)
        self.services = Services(store, settings, self.events, self.epoch, clock)
        self.upstreams = Upstreams(self.services)
        self.destinations = Destinations(self.services)  # the egress proxy's HTTP APIs
        self.pins = Pins(self.services)
        self.labels = Labels(self.services)  # labels on tools, resources and prompts
        self.flows = Flows(self.services)  # the labels each token family and pair touched
        self._listener: EpochListener | None = None
        self.registry = Registry(self.services, self.refusals)
        self.grants = Grants(self.services, self.registry, self.refusals)
        self.guardrails = Guardrails(self.services)
        self.budgets = Budgets(self.services, self.grants)  # limits of grants, on decisions
        self.keys = SigningKeys(self.services)
        self.tokens = Tokens(
            self.services,
            self.keys,
            self.registry,
            self.grants,
            self.identity_providers,
            decisions=self,  # every exchange hop is decided and recorded like any decision
        )
        self.vault = Broker(self.services) if settings.vault.configured else None
        self.killswitch = KillSwitch(self.services, self.registry, self.vault)
        self.discovery = Findings(self.services, self.registry)
        self.reports = Reports(self.services, self.registry, self.grants)
        self.risk = RiskScores(self.services)
        self.alerts = Alerts(self.services, self.registry, self.refusals, self.risk, self.metrics)
        self.pdp = DecisionPoint(
            self.services,
            self.registry,
            self.grants,
            self.guardrails,
            inputs=(RiskInput(self.risk),),  # context.risk: the chain's highest risk score
            labels=self.labels,  # resource.labels: one snapshot per state epoch
        )
        self.responder = Responder(self.services, self.registry, self.killswitch, self.alerts)
        self.detector = Detector(self.services, self.registry, self.alerts, self.responder)
        hook = settings.guard.approval_webhook
        self.approvals = Approvals(  # held calls, approved by people (issue 17)
            self.services,
            self.registry,
            self.refusals,
            self.metrics,
            Webhook(hook, self.metrics) if hook else None,
        )

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        migrate: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> Tether:
        """Open the store; with ``migrate`` bring its schema up to date, otherwise
        refuse a store whose schema is not the one this version expects."""
        store = Store.open(settings.database_url)
        try:
            if migrate:
                store.migrate()
            else:
                current, head = store.current_revision(), store.head_revision()
                if current != head:
                    raise StoreUnavailable(
                        f"the store {store.describe()} is at schema {current or 'none'}, "
                        f"this Tether needs {head}: run `tether init`"
                    )
        except TetherError:
            store.dispose()
            raise
        return cls(settings, store, clock)

    @classmethod
    def init(cls, settings: Settings) -> tuple[Tether, InitResult]:
        """Create ``TETHER_HOME`` (mode 0700), migrate the store, and make the admin
        token if there is none yet (written to ``admin.token`` with mode 0600)."""
        home = settings.home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.keys_dir.mkdir(mode=0o700, exist_ok=True)
        tether = cls.open(settings, migrate=True)
        tether.keys.ensure()
        tether.checkpoints.ensure_key()  # the audit key, made on first init
        home_key(home)  # the key discovery fingerprints are made with (tether.discover.key)
        token: str | None = None
        if not tether.admin_tokens.exist():
            token = tether.admin_tokens.create()
            path = settings.admin_token_file
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token + "\n")
        result = InitResult(
            home=str(home.resolve()),
            database=tether.store.describe(),
            revision=tether.store.head_revision(),
            created=token is not None,
            admin_token=token,
        )
        return tether, result

    def authenticate(self, bearer: str | None) -> Caller:
        """The caller a bearer token names: the admin, or a person from a trusted IdP."""
        if not bearer:
            raise Unauthenticated("missing bearer token")
        if self.admin_tokens.verify(bearer):
            return Caller.admin()
        if bearer.startswith(TOKEN_PREFIX) or not self.identity_providers:
            raise Unauthenticated("invalid bearer token")
        return self.identity_providers.authenticate(bearer)

    # ---- the one door for decisions (DESIGN.md §5, invariant 8) --------------------------
    # An allow comes only from decide_all / authorize, recorded before it is returned, or
    # from decide_with_effect, recorded in the transaction of its effect (which is not
    # released before that commits); visible filters a listing unrecorded and hands back
    # items, never a Decision, so it can hide but never allow. Nothing else calls the
    # decision point.

    def authorize(self, request: AccessRequest) -> Decision:
        """Decide and record; returns the Decision on allow, raises :class:`Denied` on deny.

        The decision is written to the event record before it is returned: if that write
        fails, the answer is a deny (fail closed)."""
        [decision] = self.decide_all([request])
        if not decision.allowed:
            raise Denied("denied: " + "; ".join(decision.reasons), decision.reasons, decision)
        return decision

    def decide_all(
        self, requests: Sequence[AccessRequest], then: Then | None = None
    ) -> list[Decision]:
        """Decide each request and record every decision in one transaction; if the
        record cannot be written, every answer is a deny. ``then(decision)`` may give an
        effect that the decision's record carries: the state it sets (what a gateway call
        takes in), written in the transaction that records it, with its event's number."""
        return self.record([self.pdp.decide(request) for request in requests], then)

    def visible(
        self, items: Sequence[Item], request_of: Callable[[Item], AccessRequest]
    ) -> list[Item]:
        """The items whose request (``request_of(item)``) some call could be allowed for,
        in order: a listing's filter (:meth:`DecisionPoint.could_allow`: allowed, held for
        approval, or allowed for some arguments when a policy reads them). Not recorded,
        and not a decision: what it shows must still be decided (:meth:`decide_all`), on
        its real arguments, when it is used."""
        return [item for item in items if self.pdp.could_allow(request_of(item))]

    def validate(self, request: AccessRequest) -> None:
        """Raise :class:`~tether.errors.InvalidRequest` for a malformed request (a caller's
        context that sets a server-computed key included), before anything is decided."""
        self.pdp.validate(request)

    def reads_context(self, name: str) -> bool:
        """Whether some guardrail or grant condition may read ``context.<name>`` (the
        gateway checks a call's arguments against its tool's input schema only then)."""
        return self.pdp.reads(name)

    @property
    def reserved_context(self) -> frozenset[str]:
        """The context keys the server computes, which no caller may set."""
        return self.pdp.reserved

    def decide_with_effect(self, requests: Sequence[AccessRequest]) -> list[tuple[Decision, Entry]]:
        """Decide each request (and count it) for a caller that records the decision with
        the effect it allows: each comes with its event, which the caller writes in the
        transaction of that effect (a token exchange's new token), so the allow and its
        effect commit together or neither does. A decision whose effect is not written
        must still be recorded on its own (``events.record``), as a deny always is."""
        decisions = [self._charged(self.pdp.decide(request)) for request in requests]
        self._count(decisions)
        return [(d, decision_entry(d)) for d in decisions]

    def _charged(self, d: Decision) -> Decision:
        """``d`` charged to the budgets of the grants that allowed it (its own transaction)."""
        plan = self.budgets.plan(d)
        return self.budgets.charge(d, plan) if plan else d

    def _count(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            self.metrics.inc(
                "tether_decisions_total",
                decision="allow" if d.allowed else "deny",
                cached=str(d.cached).lower(),
            )

    def record(self, decisions: Sequence[Decision], then: Then | None = None) -> list[Decision]:
        """Write decisions to the event record (and count them); if that fails, every one
        of them comes back as a deny. An allow that a grant with limits made possible is
        charged to its budget in the transaction that records it (a deny when none is
        left, or when the charge fails); the others are written together, in one."""
        plans = [self.budgets.plan(d) for d in decisions]
        if not any(plans):
            return self._record(decisions, then)
        done: dict[int, Decision] = {}
        rest: list[tuple[int, Decision]] = []
        for index, (d, plan) in enumerate(zip(decisions, plans, strict=True)):
            charged = self.budgets.charge(d, plan, decision_entry, then) if plan else d
            if charged.seq is None:  # not charged, or a deny the charge could not record
                rest.append((index, charged))
            else:
                done[index] = charged
                self._count([charged])
        recorded = self._record([d for _, d in rest], then)
        done.update((index, d) for (index, _), d in zip(rest, recorded, strict=True))
        return [done[index] for index in range(len(decisions))]

    def _record(self, decisions: Sequence[Decision], then: Then | None = None) -> list[Decision]:
        entries = [decision_entry(d) for d in decisions]
        effects = [then(d) for d in decisions] if then is not None else []
        self._count(decisions)
        try:
            seqs = self.events.record(*entries, effects=effects)
        except TetherError as exc:
            why = f"decision record could not be written, denied: {exc.description}"
            return [
                replace(d, allowed=False, reasons=(why,), grants=(), cached=False)
                for d in decisions
            ]
        return [replace(d, seq=seq) for d, seq in zip(decisions, seqs, strict=True)]

    def refused(self, actor: str, reason: str, op: str, **fields: Any) -> None:
        """Record a refusal at a face (``access.refused``, or ``type=``), rate-limited per
        caller and never silently dropped (see :mod:`tether.audit.throttle`)."""
        self.refusals.record(actor, reason, op, **fields)

    @property
    def version(self) -> str:
        return VERSION

    def verify_audit(
        self, verifier_keys: Sequence[str] | None = None, notes: Sequence[str] = ()
    ) -> Report:
        """Recompute the whole audit log and check it against every checkpoint (see
        :mod:`tether.audit.verify`): those in the store, this home's anchor, and the signed
        ``notes`` given (kept elsewhere: a SIEM, a witness). Trusts ``verifier_keys`` or
        this home's audit key and ``[audit] verifier_keys``."""
        trusted = self.checkpoints.trusted(verifier_keys)
        anchors = [self.checkpoints.open_note(note, verifier_keys) for note in notes]
        unreadable: str | None = None
        if not verifier_keys:
            try:
                own = self.checkpoints.anchor()
            except VerificationFailed as exc:
                own, unreadable = None, exc.description
            anchors += [own] if own is not None else []
        report = verify(
            self.store,
            self.events,
            self.checkpoints.list(),
            trusted,
            anchors,
            origin=self.checkpoints.origin,
        )
        if unreadable is not None:
            report.fail(None, unreadable)
        return report

    def listen(self) -> None:
        """On PostgreSQL, hear every other process's changes at once (LISTEN/NOTIFY) rather
        than within the staleness bound; a no-op on SQLite. Stopped by :meth:`close`."""
        if self.store.dialect == "postgresql" and self._listener is None:
            self._listener = EpochListener(self.store, self.epoch).start()

    def close(self) -> None:
        self.budgets.close()  # result bytes counted and not written yet
        try:  # suppressed refusals still only counted are recorded before closing
            self.refusals.flush()
        except TetherError as exc:
            log.error("suppressed refusals were not recorded at close: %s", exc.description)
        if self.approvals.webhook is not None:
            self.approvals.webhook.close()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        try:  # events recorded without waiting are written before the store closes
            self.events.flush()
        except TetherError as exc:
            log.error("deferred audit events were not written at close: %s", exc.description)
        self.store.dispose()

    def __enter__(self) -> Tether:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
