"""Response by policy: what Tether does by itself when an alert is raised.

``[detect.response]`` in ``tether.toml`` maps a detector name or a severity (or
``default``) to an action; a detector's own entry wins over its severity's
(:meth:`~tether.config.DetectSettings.response_for`):

* ``alert`` (the default): nothing more than the alert;
* ``suspend``: the agent is suspended by ``system:detect``, which is an *admin hold*: its
  owner cannot lift it alone (an admin resumes it);
* ``kill``: the kill switch, on the agent alone; ``kill-cascade``: and everything it
  spawned.

Every action names the alert in its reason (``alert alt_...: summary``), is recorded by
the registry or the kill switch with actor ``system:detect``, and is listed on the alert.

**Planned, then taken.** The runner plans actions in the transaction that raises the
alerts (a ``pending`` row in ``detect_actions``); they are taken after the commit and
marked ``done`` or ``failed``. A process that dies in between leaves them pending, and the
next detector takes them. An action that finds nothing to do (the agent is already
suspended, or dead: typically the second alert of one burst) is marked ``unneeded``.

**Circuit breaker.** At most ``max_actions_per_hour`` actions are taken in any hour; past
that, actions are ``skipped`` (the alert stays, the agent keeps running) and one
``response_breaker`` alert (high) says the breaker tripped, once per hour. So a flood of
provoked alerts cannot make Tether stop the whole estate by itself.

The breaker counts what *stopped something or tried to* (``done``, ``failed``), never an
``unneeded`` action: otherwise one hijacked agent could raise a burst of alerts (a dozen
new tools in a minute), be suspended by the first, and use up the hour's actions with the
redundant rest, leaving the next agent's attack unanswered. The breaker can still be
tripped on purpose by an attacker who holds more agents than ``max_actions_per_hour``
(each one must be stopped for real); its alert is the signal that automatic response is
off for the hour, so route ``response_breaker`` to a person.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from tether.callers import Caller
from tether.config import DetectSettings
from tether.detect.alerts import Alerts
from tether.detect.model import SYSTEM_ACTOR, Alert, AlertAction, Finding
from tether.errors import Conflict, IllegalTransition, InvalidRequest, NotFound, TetherError
from tether.killswitch import KillSwitch
from tether.registry import Registry
from tether.services import Services
from tether.store import alerts as alerts_table
from tether.store import detect_actions

__all__ = ["BREAKER", "Responder"]

log = logging.getLogger("tether.detect")

BREAKER = "response_breaker"  # the detector name of the breaker's own alert
_HOUR = timedelta(hours=1)
_TAKEN = ("done", "failed")  # what counts against the breaker (never "unneeded")


class Responder:
    """Plans and takes the automatic actions of the response policy."""

    def __init__(
        self,
        services: Services,
        registry: Registry,
        killswitch: KillSwitch,
        alerts: Alerts,
        settings: DetectSettings | None = None,
    ) -> None:
        self._store = services.store
        self._clock = services.clock
        self._settings = settings or services.settings.detect
        self._registry = registry
        self._killswitch = killswitch
        self._alerts = alerts
        self._by = Caller.system("detect")
        assert self._by.subject == SYSTEM_ACTOR
        self._maybe_pending = True  # until a look finds none; set by plan() and recheck()

    def recheck(self) -> None:
        """Look for pending actions at the next :meth:`run_pending` (after a start or a
        take-over: a process that died may have left some)."""
        self._maybe_pending = True

    def plan(self, conn: Connection, raised: Sequence[Alert]) -> None:
        """Queue the actions the policy asks for on ``raised`` (in the caller's
        transaction, so they commit with the alerts or not at all)."""
        now = self._clock()
        for alert in raised:
            if alert.detector == BREAKER:
                continue  # the breaker's alert never acts
            action = self._settings.response_for(alert.detector, alert.severity)
            if action == "alert":
                continue
            conn.execute(
                insert(detect_actions).values(
                    alert_id=alert.id, action=action, at=now, outcome="pending", detail=""
                )
            )
            self._maybe_pending = True

    def run_pending(self) -> int:
        """Take the pending actions, oldest first; returns how many were taken."""
        if not self._maybe_pending:
            return 0
        with self._store.read() as conn:
            pending = conn.execute(
                select(
                    detect_actions.c.id,
                    detect_actions.c.alert_id,
                    detect_actions.c.action,
                    alerts_table.c.agent,
                    alerts_table.c.summary,
                )
                .join(alerts_table, alerts_table.c.id == detect_actions.c.alert_id)
                .where(detect_actions.c.outcome == "pending")
                .order_by(detect_actions.c.id)
            ).all()
        taken = 0
        for row in pending:
            if self._breaker_open():
                self._skip(row.id, row.alert_id, row.action, row.agent)
                continue
            outcome, detail = self._take(
                row.action, row.agent, f"alert {row.alert_id}: {row.summary}"
            )
            self._settle(row.id, row.alert_id, row.action, outcome, detail)
            taken += 1
        self._maybe_pending = False  # (an exception above leaves it set: looked at again)
        return taken

    def _take(self, action: str, agent: str, reason: str) -> tuple[str, str]:
        try:
            if action == "suspend":
                self._registry.suspend(self._by, agent, reason=reason)
                return "done", "suspended (an admin hold)"
            report = self._killswitch.kill(
                self._by, agent, cascade=action == "kill-cascade", reason=reason
            )
            killed = len(report.agents_killed)
            failures = "; ".join(report.failures)
            return "done", f"killed {killed} agent(s)" + (
                f"; to retry: {failures}" if failures else ""
            )
        except (IllegalTransition, Conflict, InvalidRequest) as exc:  # already stopped
            return "unneeded", f"nothing to do: {exc.description}"
        except NotFound as exc:
            return "failed", exc.description
        except TetherError as exc:
            log.warning("automatic %s of %s failed: %s", action, agent, exc.description)
            return "failed", exc.description

    def _settle(self, row_id: int, alert_id: str, action: str, outcome: str, detail: str) -> None:
        now = self._clock()
        with self._store.write() as conn:
            conn.execute(
                update(detect_actions)
                .where(detect_actions.c.id == row_id)
                .values(outcome=outcome, detail=detail[:500], at=now)
            )
            self._alerts.add_action(conn, alert_id, AlertAction(action, now, outcome, detail[:500]))

    # ---- the breaker -------------------------------------------------------------------

    def _taken_since(self, since: datetime) -> int:
        with self._store.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(detect_actions)
                    .where(detect_actions.c.outcome.in_(_TAKEN), detect_actions.c.at > since)
                ).scalar_one()
            )

    def _breaker_open(self) -> bool:
        return self._taken_since(self._clock() - _HOUR) >= self._settings.max_actions_per_hour

    def _skip(self, row_id: int, alert_id: str, action: str, agent: str) -> None:
        limit = self._settings.max_actions_per_hour
        detail = f"circuit breaker open: {limit} automatic actions in the last hour"
        now = self._clock()
        with self._store.write() as conn:
            conn.execute(
                update(detect_actions)
                .where(detect_actions.c.id == row_id)
                .values(outcome="skipped", detail=detail, at=now)
            )
            self._alerts.add_action(conn, alert_id, AlertAction(action, now, "skipped", detail))
            tripped = conn.execute(
                select(func.count())
                .select_from(alerts_table)
                .where(alerts_table.c.detector == BREAKER, alerts_table.c.created_at > now - _HOUR)
            ).scalar_one()
            if not tripped:
                self._alerts.raise_all(
                    conn,
                    [
                        Finding(
                            detector=BREAKER,
                            severity="high",
                            agent=agent,
                            chain=(agent,),
                            summary=(
                                f"automatic responses stopped: the circuit breaker tripped "
                                f"after {limit} actions in an hour ({action} of {agent} skipped)"
                            ),
                            evidence=(),
                            at=now,
                            detail={"skipped_alert": alert_id, "limit": limit},
                        )
                    ],
                )
