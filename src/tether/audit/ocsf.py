"""Audit events as OCSF 1.8.0 events (the ``ocsf`` export format).

The class each event type becomes:

* ``decision``, ``tool.call``, ``tool.result``, ``access.refused`` → API Activity (6003).
  ``api.operation`` is the action (the refused operation for ``access.refused``); the
  activity is Create/Read/Update/Delete from the verb in it (or in the tool's name:
  ``github/create_issue`` is a Create), else Other named by the operation.
* ``token.issued``, ``token.refused`` → Authentication (3002), Service Ticket Request over
  OAuth 2.0 (a token for an audience, failed when refused); ``token.revoked`` → Logoff.
* ``token.exchanged`` → Authorize Session (3003), Assign Privileges: the delegated scope.
* ``agent.registered`` / ``resumed`` / ``suspended`` / ``expired`` / ``retired`` /
  ``killed`` / ``key_rotated`` and ``grant.added`` / ``grant.revoked`` → Account Change
  (3001): an agent is a service account, a grant a policy attached to it.
* ``agent.updated`` / ``owner_changed`` / ``unowned``, ``policy.*``, ``keys.rotated`` →
  Entity Management (3004).
* ``alert.raised`` / ``acknowledged`` / ``resolved`` / ``suppressed`` (and ``alert``) →
  Detection Finding (2004), its state as ``status_id`` (:mod:`tether.audit.ocsf_finding`).
* any other type → API Activity when it names an action and a resource, else Entity
  Management (Other).

The delegation chain becomes ``actor``: ``actor.user`` is the human at its head and
``actor.app_uid`` / ``app_name`` the agent that acted. A decision's outcome is
``status_id`` plus ``action_id`` / ``disposition_id``, which OCSF 1.8.0 only has in the
``security_control`` profile, so such events name it in ``metadata.profiles`` (and
``host``, which the compiled schema ties ``actor`` to). What OCSF has no attribute for
(the whole chain, reasons, detail, seq, subject, action, resource) is kept as it is in
``unmapped.tether``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from tether.audit.ocsf_finding import ALERT_EVENTS, STATUSES, finding
from tether.audit.record import parse_time

__all__ = ["OCSF_VERSION", "epoch_ms", "severity_id", "summary", "to_ocsf"]

OCSF_VERSION = "1.8.0"

_IAM = "Identity & Access Management"
# class_uid -> (class name, category_uid, category name)
_CLASSES: dict[int, tuple[str, int, str]] = {
    2004: ("Detection Finding", 2, "Findings"),
    3001: ("Account Change", 3, _IAM),
    3002: ("Authentication", 3, _IAM),
    3003: ("Authorize Session", 3, _IAM),
    3004: ("Entity Management", 3, _IAM),
    6003: ("API Activity", 6, "Application Activity"),
}
# The captions of the activities used; 99 (Other) is named by Tether's own word for it.
_ACTIVITIES: dict[int, dict[int, str]] = {
    2004: {1: "Create", 2: "Update", 3: "Close"},
    3001: {
        1: "Create",
        2: "Enable",
        5: "Disable",
        6: "Delete",
        7: "Attach Policy",
        8: "Detach Policy",
        9: "Lock",
    },
    3002: {2: "Logoff", 4: "Service Ticket Request"},
    3003: {1: "Assign Privileges"},
    3004: {1: "Create", 3: "Update", 4: "Delete"},
    6003: {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete"},
}
_ACCOUNT_CHANGES = {
    "agent.registered": 1,
    "agent.resumed": 2,
    "agent.suspended": 5,
    "agent.expired": 5,
    "agent.retired": 6,
    "agent.killed": 9,
    "agent.key_rotated": 99,
    "grant.added": 7,
    "grant.revoked": 8,
}
_ENTITY_CHANGES = {
    "agent.updated": 3,
    "agent.owner_changed": 3,
    "agent.unowned": 3,
    "policy.added": 1,
    "policy.removed": 4,
    "keys.rotated": 3,
}
_API_TYPES = frozenset({"decision", "tool.call", "tool.result", "access.refused"})
_VERBS = {
    **dict.fromkeys(("create", "add", "insert", "new", "register", "post"), 1),
    **dict.fromkeys(("read", "get", "list", "search", "query", "fetch", "describe"), 2),
    **dict.fromkeys(("view", "show", "find", "lookup", "download"), 2),
    **dict.fromkeys(("update", "patch", "put", "set", "edit", "modify", "change"), 3),
    **dict.fromkeys(("rename", "rotate", "write", "move", "upload"), 3),
    **dict.fromkeys(("delete", "remove", "revoke", "destroy", "drop", "purge", "erase"), 4),
}
_SEVERITIES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
_ALERT_SEVERITIES = {
    "info": 1,
    "informational": 1,
    "low": 2,
    "medium": 3,
    "high": 4,
    "critical": 5,
    "fatal": 5,
}
_FAILED_OUTCOMES = frozenset({"error", "failure", "failed", "denied", "blocked", "timeout"})
# OCSF's email_t pattern: only addresses matching it go in user.email_addr.
_EMAIL = re.compile(r"[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONG_MAX = 2**63 - 1


def to_ocsf(event: dict[str, Any], *, version: str) -> dict[str, Any]:
    """The OCSF 1.8.0 event for the audit event body ``event`` (``version`` is Tether's)."""
    kind = _text(event.get("type"))
    decision = event.get("decision")
    class_uid, activity_id, fields = _mapping(event, kind)
    class_name, category_uid, category_name = _CLASSES[class_uid]
    caption = _ACTIVITIES[class_uid].get(activity_id, "Other")
    severity = severity_id(event)
    profiles: list[str] = []
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": _other_name(event, kind) if activity_id == 99 else caption,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {caption}",
        "severity_id": severity,
        "severity": _SEVERITIES[severity],
        "time": epoch_ms(event["time"]),
        "message": summary(event),
        "metadata": _metadata(event, kind, version),
        **fields,
    }
    if class_uid == 2004:
        status = ALERT_EVENTS[kind][1]
        out["status_id"], out["status"] = status, STATUSES[status]
        out["is_alert"] = True
        profiles.append("security_control")
    elif decision == "deny" or kind.endswith(".refused") or _tool_failed(event, kind):
        out["status_id"], out["status"] = 2, "Failure"
    else:
        out["status_id"], out["status"] = 1, "Success"
    reasons = [_text(reason) for reason in event.get("reasons") or []]
    if reasons:
        out["status_detail"] = "; ".join(reasons)
    if decision in ("allow", "deny"):
        allowed = decision == "allow"
        out["action_id"], out["action"] = (1, "Allowed") if allowed else (2, "Denied")
        out["disposition_id"], out["disposition"] = (1, "Allowed") if allowed else (2, "Blocked")
        profiles.append("security_control")
    if "actor" in out:
        profiles.append("host")
    out["metadata"]["profiles"] = sorted(set(profiles))
    out["unmapped"] = {"tether": _unmapped(event)}
    return out


