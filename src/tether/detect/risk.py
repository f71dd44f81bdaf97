"""Each agent's risk score (0-100) from its alerts, and the ``risk`` decision input.

**The score.** An agent's score comes from its *counted* alerts, those open or
acknowledged (resolved and suppressed ones do not count; acknowledging keeps an alert
counted, so an owner cannot lower their agent's risk by acknowledging it): the weight of
the most severe one -- low 10, medium 40, high 70, critical 90 -- plus 5 for every other
counted alert, capped at 100; no counted alert is 0 (:func:`risk_score`). So one high
alert is 70, a high and two lows 80, a critical and two others 100. Adding an alert never
lowers a score and taking one away never raises it.

**Where it lives.** :meth:`RiskScores.recompute` writes the scores of the agents whose
alerts changed into ``detect_risk``, inside the caller's write transaction (the alert and
its effect on the score commit together). Each write takes the next store-wide revision
``rev`` under a lock held until commit (a transaction-level advisory lock on PostgreSQL;
SQLite serialises writers already), so revisions commit in order and a reader that has
seen revision *n* misses nothing by asking only for ``rev > n``.

**Reading it on the hot path.** :meth:`RiskScores.score` answers from a map in this
process, refreshed with the rows whose ``rev`` is above the last one seen at most every
``decision_staleness_ms`` (the bound also used by the state epoch), and at once in the
process that wrote them (after its commit). A refresh that cannot read the store raises,
and the decision that needed it is a deny (fail closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, func, insert, select, update

from tether.model import agent_id_prefix
from tether.policy.decision import AccessRequest
from tether.principals import Principal, parse_principal
from tether.services import Services
from tether.store import Store, alerts, detect_risk

__all__ = ["COUNTED", "WEIGHTS", "RiskInput", "RiskScores", "risk_score"]

WEIGHTS: Final = {"low": 10, "medium": 40, "high": 70, "critical": 90}
COUNTED: Final = ("open", "acknowledged")  # the states whose alerts make up the score
_EACH_OTHER = 5
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':tether-detect-risk'))"


def risk_score(severities: Iterable[str]) -> int:
    """The score of an agent whose counted alerts have these severities (see the module
    docstring); an unknown severity weighs as much as a critical one (fail closed)."""
    weights = sorted((WEIGHTS.get(s, WEIGHTS["critical"]) for s in severities), reverse=True)
    if not weights:
        return 0
    return min(100, weights[0] + _EACH_OTHER * (len(weights) - 1))


class RiskScores:
    """The agents' risk scores: written with the alerts, read from a map in the process."""

    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._clock = services.clock
        self._staleness = services.settings.decision_staleness_ms / 1000
        self._prefix = agent_id_prefix(services.settings.trust_domain)
        self.trust_domain = services.settings.trust_domain
        self._scores: dict[str, int] = {}  # by agent name
        self._rev = 0  # the highest revision read
        self._checked = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    # ---- writing ------------------------------------------------------------------------

    def recompute(self, conn: Connection, agents: Iterable[str]) -> dict[str, int]:
        """Recompute and store the scores of ``agents`` (SPIFFE IDs) from their alerts in
        the caller's write transaction; returns them. This process reads them at once
        after the commit, the others within the staleness bound."""
        wanted = sorted(set(agents))
        if not wanted:
            return {}
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(_LOCK_SQL)  # held until commit: revisions commit in order
        rev = int(conn.execute(select(func.coalesce(func.max(detect_risk.c.rev), 0))).scalar_one())
        found: dict[str, list[str]] = {agent: [] for agent in wanted}
        rows = conn.execute(
            select(alerts.c.agent, alerts.c.severity).where(
                alerts.c.agent.in_(wanted), alerts.c.state.in_(COUNTED)
            )
        )
        for agent, severity in rows:
            found[agent].append(severity)
        now = self._clock()
        scores = {agent: risk_score(found[agent]) for agent in wanted}
        for offset, agent in enumerate(wanted, start=1):
            values = {"score": scores[agent], "rev": rev + offset, "updated_at": now}
            changed = conn.execute(
                update(detect_risk).where(detect_risk.c.agent == agent).values(**values)
            ).rowcount
            if not changed:
                conn.execute(insert(detect_risk).values(agent=agent, **values))
        Store.after_commit(conn, self.invalidate)
        return scores

    def invalidate(self) -> None:
        """The next :meth:`score` reads what changed in the store first."""
        with self._lock:
            self._generation += 1
            self._checked = float("-inf")

    # ---- reading ------------------------------------------------------------------------

    def score(self, agent: str) -> int:
        """The agent's score (a name or SPIFFE ID; 0 without counted alerts), as of at
        most ``decision_staleness_ms`` ago."""
        self._refresh()
        return self._scores.get(agent.removeprefix(self._prefix), 0)

    def scores(self, names: Iterable[str]) -> tuple[int, ...]:
        """The scores of agents named by their bare names, from one view of the map."""
        self._refresh()
        current = self._scores
        return tuple(current.get(name, 0) for name in names)

    def _refresh(self) -> None:
        started = time.monotonic()
        if started - self._checked < self._staleness:
            return
        with self._lock:
            generation, since = self._generation, self._rev
        with self._store.read() as conn:
            rows = conn.execute(
                select(detect_risk.c.agent, detect_risk.c.score, detect_risk.c.rev).where(
                    detect_risk.c.rev > since
                )
            ).all()
        with self._lock:
            if rows:
                merged = dict(self._scores)  # swapped whole: readers never see it half-made
                for agent, score, rev in rows:
                    merged[str(agent).removeprefix(self._prefix)] = int(score)
                    self._rev = max(self._rev, int(rev))
                self._scores = merged
            if generation == self._generation:
                self._checked = started


