"""Findings, reconciled with the registry and kept in the store.

Each finding of a scan is ``registered`` (an agent claims it: its label
``discovery.finding`` is the finding's ID) or ``shadow`` (nobody does). A registered agent
whose finding was not found again at its recorded location — a file under the scanned
paths — is ``stale``. With ``import_shadow``, every shadow agent-finding (all kinds but
``credential``) is registered as an agent: unowned and suspended, its creator suggested
as owner (label ``discovery.suggested-owner``), to be adopted with ``agent set-owner``.
Shadow and unowned findings carry the ``no-owner`` flag.

Rescans are idempotent: the same finding keeps its ID and row (``first_seen`` stays,
``last_seen`` moves), an imported agent is never imported twice. Every reconciliation is
one transaction and one ``discovery.scanned`` event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tether.audit.record import Entry
from tether.callers import Caller
from tether.errors import Forbidden, InvalidRequest
from tether.registry import Registry
from tether.services import Services
from tether.store import agents, discovery_findings

__all__ = ["FINDING_LABEL", "Findings", "Reconciled"]

FINDING_LABEL = "discovery.finding"
LOCATION_LABEL = "discovery.location"
STATUSES = ("registered", "shadow", "stale")
_AGENT_KIND = {
    "mcp-server": "mcp-server",
    "agent-code": "autonomous",
    "k8s-workload": "autonomous",
    "ci-workflow": "autonomous",
    "cloud-role": "connector",
}
_SLUG = re.compile(r"[^a-z0-9]+")
_EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$")


@dataclass(frozen=True, slots=True)
class _Claim:
    agent: str
    owner: str | None
    location: str | None  # the discovery.location label, if the agent has one


@dataclass
class Reconciled:
    """What a reconciliation decided: every finding with its status (and agent), the
    agents imported now, the findings that went stale."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for finding in self.findings:
            out[finding["status"]] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": self.findings,
            "imported": self.imported,
            "stale": self.stale,
            "counts": self.counts(),
        }