def summary(event: dict[str, Any]) -> str:
    """One line: ``deny tools/call on github/create_issue by user:alice@… → spiffe://…``;
    for an alert event, ``alert.raised on spiffe://…: <summary> (by system:detect)``."""
    if _text(event.get("type")) in ALERT_EVENTS:  # the chain is the agent's, not the actor's
        said = _text(_detail(event).get("summary"))
        text = f"{_text(event.get('type'))} on {_text(event.get('resource'))}"
        text += f": {said}" if said else ""
        return _LINE_BREAKS.sub(" ", f"{text} (by {_performer(event)})")
    chain = [_text(p) for p in event.get("chain") or []]
    words = [_text(event.get("decision")), _text(event.get("action") or event.get("type"))]
    text = " ".join(word for word in words if word)
    if event.get("resource") is not None:
        text += f" on {_text(event['resource'])}"
    text += f" by {' → '.join(chain) or _performer(event)}"
    return _LINE_BREAKS.sub(" ", text)


def severity_id(event: dict[str, Any]) -> int:
    """OCSF severity: an alert's own (High if it names none), High for a kill,
    Medium for a deny or a refusal, Informational for the rest."""
    kind = _text(event.get("type"))
    if kind in ALERT_EVENTS:
        given = _detail(event).get("severity")
        if isinstance(given, str):
            return _ALERT_SEVERITIES.get(given.strip().lower(), 4)
        if isinstance(given, int) and not isinstance(given, bool) and 1 <= given <= 5:
            return given
        return 4
    if kind in ("agent.killed", "kill.completed"):
        return 4
    if event.get("decision") == "deny" or kind.endswith(".refused"):
        return 3
    return 1


def epoch_ms(time: str) -> int:
    """Milliseconds since the epoch of an event time (``%Y-%m-%dT%H:%M:%S.%fZ``)."""
    return (parse_time(time) - _EPOCH) // timedelta(milliseconds=1)


# ---- per class -----------------------------------------------------------------------


