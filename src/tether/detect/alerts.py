"""Stored alerts: raised from the detector's findings, seen and changed by people.

**Raising.** :meth:`Alerts.raise_all` stores findings as alerts inside the caller's write
transaction (the detector's, with its cursor and baselines), each with one
``alert.raised`` event by ``system:detect`` and the agent's new risk score; all of it
commits together or not at all. An alert's id is made from what it is about (detector,
agent, time and evidence), so the same finding raised again -- a detector restarted
mid-batch -- is the alert already stored, not a second one. The summary is one line of at
most 1000 characters with its control and bidirectional characters as visible ``\\uXXXX``
escapes (:mod:`tether.safe_text`): it quotes what the agent touched (a tool's name is the
agent's to choose) and reaches terminals, SIEM titles and consoles through the API's JSON.
``detail`` keeps the values as recorded (JSON escapes them; every face that shows them
neutralises them).

**Who sees what.** An admin sees every alert; anyone else the alerts of the agents they
own now, and those raised while they owned the agent (the ``owner`` field). Any other
alert is "not found" (404), and the refusal is recorded, as for agents. Seeing is not
answering: only the agent's *current* owner (or an admin) changes an alert's state. A
former owner's attempt is refused (403, recorded): an agent taken from its owner must
not have its risk lowered by them.

**States.** ``open`` → ``acknowledged`` → ``resolved`` or ``suppressed`` (both also
straight from ``open``); resolved and suppressed are final, and any other move is an
:class:`~tether.errors.IllegalTransition` (409). Resolving and suppressing need a reason
(at most 1000 characters); acknowledging takes one optionally. The owner of an alert's
agent may acknowledge it, and resolve or suppress it when it is ``low`` or ``medium``;
only an admin resolves or suppresses a ``high`` or ``critical`` one (that lowers the
agent's risk, see :mod:`tether.detect.risk`), and an owner's attempt is refused (403) and
recorded. Every change is an event (``alert.acknowledged``, ``alert.resolved``,
``alert.suppressed``) with the person as actor, and recomputes the agent's risk in the
same transaction.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Row, and_, func, insert, or_, select, update

from tether.audit.record import Entry
from tether.audit.throttle import RefusalLog
from tether.callers import Caller
from tether.config import SEVERITIES
from tether.detect.model import SYSTEM_ACTOR, Alert, AlertAction, Finding, severity_rank
from tether.detect.risk import RiskScores
from tether.errors import Forbidden, IllegalTransition, InvalidRequest, NotFound
from tether.metrics import Metrics
from tether.model import parse_text
from tether.registry import Registry
from tether.safe_text import neutralise
from tether.services import Services
from tether.store import Store, agents, alerts

__all__ = ["EVENTS", "STATES", "Alerts", "alert_id"]

STATES: Final = ("open", "acknowledged", "resolved", "suppressed")
EVENTS: Final = {
    "acknowledged": "alert.acknowledged",
    "resolved": "alert.resolved",
    "suppressed": "alert.suppressed",
}
_FROM: Final = {  # target state -> the states it may be reached from
    "acknowledged": ("open",),
    "resolved": ("open", "acknowledged"),
    "suppressed": ("open", "acknowledged"),
}
_ADMIN_ONLY_RANK: Final = severity_rank("high")  # resolving/suppressing these: admins only
_ID = re.compile(r"alt_[0-9a-f]{16}")
_MAX_SUMMARY = 1000
MAX_LIMIT: Final = 1000


def alert_id(finding: Finding, agent: str) -> str:
    """The alert's id: the same finding (detector, agent, time, evidence) gives the same."""
    evidence = ",".join(str(seq) for seq in finding.evidence)
    text = "\x00".join((finding.detector, agent, finding.at.isoformat(), evidence))
    return "alt_" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Alerts:
    def __init__(
        self,
        services: Services,
        registry: Registry,
        refusals: RefusalLog,
        risk: RiskScores,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = services.store
        self._log = services.events
        self._clock = services.clock
        self._registry = registry
        self._refusals = refusals
        self._risk = risk
        self._metrics = metrics

    # ---- raising (the detector's transaction) -------------------------------------------

    def raise_all(self, conn: Connection, findings: Sequence[Finding]) -> builtins.list[Alert]:
        """Store ``findings`` as open alerts in the caller's write transaction ``conn``,
        with their events and the agents' new risk scores; returns the alerts raised now
        (a finding already stored is skipped)."""
        staged: dict[str, Alert] = {}
        for finding in findings:
            alert = self._staged(conn, finding)
            staged.setdefault(alert.id, alert)
        if not staged:
            return []
        stored = set(
            conn.execute(select(alerts.c.id).where(alerts.c.id.in_(list(staged)))).scalars()
        )
        raised = [alert for key, alert in staged.items() if key not in stored]
        for alert in raised:
            conn.execute(insert(alerts).values(**_row(alert)))
            self._log.append(conn, _raised_entry(alert))
        self._risk.recompute(conn, {alert.agent for alert in raised})
        if self._metrics is not None and raised:
            Store.after_commit(conn, lambda: self._count(raised))
        return raised

    def add_action(self, conn: Connection, alert_id: str, action: AlertAction) -> Alert:
        """Append an automatic response to the alert's actions, in the caller's write
        transaction (the response code records the action itself)."""
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        actions = [*row.actions, _action_dict(action)]
        conn.execute(update(alerts).where(alerts.c.id == alert_id).values(actions=actions))
        return _alert({**row._mapping, "actions": actions})

    def _staged(self, conn: Connection, finding: Finding) -> Alert:
        if finding.severity not in SEVERITIES:
            raise InvalidRequest(f"finding of {finding.detector}: unknown severity")
        if not finding.detector:
            raise InvalidRequest("a finding needs its detector's name")
        name = self._registry.parse_ref(finding.agent)
        agent = self._registry.agent_id(name)
        owner = conn.execute(select(agents.c.owner).where(agents.c.name == name)).scalar()
        summary = neutralise(" ".join(finding.summary.split()))[:_MAX_SUMMARY]
        return Alert(
            id=alert_id(finding, agent),
            created_at=self._clock(),
            detector=finding.detector,
            severity=finding.severity,
            agent=agent,
            owner=owner,
            chain=tuple(finding.chain) or (agent,),
            summary=summary or finding.detector,
            evidence=tuple(finding.evidence),
            detail={**dict(finding.detail), "at": finding.at.isoformat()},
            state="open",
        )

    def _count(self, raised: Sequence[Alert]) -> None:
        assert self._metrics is not None
        for alert in raised:
            self._metrics.inc(
                "tether_alerts_total", detector=alert.detector, severity=alert.severity
            )

    # ---- reading ------------------------------------------------------------------------

    def get(self, by: Caller, alert_id: str) -> Alert:
        """One alert; unknown, or another owner's, is :class:`NotFound`."""
        with self._guard(by, "alert.read"), self._store.read() as conn:
            return _alert(self._visible(conn, by, alert_id, lock=False))

    def list(
        self,
        by: Caller,
        *,
        state: str | None = None,
        severity: str | None = None,
        agent: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> builtins.list[Alert]:
        """Alerts newest first (at most ``limit``, those older than the alert ``after``),
        only those the caller may see."""
        if state is not None and state not in STATES:
            raise InvalidRequest(f"invalid state {state!r}: one of {', '.join(STATES)}")
        if severity is not None and severity not in SEVERITIES:
            raise InvalidRequest(f"invalid severity {severity!r}: one of {', '.join(SEVERITIES)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        query = select(alerts).order_by(alerts.c.created_at.desc(), alerts.c.id.desc())
        if state is not None:
            query = query.where(alerts.c.state == state)
        if severity is not None:
            query = query.where(alerts.c.severity == severity)
        if agent is not None:
            query = query.where(
                alerts.c.agent == self._registry.agent_id(self._registry.parse_ref(agent))
            )
        with self._guard(by, "alert.list"), self._store.read() as conn:
            if not by.is_admin:
                if by.email is None:  # nobody's owner: no alert to see
                    return []
                owned = conn.execute(select(agents.c.name).where(agents.c.owner == by.email))
                ids = [self._registry.agent_id(name) for name in owned.scalars()]
                query = query.where(or_(alerts.c.owner == by.email, alerts.c.agent.in_(ids)))
            if after is not None:
                mark = self._visible(conn, by, after, lock=False)
                query = query.where(
                    or_(
                        alerts.c.created_at < mark.created_at,
                        and_(alerts.c.created_at == mark.created_at, alerts.c.id < mark.id),
                    )
                )
            return [_alert(row) for row in conn.execute(query.limit(limit))]

    def open_counts(self) -> dict[str, int]:
        """Open alerts by severity, every severity named (the ``tether_alerts_open`` gauge)."""
        query = (
            select(alerts.c.severity, func.count())
            .where(alerts.c.state == "open")
            .group_by(alerts.c.severity)
        )
        with self._store.read() as conn:
            counts = {str(severity): int(n) for severity, n in conn.execute(query)}
        return {severity: counts.get(severity, 0) for severity in SEVERITIES}

    # ---- changes by people --------------------------------------------------------------

    def acknowledge(self, by: Caller, alert_id: str, reason: str = "") -> Alert:
        return self.transition(by, alert_id, "acknowledged", reason)

    def resolve(self, by: Caller, alert_id: str, reason: str) -> Alert:
        return self.transition(by, alert_id, "resolved", reason)

    def suppress(self, by: Caller, alert_id: str, reason: str) -> Alert:
        return self.transition(by, alert_id, "suppressed", reason)

    def transition(self, by: Caller, alert_id: str, to: str, reason: str = "") -> Alert:
        """Move the alert to ``to`` (acknowledged, resolved, suppressed) for ``by``; see
        the module docstring for the rules."""
        event = EVENTS.get(to)
        if event is None:
            raise InvalidRequest(f"invalid state {to!r}: one of {', '.join(EVENTS)}")
        reason = parse_text(reason, "reason").strip()
        if to != "acknowledged" and not reason:
            verb = "resolve" if to == "resolved" else "suppress"
            raise InvalidRequest(f"a reason is required to {verb} an alert (--reason TEXT)")
        with self._guard(by, event), self._store.write() as conn:
            row = self._visible(conn, by, alert_id, lock=True)
            if not by.is_admin and not by.owns(self._owner_now(conn, row.agent)):
                raise _Refused(
                    row.id, f"only the agent's current owner or an admin can mark it {to}"
                )
            if row.state not in _FROM[to]:
                raise IllegalTransition(
                    f"alert {row.id} is {row.state}: it cannot be {to}"
                    + (" again" if row.state == to else "")
                )
            if (
                to != "acknowledged"
                and not by.is_admin
                and (severity_rank(row.severity) >= _ADMIN_ONLY_RANK)
            ):
                raise _Refused(row.id, f"only an admin can mark a {row.severity} alert {to}")
            now = self._clock()
            changes = {"state": to, "state_by": by.subject, "state_reason": reason or None}
            conn.execute(
                update(alerts).where(alerts.c.id == row.id).values(state_at=now, **changes)
            )
            alert = _alert({**row._mapping, **changes, "state_at": now})
            self._log.append(conn, _change_entry(alert, event, by, row.state, reason))
            self._risk.recompute(conn, [alert.agent])
        return alert

    # ---- helpers ------------------------------------------------------------------------

    def _visible(self, conn: Connection, by: Caller, alert_id: str, *, lock: bool) -> Row[Any]:
        if not isinstance(alert_id, str) or _ID.fullmatch(alert_id) is None:
            raise _Hidden(str(alert_id)[:64], exists=False)
        query = select(alerts).where(alerts.c.id == alert_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise _Hidden(alert_id, exists=False)
        if by.is_admin or by.owns(row.owner) or by.owns(self._owner_now(conn, row.agent)):
            return row
        raise _Hidden(alert_id, exists=True)

    def _owner_now(self, conn: Connection, agent: str) -> str | None:
        """The current owner of the alert's agent (None: unowned, or no longer there)."""
        name = self._registry.parse_ref(agent)
        owner = conn.execute(select(agents.c.owner).where(agents.c.name == name)).scalar()
        return None if owner is None else str(owner)

    @contextmanager
    def _guard(self, by: Caller, what: str) -> Iterator[None]:
        """Turn a hidden alert into "not found" and a refused change into "forbidden",
        recording the refusal once the transaction is over."""
        try:
            yield
        except _Hidden as hidden:
            if hidden.exists:
                self._refusals.record(by.subject, "not the owner", what, subject=hidden.id)
            raise NotFound(f"no alert {hidden.id}") from None
        except _Refused as refused:
            self._refusals.record(by.subject, refused.reason, what, subject=refused.id)
            raise Forbidden(refused.reason) from None


class _Hidden(Exception):
    """An alert that does not exist, or that the caller may not know exists."""

    def __init__(self, alert_id: str, *, exists: bool) -> None:
        super().__init__(alert_id)
        self.id = alert_id
        self.exists = exists


class _Refused(Exception):
    """A visible alert the caller may not change so (refused once the transaction is over)."""

    def __init__(self, alert_id: str, reason: str) -> None:
        super().__init__(reason)
        self.id = alert_id
        self.reason = reason


def _row(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "created_at": alert.created_at,
        "detector": alert.detector,
        "severity": alert.severity,
        "agent": alert.agent,
        "owner": alert.owner,
        "chain": list(alert.chain),
        "summary": alert.summary,
        "evidence": list(alert.evidence),
        "detail": dict(alert.detail),
        "state": alert.state,
        "state_by": None,
        "state_reason": None,
        "state_at": None,
        "actions": [_action_dict(a) for a in alert.actions],
    }


def _action_dict(action: AlertAction) -> dict[str, str]:
    return {
        "action": action.action,
        "at": action.at.isoformat(),
        "outcome": action.outcome,
        "detail": action.detail,
    }


def _alert(found: Row[Any] | dict[str, Any]) -> Alert:
    row: Callable[[str], Any] = (found._mapping if isinstance(found, Row) else found).__getitem__
    return Alert(
        id=row("id"),
        created_at=row("created_at"),
        detector=row("detector"),
        severity=row("severity"),
        agent=row("agent"),
        owner=row("owner"),
        chain=tuple(row("chain")),
        summary=row("summary"),
        evidence=tuple(int(seq) for seq in row("evidence")),
        detail=dict(row("detail")),
        state=row("state"),
        state_by=row("state_by"),
        state_reason=row("state_reason"),
        state_at=row("state_at"),
        actions=tuple(
            AlertAction(a["action"], datetime.fromisoformat(a["at"]), a["outcome"], a["detail"])
            for a in row("actions")
        ),
    )


def _facts(alert: Alert) -> dict[str, Any]:
    """What every alert event carries, so each one alone makes an OCSF finding."""
    return {
        "alert": alert.id,
        "detector": alert.detector,
        "severity": alert.severity,
        "summary": alert.summary,
        "evidence": list(alert.evidence),
        "owner": alert.owner,
        "created_at": alert.created_at.isoformat(),
        "state": alert.state,
    }


def _raised_entry(alert: Alert) -> Entry:
    return Entry.of(
        "alert.raised",
        actor=SYSTEM_ACTOR,
        subject=alert.agent,
        chain=alert.chain,
        resource=alert.agent,
        reason=alert.summary,
        detail={**_facts(alert), "detail": dict(alert.detail)},
    )


def _change_entry(alert: Alert, event: str, by: Caller, before: str, reason: str) -> Entry:
    return Entry.of(
        event,
        actor=by.subject,
        subject=alert.agent,
        resource=alert.agent,
        reason=reason,
        detail={**_facts(alert), "from": before},
    )
