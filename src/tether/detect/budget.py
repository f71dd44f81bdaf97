"""The alert budget: at most ``[detect] max_alerts_per_agent_hour`` alerts about one agent
in any hour.

An agent with broad grants can touch thousands of things it never touched before; without
a bound, each would be an alert, an audit event and a SIEM finding. The budget holds back
only low and medium findings that the response policy answers with ``alert``: a high or
critical finding, or one the policy acts on (suspend, kill), is always raised, so spending
the budget on cheap novelties never buys an agent out of its response. Past the budget, the
findings about that agent are not raised one by one: one ``alert_budget`` alert (high) per
agent and hour says how many were held back, from which detectors, with their evidence
(the first 50 seqs), and a ``detect.throttled`` event records every batch's held-back
count, so nothing is dropped silently. What was held back is still learned (the baseline
moved on). Higher severities are raised first when a batch must choose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from tether.detect.model import Finding, severity_rank
from tether.detect.stats import EVIDENCE_CAP
from tether.store import alerts

__all__ = ["BUDGET", "Budgeted", "budget", "held_evidence"]

BUDGET = "alert_budget"  # the detector name of the budget's own alert
_HOUR = timedelta(hours=1)


class Budgeted:
    """What :func:`budget` decided for one batch."""

    def __init__(self) -> None:
        self.raised: list[Finding] = []  # within the budget (and the budget's own alerts)
        self.held: dict[str, list[Finding]] = {}  # agent -> held back


def budget(
    conn: Connection,
    findings: Sequence[Finding],
    limit: int,
    now: datetime,
    exempt: Callable[[Finding], bool] = lambda _finding: False,
) -> Budgeted:
    """Split ``findings`` into those raised and those held back, by the alerts each agent
    already has in the hour before ``now`` (read in the caller's transaction). ``exempt``
    findings are always raised (the runner exempts high and critical ones and those the
    response policy acts on: an agent must not buy its way out of a suspension by first
    spending its budget on cheap novelties)."""
    out = Budgeted()
    by_agent: dict[str, list[Finding]] = {}
    for finding in findings:
        if exempt(finding):
            out.raised.append(finding)
            continue
        by_agent.setdefault(finding.agent, []).append(finding)
    for agent, found in by_agent.items():
        recent = _recent(conn, agent, now)
        room = max(0, limit - recent[0])
        ranked = sorted(found, key=lambda f: -severity_rank(f.severity))  # stable
        out.raised.extend(ranked[:room])
        held = ranked[room:]
        if not held:
            continue
        out.held[agent] = held
        if not recent[1]:  # one budget alert per agent and hour
            out.raised.append(_budget_alert(agent, held, limit, now))
    return out


def held_evidence(held: Sequence[Finding]) -> list[int]:
    """The first :data:`~tether.detect.stats.EVIDENCE_CAP` event seqs of ``held``."""
    return sorted({seq for f in held for seq in f.evidence})[:EVIDENCE_CAP]


def _recent(conn: Connection, agent: str, now: datetime) -> tuple[int, int]:
    """(alerts about ``agent`` in the last hour, of which budget alerts)."""
    since = now - _HOUR
    rows = conn.execute(
        select(alerts.c.detector, func.count())
        .where(alerts.c.agent == agent, alerts.c.created_at > since)
        .group_by(alerts.c.detector)
    ).all()
    counts = {str(detector): int(n) for detector, n in rows}
    return sum(counts.values()), counts.get(BUDGET, 0)


def _budget_alert(agent: str, held: list[Finding], limit: int, now: datetime) -> Finding:
    detectors = Counter(f.detector for f in held)
    evidence = held_evidence(held)
    names = ", ".join(f"{name}: {n}" for name, n in sorted(detectors.items()))
    last = held[-1]
    return Finding(
        detector=BUDGET,
        severity="high",
        agent=agent,
        chain=last.chain,
        summary=(
            f"{agent.rsplit('/', 1)[-1]}: more than {limit} alerts in an hour; "
            f"{len(held)} more held back ({names})"
        ),
        evidence=tuple(evidence),
        at=now,
        detail={"limit": limit, "held": len(held), "detectors": dict(detectors)},
    )