def _mapping(event: dict[str, Any], kind: str) -> tuple[int, int, dict[str, Any]]:
    """(class_uid, activity_id, class-specific attributes) for the event."""
    detail = _detail(event)
    actor = _actor(event)
    target = _text(event.get("subject") or event.get("resource"))
    subject = target or _performer(event)
    fields: dict[str, Any]
    if kind in ALERT_EVENTS:
        fields = {"actor": actor, **finding(event, detail)}
        if event.get("resource") is not None:
            fields["resources"] = [_target(event["resource"])]
        return 2004, ALERT_EVENTS[kind][0], fields
    if kind in ("token.issued", "token.refused", "token.revoked"):
        activity = 2 if kind == "token.revoked" else 4
        return 3002, activity, _authentication(event, detail, actor)
    if kind == "token.exchanged":
        fields = {"actor": actor, "user": _user(subject), "privileges": _scope(detail)}
        return 3003, 1, fields | _session(detail)
    if kind in _ACCOUNT_CHANGES:
        fields = {"actor": actor, "user": _user(subject)}
        policy = _grant_policy(detail) if kind.startswith("grant.") else None
        if policy is not None:
            fields["policies"] = [policy]
        return 3001, _ACCOUNT_CHANGES[kind], fields
    if kind in _ENTITY_CHANGES:
        activity = _ENTITY_CHANGES[kind]
    elif kind in _API_TYPES or (event.get("action") and event.get("resource") is not None):
        return _api_activity(event, kind, detail, actor)
    else:
        activity = 99
    return 3004, activity, {"actor": actor, "entity": _entity(target or kind or "unknown", kind)}


def _api_activity(
    event: dict[str, Any], kind: str, detail: dict[str, Any], actor: dict[str, Any]
) -> tuple[int, int, dict[str, Any]]:
    operation = _operation(event, kind)
    resource = event.get("resource")
    api: dict[str, Any] = {"operation": operation}
    if kind.startswith("tool.") and isinstance(resource, str) and "/" in resource:
        api["service"] = {"name": resource.split("/", 1)[0]}
    if event.get("request_id") is not None:
        api["request"] = {"uid": _text(event["request_id"])}
    fields: dict[str, Any] = {
        "actor": actor,
        "api": api,
        "src_endpoint": {"uid": _performer(event)},
    }
    if resource is not None:
        fields["resources"] = [_target(resource)]
    latency = detail.get("latency_ms")
    if _is_number(latency) and math.isfinite(latency) and 0 <= latency <= _LONG_MAX:
        fields["duration"] = round(latency)
    name = _text(resource).rsplit("/", 1)[-1]
    activity = _crud(operation) or _crud(name) or (99 if operation else 0)
    return 6003, activity, fields


def _authentication(
    event: dict[str, Any], detail: dict[str, Any], actor: dict[str, Any]
) -> dict[str, Any]:
    who = event.get("subject") or detail.get("client_id") or _performer(event)
    fields: dict[str, Any] = {
        "actor": actor,
        "user": _user(_text(who)),
        "auth_protocol_id": 6,
        "auth_protocol": "OAUTH 2.0",
        "service": {"name": _words(detail.get("aud")) or "Tether"},
    }
    if detail.get("error") is not None:
        fields["status_code"] = _text(detail["error"])
    return fields | _session(detail)


def _entity(uid: str, kind: str) -> dict[str, Any]:
    """The managed entity an Entity Management event is about."""
    if kind.startswith("agent."):
        return {"uid": uid, "name": _short(uid), "type_id": 2, "type": "User", "user": _user(uid)}
    if kind.startswith("policy."):
        return {"uid": uid, "name": uid.removeprefix("policy:"), "type_id": 5, "type": "Policy"}
    if kind == "keys.rotated":
        return {"uid": uid, "name": uid.removeprefix("kid:"), "type_id": 99, "type": "Signing Key"}
    return {"uid": uid}


def _grant_policy(detail: dict[str, Any]) -> dict[str, Any] | None:
    """A grant as the OCSF policy attached (or detached): its id, and what it allows."""
    uid = detail.get("id", detail.get("grant"))
    if uid is None:
        return None
    policy: dict[str, Any] = {"uid": _text(uid), "type": "Tether grant"}
    action, resource = detail.get("action"), detail.get("resource")
    if isinstance(action, str) and isinstance(resource, str):
        policy["name"] = f"{action} on {resource}"
    return policy


def _session(detail: dict[str, Any]) -> dict[str, Any]:
    """``session`` naming the token (its jti), if the detail names one."""
    jti = detail.get("jti")
    return {} if jti is None else {"session": {"uid": _text(jti)}}


def _target(resource: Any) -> dict[str, Any]:
    return {"uid": _text(resource), "role_id": 1, "role": "Target"}