@dataclass
class _Seen:
    request: AccessRequest
    now: datetime
    scores: dict[str, int]


class RiskInput:
    """``risk``: the highest risk score of the agents of the request's chain (people 0),
    for guardrails such as ``forbid (principal, action, resource) when { context.risk >=
    70 && resource.path like "payments/*" };``.

    Its cache key part is the tuple of those agents' own scores, not a global version:
    a decision is cached per request *and* the current scores of the agents it names, so
    a changed score for agent X re-decides only the requests whose chain holds X. Risk
    changes never bump the state epoch: alerts an attacker provokes (cheaply, by
    misbehaving on purpose) cannot force every process to rebuild its compiled state, nor
    empty the decision caches of unrelated agents.

    The value Cedar sees is the one the key was made from: the scores read for the key
    are kept (per thread) for the evaluation of the same request, so a refresh between
    the two can never cache a decision under another score than the one it was made on.
    """

    name = "risk"
    cedar_type = "Long"

    def __init__(self, scores: RiskScores) -> None:
        self._scores = scores
        self._seen = threading.local()

    def key(self, request: AccessRequest, now: datetime) -> Hashable | None:
        names = self._agents(request)
        if not names:
            return None  # a person alone: always 0
        scores = self._scores.scores(names)
        self._seen.last = _Seen(request, now, dict(zip(names, scores, strict=True)))
        return scores

    def value(
        self, request: AccessRequest, identities: tuple[Principal, ...], now: datetime
    ) -> int:
        names = [p.id for p in identities if p.kind == "agent"]
        seen: _Seen | None = getattr(self._seen, "last", None)
        if seen is not None and seen.request == request and seen.now == now:
            return max((seen.scores.get(name, 0) for name in names), default=0)
        return max(self._scores.scores(names), default=0)

    def _agents(self, request: AccessRequest) -> tuple[str, ...]:
        td = self._scores.trust_domain
        refs = (*request.chain, request.principal)
        found = (parse_principal(ref, td) for ref in refs)
        return tuple(dict.fromkeys(p.id for p in found if p.kind == "agent"))
