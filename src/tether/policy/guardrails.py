"""Guardrails: organisation-wide Cedar policies, usually ``forbid``, that override grants.

A file is accepted only whole: it must parse, validate against Tether's schema, and every
policy in it must carry a fresh ``@id("...")``, the name decisions give as their reason.

A guardrail may carry ``@approval("owner")`` or ``@approval("admin")``: it then forbids a
call only until a person of that role approves it (the decision point answers *held*, see
:mod:`tether.policy.pdp`); any other value of the annotation is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cedarpy
from sqlalchemy import delete, insert, select

from tether.audit.record import Entry
from tether.callers import Caller
from tether.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tether.grants import APPROVERS
from tether.policy.schema import BUILTIN_IDS, TRIFECTA, builtin_guardrails, schema
from tether.services import Services
from tether.store import policies

__all__ = ["Guardrail", "Guardrails"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MAX_TEXT = 64_000


@dataclass(frozen=True, slots=True)
class Guardrail:
    id: str
    text: str
    source: str
    added_by: str
    added_at: datetime | None  # None for the built-in guardrails
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "source": self.source,
            "added_by": self.added_by,
            "added_at": self.added_at.isoformat() if self.added_at else None,
            "builtin": self.builtin,
        }


class Guardrails:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._log = services.events
        self._epoch = services.epoch
        self._clock = services.clock
        self._trifecta = services.settings.guard.trifecta

    def add(self, by: Caller, text: str, source: str = "") -> list[Guardrail]:
        """Check a whole Cedar file and store each of its policies; all or nothing."""
        if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT or "\x00" in text:
            raise InvalidRequest(f"a policy file must be Cedar text of at most {_MAX_TEXT} chars")
        source = (source or "")[:300]
        split = _split(text)
        if not by.is_admin:
            self._log.record(
                Entry.of(
                    "access.refused",
                    actor=by.subject,
                    subject=",".join(split),
                    reason="only admins add guardrails",
                    detail={"op": "policy.add"},
                )
            )
            raise Forbidden("only an admin can add guardrails")
        now = self._clock()
        added = [Guardrail(pid, body, source, by.subject, now) for pid, body in split.items()]
        with self._store.write() as conn:
            existing = set(
                conn.execute(select(policies.c.id).where(policies.c.id.in_(split))).scalars()
            )
            if existing:
                raise Conflict(f"a policy with @id {sorted(existing)[0]!r} exists: remove it first")
            for rail in added:
                conn.execute(
                    insert(policies).values(
                        id=rail.id,
                        text=rail.text,
                        source=rail.source,
                        added_by=rail.added_by,
                        added_at=rail.added_at,
                    )
                )
                self._log.append(
                    conn,
                    Entry.of(
                        "policy.added",
                        actor=by.subject,
                        subject=f"policy:{rail.id}",
                        detail={"text": rail.text, "source": rail.source},
                    ),
                )
            self._epoch.bump(conn)
        return added

    def remove(self, by: Caller, policy_id: str, reason: str = "") -> Guardrail:
        if policy_id == TRIFECTA:
            raise InvalidRequest(f"{policy_id} is a built-in guardrail: set [guard] trifecta")
        if policy_id in BUILTIN_IDS:
            raise InvalidRequest(f"{policy_id} is a built-in guardrail and is always on")
        if not by.is_admin:
            self._log.record(
                Entry.of(
                    "access.refused",
                    actor=by.subject,
                    subject=f"policy:{policy_id}",
                    reason="only admins remove guardrails",
                    detail={"op": "policy.remove"},
                )
            )
            raise Forbidden("only an admin can remove guardrails")
        with self._store.write() as conn:
            row = conn.execute(select(policies).where(policies.c.id == policy_id)).first()
            if row is None:
                raise NotFound(f"no policy {policy_id}")
            conn.execute(delete(policies).where(policies.c.id == policy_id))
            self._log.append(
                conn,
                Entry.of(
                    "policy.removed",
                    actor=by.subject,
                    subject=f"policy:{policy_id}",
                    reason=reason,
                    detail={"text": row.text},
                ),
            )
            self._epoch.bump(conn)
        return Guardrail(row.id, row.text, row.source, row.added_by, row.added_at)

    def list(self) -> list[Guardrail]:
        builtin = [
            Guardrail(pid, body, "built-in", "tether", None, builtin=True)
            for pid, body in _split(builtin_guardrails(self._trifecta), allow_builtin=True).items()
        ]
        with self._store.read() as conn:
            rows = conn.execute(select(policies).order_by(policies.c.added_at, policies.c.id))
            stored = [Guardrail(r.id, r.text, r.source, r.added_by, r.added_at) for r in rows]
        return builtin + stored


def _split(text: str, *, allow_builtin: bool = False) -> dict[str, str]:
    """Parse and validate ``text``; map each policy's @id to its own Cedar text."""
    try:
        document = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise InvalidRequest(f"Cedar could not parse the policy: {exc}") from None
    if document.get("templates"):
        raise InvalidRequest("policy templates are not supported: write static policies")
    static: dict[str, Any] = document.get("staticPolicies", {})
    if not static:
        raise InvalidRequest("the file holds no policy")
    result = cedarpy.validate_policies(text, schema())
    if not result.validation_passed:
        problems = "; ".join(str(e).strip() for e in result.errors)
        raise InvalidRequest(f"the policy does not validate against Tether's schema: {problems}")
    split: dict[str, str] = {}
    for est in static.values():
        pid = est.get("annotations", {}).get("id")
        if not isinstance(pid, str) or _ID.fullmatch(pid) is None:
            raise InvalidRequest(
                'every policy needs an @id("...") annotation of letters, digits, . _ : -'
            )
        if not allow_builtin and (pid in BUILTIN_IDS or pid.startswith(("tether-", "grant:"))):
            raise InvalidRequest(f"@id {pid!r} is reserved (tether-*, grant:*)")
        if pid in split:
            raise InvalidRequest(f"@id {pid!r} appears twice")
        held = est.get("annotations", {}).get("approval", None)
        if held is not None and held not in APPROVERS:
            raise InvalidRequest(f'@approval of {pid!r} must be "owner" or "admin", not {held!r}')
        if est.get("effect") != "forbid" and not allow_builtin:
            raise InvalidRequest(
                "guardrails are forbid policies: a permit cannot stand in for grants "
                "(use `tether grant add`)"
            )

        one = {"staticPolicies": {"policy0": est}, "templates": {}, "templateLinks": []}
        split[pid] = cedarpy.policies_from_json_str(json.dumps(one)).strip() + "\n"
    return split
