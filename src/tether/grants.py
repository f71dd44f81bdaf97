"""Grants: a permission given to an agent or a person, narrow and expiring by default.

No grant, no access. A grant names a principal, an action, a resource pattern, an optional
Cedar condition, an expiry, who granted it and why. Broad grants (any action, or a
resource pattern with a wildcard in its first segment: see
:func:`tether.permissions.is_broad`) are refused unless explicitly allowed with a reason,
and stay marked as broad (a grant stored under an older, looser rule is marked on read).
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cedarpy
from sqlalchemy import Connection, Row, exists, insert, select, update

from tether.audit.record import Entry
from tether.audit.throttle import RefusalLog, Refusals
from tether.callers import Caller
from tether.cedar_schema import (
    args_read,
    pinned_args_type,
    read_args_type,
    schema,
    schema_text,
)
from tether.durations import format_duration
from tether.errors import Forbidden, InvalidRequest, NotFound
from tether.limits import Limit, parse_limits
from tether.model import AgentState, parse_text
from tether.permissions import cedar_match, check_action, check_pattern, is_broad
from tether.principals import Principal, parse_principal
from tether.registry import Registry
from tether.services import Services
from tether.store import gateway_pins, grant_uses, grants

__all__ = ["APPROVERS", "Grant", "GrantSpec", "Grants", "http_read_type"]

APPROVERS = ("owner", "admin")  # who approves a call of a grant that needs approval

_MAX_CONDITION = 4000
_PINNED = {"tools/call": "tool", "prompts/get": "prompt"}  # whose arguments pins type


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    principal: Principal
    action: str
    resource: str
    condition: str | None
    broad: bool
    granted_by: str
    reason: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    limits: tuple[Limit, ...] = ()  # budgets (tether.limits)
    approval: str | None = None  # owner | admin: each call it allows waits for approval

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def to_cedar(self) -> str:
        """The grant as one Cedar ``permit``, named ``grant:<id>`` in decisions."""
        action = "action" if self.action == "*" else f'action == Action::"{self.action}"'
        text = (
            f'@id("grant:{self.id}")\n'
            f'permit (principal == {self.principal.cedar_type}::"{self.principal.id}", '
            f"{action}, resource)\n"
            f"when {{ {cedar_match(self.action, self.resource)} }}"
        )
        if self.condition:
            text += f"\nwhen {{ {self.condition} }}"
        return text + ";\n"

    def to_dict(self, trust_domain: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "principal": self.principal.display(trust_domain),
            "action": self.action,
            "resource": self.resource,
            "condition": self.condition,
            "broad": self.broad,
            "granted_by": self.granted_by,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
            "limits": [str(limit) for limit in self.limits],
            "approval": self.approval,
        }


@dataclass(frozen=True, slots=True)
class GrantSpec:
    principal: str
    action: str
    resource: str
    condition: str | None = None
    expires_in: timedelta | None = None
    reason: str = ""
    allow_broad: bool = False
    limits: tuple[str, ...] = ()  # calls=100/1m, bytes=10MB/1h (tether.limits)
    approval: str | None = None  # owner | admin


class Grants:
    def __init__(
        self, services: Services, registry: Registry, refusals: RefusalLog | None = None
    ) -> None:
        settings = services.settings
        self._store = services.store
        self._settings = settings
        self._registry = registry
        self._log = services.events
        self._refusals = refusals or RefusalLog(
            services.events, Refusals(settings.refusals_per_second, settings.refusals_burst)
        )
        self._epoch = services.epoch
        self._clock = services.clock
        self._summarised = self._store.dialect == "postgresql"  # keeps grant_uses (0013)

    def add(self, by: Caller, spec: GrantSpec) -> Grant:
        """Give a permission; refused for non-admins, inactive agents and unjustified breadth."""
        principal = parse_principal(spec.principal, self._settings.trust_domain)
        action = check_action(spec.action, allow_any=True)
        resource = self._resource(action, spec.resource)
        reason = parse_text(spec.reason, "reason")
        broad = is_broad(action, resource)
        if broad and not (spec.allow_broad and reason.strip()):
            raise InvalidRequest(
                f"{action}:{resource} is a broad grant: pass --allow-broad with a --reason "
                "(or name a narrower action and resource)"
            )
        condition = self._condition(spec.condition)
        limits = parse_limits(spec.limits)
        if spec.approval is not None and spec.approval not in APPROVERS:
            raise InvalidRequest(
                f"approval is one of {', '.join(APPROVERS)}, not {spec.approval!r}"
            )
        lifetime = self._lifetime(spec.expires_in)
        if not by.is_admin:
            self._refusals.record(
                by.subject,
                "only admins grant permissions",
                "grant.add",
                subject=principal.display(self._settings.trust_domain),
            )
            raise Forbidden("only an admin can grant permissions")
        now = self._clock()
        grant = Grant(
            id="g_" + secrets.token_hex(8),
            principal=principal,
            action=action,
            resource=resource,
            condition=condition,
            broad=broad,
            granted_by=by.subject,
            reason=reason,
            created_at=now,
            expires_at=now + lifetime,
            revoked_at=None,
            revoked_by=None,
            limits=limits,
            approval=spec.approval,
        )
        self._check_condition(grant)
        if principal.kind == "agent":
            agent = self._registry.get(by, principal.id)
            if agent.state is not AgentState.ACTIVE:
                raise InvalidRequest(
                    f"cannot grant to agent {agent.name}: it is {agent.state.value}, not active"
                )
        with self._store.write() as conn:
            conn.execute(insert(grants).values(**_row(grant)))
            self._log.append(
                conn,
                Entry.of(
                    "grant.added",
                    actor=by.subject,
                    subject=principal.display(self._settings.trust_domain),
                    reason=reason,
                    detail=grant.to_dict(self._settings.trust_domain),
                ),
            )
            self._epoch.bump(conn)
        return grant

    def _check_condition(self, grant: Grant) -> None:
        """Validate the grant's Cedar, its condition's ``context.args`` typed (see
        :meth:`_args_type`) so that conditions on a call's arguments validate, and its
        ``context.http`` typed from what it reads of it (:func:`http_read_type`)."""
        text = grant.to_cedar()
        reads_args = bool(grant.condition) and "args" in str(grant.condition)
        reads_http = bool(grant.condition) and "http" in str(grant.condition)
        if not reads_args and not reads_http:
            _check_cedar(text, "condition")
            return
        typed, how = self._args_type(grant, text) if reads_args else ("{}", "")
        http = http_read_type(text) if reads_http else "{}"
        try:
            typed_schema = cedarpy.Schema.from_str(schema_text(typed, http))
        except ValueError:
            typed = read_args_type(args_read(text))
            how = "each attribute of context.args the condition reads is a String"
            typed_schema = cedarpy.Schema.from_str(schema_text(typed, http))
        hints = [f"{how}: context.args is {typed}"] if reads_args else []
        if reads_http:
            hints.append(f"{_HTTP_HOW}: context.http is {http}")
        _check_cedar(text, "condition", typed_schema, "; ".join(hints))

    def _args_type(self, grant: Grant, text: str) -> tuple[str, str]:
        """``context.args``'s type for a grant's condition, and how it was found: from the
        pinned definition when the grant names one pinned tool (its ``inputSchema``) or
        prompt (its ``arguments``); ``{ uri: String }`` for ``resources/read``; otherwise
        each attribute of ``context.args`` the condition reads, as a required String."""
        if grant.action == "resources/read":
            return "{ uri: String }", "a resource read's arguments are its URI"
        kind = _PINNED.get(grant.action)
        if kind and "*" not in grant.resource and "/" in grant.resource:
            server, name = grant.resource.split("/", 1)
            query = select(gateway_pins.c.pinned).where(
                gateway_pins.c.server == server,
                gateway_pins.c.kind == kind,
                gateway_pins.c.name == name,
            )
            with self._store.read() as conn:
                pinned = conn.execute(query).scalar()
            typed = pinned_args_type(kind, pinned) if isinstance(pinned, dict) else None
            if typed is not None:
                return typed, f"typed from the pinned {kind} {grant.resource}"
        return (
            read_args_type(args_read(text)),
            "no pinned definition types them, so each attribute of context.args the "
            "condition reads is a String",
        )

    def _resource(self, action: str, resource: str) -> str:
        if action == "delegate" and resource != "*":
            return self._registry.agent_id(self._registry.parse_ref(resource))
        return check_pattern(action, resource)

    def _condition(self, condition: str | None) -> str | None:
        if condition is None or not condition.strip():
            return None
        return parse_text(condition, "condition", _MAX_CONDITION).strip()

    def _lifetime(self, requested: timedelta | None) -> timedelta:
        maximum = self._settings.grant_lifetime_max
        if requested is None:
            return self._settings.grant_lifetime_default
        if requested > maximum:
            raise InvalidRequest(
                f"expires {format_duration(requested)} is longer than the maximum grant "
                f"lifetime {format_duration(maximum)}"
            )
        return requested

    def revoke(self, by: Caller, grant_id: str, reason: str = "") -> Grant:
        reason = parse_text(reason, "reason")
        if not by.is_admin:
            self._refusals.record(
                by.subject, "only admins revoke grants", "grant.revoke", subject=grant_id
            )
            raise Forbidden("only an admin can revoke grants")
        now = self._clock()
        with self._store.write() as conn:
            grant = self._one(conn, grant_id)
            if grant.revoked_at is not None:
                raise InvalidRequest(f"grant {grant_id} is already revoked")
            conn.execute(
                update(grants)
                .where(grants.c.id == grant.id)
                .values(revoked_at=now, revoked_by=by.subject)
            )
            self._log.append(
                conn,
                Entry.of(
                    "grant.revoked",
                    actor=by.subject,
                    subject=grant.principal.display(self._settings.trust_domain),
                    reason=reason,
                    detail={"grant": grant.id},
                ),
            )
            self._epoch.bump(conn)
            return self._one(conn, grant_id)

    def _one(self, conn: Connection, grant_id: str) -> Grant:
        row = conn.execute(select(grants).where(grants.c.id == str(grant_id))).first()
        if row is None:
            raise NotFound(f"no grant {grant_id}")
        return grant_from_row(row)

    def list(
        self,
        by: Caller,
        *,
        principal: str | None = None,
        include_inactive: bool = False,
        unused_since: datetime | None = None,
    ) -> builtins.list[Grant]:
        """Live grants (or all, with ``include_inactive``); a non-admin sees only those
        of agents they own and their own ``user:`` grants. With ``unused_since``, only
        those that allowed no decision since then (:meth:`last_uses`)."""
        now = self._clock()
        query = select(grants).order_by(grants.c.created_at, grants.c.id)
        if principal is not None:
            wanted = parse_principal(principal, self._settings.trust_domain)
            query = query.where(grants.c.principal == wanted.key)
        if not include_inactive:  # and checked again below, as Grant.live has it
            query = query.where(grants.c.revoked_at.is_(None), grants.c.expires_at > now)
        if unused_since is not None and self._summarised:
            used = select(grant_uses.c.grant_id).where(
                grant_uses.c.grant_id == grants.c.id, grant_uses.c.last_used >= unused_since
            )
            query = query.where(~exists(used))
        with self._store.read() as conn:
            found = [grant_from_row(row) for row in conn.execute(query)]
        if not include_inactive:
            found = [g for g in found if g.live(now)]
        if unused_since is not None and not self._summarised:
            uses = self.last_uses(unused_since)
            found = [g for g in found if g.id not in uses]
        if by.is_admin:
            return found
        mine = {a.name for a in self._registry.list(by)}
        return [
            g
            for g in found
            if (g.principal.kind == "agent" and g.principal.id in mine)
            or (g.principal.kind == "user" and g.principal.id == by.email)
        ]

    def last_uses(self, since: datetime) -> dict[str, datetime]:
        """When each grant last allowed a decision, if that was at ``since`` or later:
        ``grant_uses`` on PostgreSQL (kept with the decision record in the transaction
        that writes it), the decisions since then on SQLite (which keeps no summary)."""
        if not self._summarised:
            used: dict[str, datetime] = {}
            for event in self._log.list(type="decision", since=since):
                if event.decision == "allow":
                    for grant_id in event.detail.get("grants", ()):
                        used[str(grant_id)] = event.at
            return used
        query = select(grant_uses.c.grant_id, grant_uses.c.last_used).where(
            grant_uses.c.last_used >= since
        )
        with self._store.read() as conn:
            return {row.grant_id: row.last_used for row in conn.execute(query)}

    def live(self) -> builtins.list[Grant]:
        """Every live grant (for the decision point)."""
        now = self._clock()
        with self._store.read() as conn:
            rows = conn.execute(
                select(grants).where(grants.c.revoked_at.is_(None), grants.c.expires_at > now)
            )
            return [grant_from_row(row) for row in rows]


_HTTP = {".": {"left": {"Var": "context"}, "attr": "http"}}
_HTTP_SCALARS = ("method", "path")  # context.http's Strings
_HTTP_RECORDS = ("query", "headers", "body")  # its records, of what a condition reads
_HTTP_HOW = (
    "context.http has method and path (Strings), and query, headers and body records of "
    "each attribute the condition reads, as a String (behind `has`: any type)"
)


def http_read_type(text: str) -> str:
    """``context.http``'s type for a grant condition: ``method`` and ``path`` Strings, and
    ``query``, ``headers`` and ``body`` records declaring each attribute the condition
    reads of them (``.name``, ``["name"]``) a required String, as
    :func:`tether.cedar_schema.read_args_type` types ``context.args``: a value that is
    not there when the request is decided makes the condition fail, so the grant does
    not allow it (fail closed). An attribute the condition also tests with ``has`` is
    left undeclared, so that a body field of any type validates behind it
    (``context.http.body has n && context.http.body.n < 10``), as guardrails read it.
    Anything else the condition reads of ``context.http`` is left out: it does not
    validate."""
    try:
        document = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError:
        return "{}"
    top: set[str] = set()
    inner: dict[str, set[str]] = {name: set() for name in _HTTP_RECORDS}
    guarded: dict[str, set[str]] = {name: set() for name in _HTTP_RECORDS}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for op in (".", "has"):
                found = node.get(op)
                if not isinstance(found, dict) or not isinstance(found.get("attr"), str):
                    continue
                left, attr = found.get("left"), found["attr"]
                if left == _HTTP:
                    top.add(attr)
                elif isinstance(left, dict) and left.get(".", {}).get("left") == _HTTP:
                    record = left["."].get("attr")
                    if record in inner:
                        (inner if op == "." else guarded)[record].add(attr)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    attrs = [f"{name}: String" for name in _HTTP_SCALARS if name in top]
    for name in _HTTP_RECORDS:
        if name in top:
            attrs.append(f"{name}: {read_args_type(inner[name] - guarded[name])}")
    return "{ " + ", ".join(attrs) + " }" if attrs else "{}"


_NOISE = re.compile(r'^for policy `[^`]*`, | in context for Action::"[^"]*"| for Action::"[^"]*"')


def _check_cedar(
    text: str, what: str, against: cedarpy.Schema | None = None, typed: str = ""
) -> None:
    try:
        parsed = cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        raise InvalidRequest(f"invalid {what}: {exc}") from None
    if len(parsed) != 1:
        raise InvalidRequest(f"invalid {what}: it must be one Cedar expression")
    result = cedarpy.validate_policies(text, against or schema())
    if not result.validation_passed:
        problems = "; ".join(dict.fromkeys(_NOISE.sub("", e.error) for e in result.errors))
        hint = f" ({typed})" if typed else ""
        raise InvalidRequest(f"invalid {what}: {problems}{hint}")


def _row(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "principal": grant.principal.key,
        "action": grant.action,
        "resource": grant.resource,
        "condition": grant.condition,
        "broad": grant.broad,
        "granted_by": grant.granted_by,
        "reason": grant.reason,
        "created_at": grant.created_at,
        "expires_at": grant.expires_at,
        "revoked_at": grant.revoked_at,
        "revoked_by": grant.revoked_by,
        "limits": json.dumps([limit.to_dict() for limit in grant.limits]) if grant.limits else None,
        "approval": grant.approval,
    }


def grant_from_row(row: Row[Any]) -> Grant:
    return Grant(
        id=row.id,
        principal=Principal.from_key(row.principal),
        action=row.action,
        resource=row.resource,
        condition=row.condition,
        broad=bool(row.broad) or is_broad(row.action, row.resource),
        granted_by=row.granted_by,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        limits=tuple(Limit.from_dict(d) for d in json.loads(row.limits)) if row.limits else (),
        approval=row.approval,
    )
