"""Alert events as OCSF 1.8.0 Detection Finding (2004), the attributes of the class that
:mod:`tether.audit.ocsf` adds to the common ones.

Each alert event (:mod:`tether.detect.alerts`) carries the whole alert in its detail, so
each one alone is a finding:

* ``alert.raised`` → activity 1 Create, status 1 New: the detector raised it;
* ``alert.acknowledged`` → 2 Update, 2 In Progress: a person is looking;
* ``alert.resolved`` → 3 Close, 4 Resolved: a person closed it (the reason in
  ``status_detail``);
* ``alert.suppressed`` → 3 Close, 3 Suppressed: a person closed it as noise;
* ``alert`` (an alert of another source) → 1 Create, 1 New.

``finding_info``: ``uid`` the alert id (the event's seq for a bare ``alert``), ``title``
its one-line summary, ``types`` and ``analytic`` its detector (a behavioural analytic),
``related_events`` the evidence (the audit seqs that triggered it, for ``tether audit
explain``), ``created_time`` when it was raised and, for a change, ``modified_time``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from tether.audit.record import parse_time

__all__ = ["ALERT_EVENTS", "STATUSES", "finding"]

# event type -> (activity_id, status_id)
ALERT_EVENTS: Final = {
    "alert": (1, 1),
    "alert.raised": (1, 1),
    "alert.acknowledged": (2, 2),
    "alert.resolved": (3, 4),
    "alert.suppressed": (3, 3),
}
STATUSES: Final = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}
_MAX_RELATED = 1000  # evidence listed at the most (the rest stays in unmapped)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def finding(event: dict[str, Any], detail: dict[str, Any]) -> dict[str, Any]:
    """The Detection Finding attributes of an alert event (without actor and resources)."""
    kind = event.get("type")
    time = _ms(parse_time(event["time"]))
    alert = detail.get("alert")
    title = detail.get("summary", detail.get("title"))
    info: dict[str, Any] = {
        "uid": alert if isinstance(alert, str) and alert else str(event.get("seq")),
        "title": title if isinstance(title, str) and title else "Tether alert",
        "created_time": _created(detail, time),
    }
    if kind not in ("alert.raised", "alert"):  # a change: when it was made
        info["modified_time"] = time
    detector = detail.get("detector")
    if isinstance(detector, str) and detector:
        info["types"] = [detector]
        info["analytic"] = {"name": detector, "type_id": 2, "type": "Behavioral"}
    evidence = detail.get("evidence")
    if isinstance(evidence, list):
        seqs = [s for s in evidence if isinstance(s, int) and not isinstance(s, bool)]
        if seqs:
            info["related_events"] = [{"uid": str(seq)} for seq in seqs[:_MAX_RELATED]]
            info["related_events_count"] = len(seqs)
    reasons = [str(reason) for reason in event.get("reasons") or []]
    if reasons:
        info["desc"] = "; ".join(reasons)
    return {"finding_info": info}


def _created(detail: dict[str, Any], default: int) -> int:
    created = detail.get("created_at")
    if isinstance(created, str):
        try:
            return _ms(datetime.fromisoformat(created))
        except ValueError:
            pass
    return default


def _ms(at: datetime) -> int:
    return ((at if at.tzinfo else at.replace(tzinfo=UTC)) - _EPOCH) // timedelta(milliseconds=1)