class Findings:
    def __init__(self, services: Services, registry: Registry) -> None:
        self._store = services.store
        self._registry = registry
        self._log = services.events
        self._clock = services.clock

    def reconcile(
        self,
        by: Caller,
        roots: Sequence[str],
        found: Sequence[Mapping[str, Any]],
        *,
        import_shadow: bool = False,
    ) -> Reconciled:
        """Store a scan's findings (``Finding.to_dict()`` plus ``location``, the file's
        absolute path) under the scanned ``roots``, with their status against the registry."""
        if not by.is_admin:
            self._log.record(
                Entry.of(
                    "access.refused",
                    actor=by.subject,
                    subject=None,
                    reason="only admins record discovery scans",
                    detail={"op": "discovery"},
                )
            )
            raise Forbidden("only an admin can record discovery scans")
        checked = [_checked(f) for f in found]
        now = self._clock()
        out = Reconciled()
        with self._store.write() as conn:
            claimed = self._claimed(conn)
            seen: set[str] = set()
            for finding in checked:
                seen.add(finding["id"])
                claim = claimed.get(finding["id"])
                agent, owner = (claim.agent, claim.owner) if claim else (None, None)
                if agent is None and import_shadow and finding["kind"] in _AGENT_KIND:
                    agent = self._import(conn, by, finding)  # imported unowned
                    out.imported.append(agent)
                status = "registered" if agent is not None else "shadow"
                if owner is None:  # shadow, or an agent nobody has adopted yet
                    finding["flags"] = sorted({*finding["flags"], "no-owner"})
                out.findings.append({**finding, "status": status, "agent": agent})
                self._upsert(conn, finding, status, agent, now)
            for finding_id, claim in claimed.items():
                if finding_id in seen:
                    continue
                location = claim.location or self._location_of(conn, claim.agent)
                if location is None or not _under(location, roots):
                    continue  # not where this scan looked: nothing to say
                stale = self._stale(conn, finding_id, claim.agent, location, now)
                out.findings.append(stale)
                out.stale.append(finding_id)
            self._log.append(
                conn,
                Entry.of(
                    "discovery.scanned",
                    actor=by.subject,
                    subject=None,
                    detail={
                        "roots": list(roots),
                        "counts": out.counts(),
                        "imported": out.imported,
                        "stale": out.stale,
                    },
                ),
            )
        return out

    def list(self, *, status: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"unknown status {status!r}: {', '.join(STATUSES)}")
        query = select(discovery_findings).order_by(
            discovery_findings.c.location, discovery_findings.c.line, discovery_findings.c.id
        )
        if status is not None:
            query = query.where(discovery_findings.c.status == status)
        if kind is not None:
            query = query.where(discovery_findings.c.kind == kind)
        with self._store.read() as conn:
            return [_row(r) for r in conn.execute(query)]

    # ---- steps --------------------------------------------------------------------------

    def _claimed(self, conn: Connection) -> dict[str, _Claim]:
        """Finding ID -> the agent that claims it (with its owner and recorded location)."""
        out: dict[str, _Claim] = {}
        rows = conn.execute(select(agents.c.name, agents.c.owner, agents.c.labels))
        for name, owner, labels in rows:
            claim = (labels or {}).get(FINDING_LABEL)
            if isinstance(claim, str):
                location = (labels or {}).get(LOCATION_LABEL)
                where = location if isinstance(location, str) else None
                out.setdefault(claim, _Claim(name, owner, where))
        return out

    def _location_of(self, conn: Connection, agent: str) -> str | None:
        """Where a claimed finding was last stored (an agent labelled by hand)."""
        row = conn.execute(
            select(discovery_findings.c.location).where(discovery_findings.c.agent == agent)
        ).first()
        return None if row is None else str(row.location)

    def _import(self, conn: Connection, by: Caller, finding: dict[str, Any]) -> str:
        base = _SLUG.sub("-", f"{finding['kind']}-{finding['name']}".lower()).strip("-")
        name = f"{base[:44].rstrip('-')}-{finding['id'][2:10]}"
        labels = {
            FINDING_LABEL: finding["id"],
            LOCATION_LABEL: str(finding["location"])[:256],
            "discovery.scanner": finding["scanner"],
        }
        creator = finding.get("creator")
        if isinstance(creator, str) and _EMAIL.match(creator):
            labels["discovery.suggested-owner"] = creator
        purpose = f"discovered: {finding['kind']} {finding['name']} in {finding['path']}"
        self._registry.register_discovered(
            conn,
            by,
            name,
            kind=_AGENT_KIND[finding["kind"]],
            purpose=purpose[:1000],
            labels=labels,
        )
        return name

    def _upsert(
        self,
        conn: Connection,
        finding: dict[str, Any],
        status: str,
        agent: str | None,
        now: datetime,
    ) -> None:
        values = {
            "kind": finding["kind"],
            "name": str(finding["name"])[:512],
            "scanner": finding["scanner"],
            "location": str(finding["location"])[:2048],
            "line": finding.get("line"),
            "status": status,
            "agent": agent,
            "body": finding,
            "last_seen": now,
        }
        existing = conn.execute(
            select(discovery_findings.c.id).where(discovery_findings.c.id == finding["id"])
        ).first()
        if existing is None:
            conn.execute(
                insert(discovery_findings).values(id=finding["id"], first_seen=now, **values)
            )
        else:
            conn.execute(
                update(discovery_findings)
                .where(discovery_findings.c.id == finding["id"])
                .values(**values)
            )

    def _stale(
        self, conn: Connection, finding_id: str, agent: str, location: str, now: datetime
    ) -> dict[str, Any]:
        row = conn.execute(
            select(discovery_findings).where(discovery_findings.c.id == finding_id)
        ).first()
        if row is None:  # claimed by hand, never stored: remember it as stale now
            body: dict[str, Any] = {
                "id": finding_id, "kind": "unknown", "name": agent, "scanner": "",
                "path": Path(location).name, "line": None, "pointer": None, "access": [],
                "credentials": [], "flags": [], "creator": None, "detail": {},
                "location": location,
            }  # fmt: skip
            conn.execute(
                insert(discovery_findings).values(
                    id=finding_id, kind="unknown", name=agent, scanner="", location=location,
                    line=None, status="stale", agent=agent, body=body, first_seen=now,
                    last_seen=now,
                )
            )  # fmt: skip
        else:
            body = dict(row.body)
            conn.execute(
                update(discovery_findings)
                .where(discovery_findings.c.id == finding_id)
                .values(status="stale", agent=agent)
            )
        return {**body, "status": "stale", "agent": agent}


def _under(location: str, roots: Sequence[str]) -> bool:
    path = Path(location)
    return any(path == Path(r) or Path(r) in path.parents for r in roots)


_REQUIRED = {"id": str, "kind": str, "name": str, "scanner": str, "path": str, "location": str}


def _checked(finding: Mapping[str, Any]) -> dict[str, Any]:
    """A finding as a scan reported it, checked enough to store (the API takes these from
    the CLI, which scanned where it runs)."""
    if not isinstance(finding, Mapping):
        raise InvalidRequest("each finding must be an object")
    for key, kind in _REQUIRED.items():
        if not isinstance(finding.get(key), kind) or not finding[key]:
            raise InvalidRequest(f"each finding needs {key} (a non-empty string)")
    if not re.fullmatch(r"f-[0-9a-f]{16}", finding["id"]):
        raise InvalidRequest(f"malformed finding id {finding['id']!r}")
    line = finding.get("line")
    if line is not None and (not isinstance(line, int) or isinstance(line, bool) or line < 0):
        raise InvalidRequest("a finding's line must be a non-negative integer")
    flags = finding.get("flags") or []
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise InvalidRequest("a finding's flags must be a list of strings")
    return {**dict(finding), "flags": list(flags)}


def _row(row: Any) -> dict[str, Any]:
    return {
        **dict(row.body),
        "status": row.status,
        "agent": row.agent,
        "first_seen": row.first_seen.isoformat(),
        "last_seen": row.last_seen.isoformat(),
    }