# ---- principals ----------------------------------------------------------------------


def _actor(event: dict[str, Any]) -> dict[str, Any]:
    """The chain as an OCSF actor: the human as ``user``, the acting agent as the app, and
    for a decision the authorization with the policies that decided it."""
    chain = [_text(p) for p in event.get("chain") or []]
    performer = _performer(event)
    actor: dict[str, Any] = {}
    if _is_human(performer):
        actor["user"] = _user(performer)
    else:
        if chain and _is_human(chain[0]):
            actor["user"] = _user(chain[0])
        actor["app_uid"] = performer
        actor["app_name"] = _short(performer)
    decision = event.get("decision")
    if decision in ("allow", "deny"):
        policies = _detail(event).get("policies")
        uids = [_text(p) for p in policies] if isinstance(policies, list) else []
        actor["authorizations"] = [
            {"decision": decision, "policy": {"uid": uid}} for uid in uids
        ] or [{"decision": decision}]
    return actor


def _user(principal: str) -> dict[str, Any]:
    """An OCSF user for a Tether principal: ``user:<email>``, ``admin``, ``system:<name>``
    or an agent's SPIFFE ID (a service account)."""
    if principal.startswith("spiffe://"):
        return {"uid": principal, "name": _short(principal), "type_id": 4, "type": "Service"}
    if principal.startswith("user:"):
        email = principal.removeprefix("user:")
        user = {"uid": principal, "name": email or principal, "type_id": 1, "type": "User"}
        if _EMAIL.fullmatch(email):
            user["email_addr"] = email
        return user
    if principal == "admin":
        return {"uid": principal, "name": principal, "type_id": 2, "type": "Admin"}
    if principal.startswith("system:"):
        name = principal.removeprefix("system:") or principal
        return {"uid": principal, "name": name, "type_id": 3, "type": "System"}
    return {"uid": principal, "name": principal}


def _is_human(principal: str) -> bool:
    return principal == "admin" or principal.startswith(("user:", "system:"))


def _short(principal: str) -> str:
    """An agent's name (the last segment of its SPIFFE ID); anything else unchanged."""
    if principal.startswith("spiffe://"):
        return principal.rstrip("/").rsplit("/", 1)[-1] or principal
    return principal


def _performer(event: dict[str, Any]) -> str:
    """Who performed the event: ``actor``, else the end of the chain."""
    chain = event.get("chain") or []
    return _text(event.get("actor") or (chain[-1] if chain else "")) or "unknown"


# ---- small helpers -------------------------------------------------------------------


def _metadata(event: dict[str, Any], kind: str, version: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {"name": "Tether", "vendor_name": "Tether", "version": version},
        "uid": _text(event.get("seq")),
        "event_code": kind,
        "original_time": _text(event.get("time")),
    }
    if event.get("request_id") is not None:
        metadata["correlation_uid"] = _text(event["request_id"])
    return metadata


def _unmapped(event: dict[str, Any]) -> dict[str, Any]:
    keys = ("seq", "subject", "action", "resource", "chain", "reasons", "detail")
    return {key: event[key] for key in keys if event.get(key) is not None}


def _operation(event: dict[str, Any], kind: str) -> str:
    op = _detail(event).get("op")
    if kind == "access.refused" and isinstance(op, str):
        return op
    return _text(event.get("action") or kind)


def _other_name(event: dict[str, Any], kind: str) -> str:
    """The source's name for an activity OCSF calls Other."""
    return (_operation(event, kind) if kind not in _ACCOUNT_CHANGES else kind) or "other"


def _crud(text: str) -> int:
    """1-4 (Create, Read, Update, Delete) for the first verb in ``text``, else 0."""
    for word in _WORDS.findall(text):
        activity = _VERBS.get(word.lower())
        if activity is not None:
            return activity
    return 0


def _tool_failed(event: dict[str, Any], kind: str) -> bool:
    outcome = _detail(event).get("outcome")
    return (
        kind == "tool.result" and isinstance(outcome, str) and outcome.lower() in _FAILED_OUTCOMES
    )


def _scope(detail: dict[str, Any]) -> list[str]:
    scope = detail.get("scope")
    if isinstance(scope, str):
        return scope.split()
    return [_text(s) for s in scope] if isinstance(scope, list) else []


def _words(value: Any) -> str:
    """A string, or a list of them joined by spaces (a JWT ``aud`` may be either)."""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return _text(value)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _detail(event: dict[str, Any]) -> dict[str, Any]:
    detail = event.get("detail")
    return detail if isinstance(detail, dict) else {}


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)
