"""Tool pinning, against "rug pulls" and tool poisoning.

The first definition the gateway sees of each tool (name, description, input schema) —
and of each resource and prompt — is pinned by the SHA-256 of its RFC 8785 canonical
JSON. When an upstream later serves a different definition, that item is blocked and
hidden until an admin approves the new one; the change is recorded once, with both
versions. Serving the pinned definition again unblocks it by itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from tether.audit.log import AuditLog
from tether.audit.record import canonical, clean
from tether.callers import Caller
from tether.errors import Forbidden, InvalidRequest, NotFound
from tether.model import parse_name
from tether.store import Store, gateway_pins, gateway_servers

__all__ = ["KINDS", "Pin", "Pins", "definition_hash", "pinned_part"]

KINDS = ("tool", "resource", "prompt")
# What of each definition is pinned: what a model reads and what it sends.
_PINNED = {
    "tool": ("name", "title", "description", "inputSchema", "outputSchema", "annotations"),
    "resource": ("uri", "name", "title", "description", "mimeType"),
    "prompt": ("name", "title", "description", "arguments"),
}


def pinned_part(kind: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    if kind not in _PINNED:
        raise InvalidRequest(f"unknown kind {kind!r}: tool, resource or prompt")
    part: dict[str, Any] = clean({k: definition[k] for k in _PINNED[kind] if k in definition})
    return part


def definition_hash(kind: str, definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(pinned_part(kind, definition))).hexdigest()


@dataclass(frozen=True, slots=True)
class Pin:
    server: str
    kind: str
    name: str
    status: str  # pinned | changed
    pinned_hash: str
    pinned: dict[str, Any]
    pending_hash: str | None
    pending: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "pinned_hash": self.pinned_hash,
            "pending_hash": self.pending_hash,
            "pinned": self.pinned,
            "pending": self.pending,
        }


class Pins:
    def __init__(self, store: Store, log: AuditLog, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._log = log
        self._clock = clock
        # (server, kind, name) -> the hash seen pinned: a definition seen as pinned stays
        # pinned until it changes (and then it no longer matches) or its server is removed.
        self._known: dict[tuple[str, str, str], str] = {}

    def observe(
        self, server: str, kind: str, definitions: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """The definitions the gateway may show, in order. New ones are pinned now; one
        that differs from its pin is held back (and the change recorded once)."""
        key = "uri" if kind == "resource" else "name"
        digests = [definition_hash(kind, d) for d in definitions]
        known = self._known
        if all(
            known.get((server, kind, str(d.get(key, ""))[:512])) == h
            for d, h in zip(definitions, digests, strict=True)
        ) and len({str(d.get(key, "")) for d in definitions}) == len(definitions):
            return list(definitions)  # every one is pinned as it is: nothing to write
        shown: list[Mapping[str, Any]] = []
        learned: dict[tuple[str, str, str], str] = {}
        with self._store.write() as conn:
            rows = conn.execute(
                select(gateway_pins).where(
                    gateway_pins.c.server == server, gateway_pins.c.kind == kind
                )
            )
            pins = {row.name: row for row in rows}
            now = self._clock()
            seen: set[str] = set()
            for definition in definitions:
                name = str(definition.get(key, ""))[:512]
                if name in seen:  # a name served twice in one listing: the first one only
                    continue
                seen.add(name)
                part, digest = pinned_part(kind, definition), definition_hash(kind, definition)
                row = pins.get(name)
                if row is None:
                    conn.execute(
                        insert(gateway_pins).values(
                            server=server,
                            kind=kind,
                            name=name,
                            status="pinned",
                            pinned_hash=digest,
                            pinned=part,
                            pending_hash=None,
                            pending=None,
                            pinned_at=now,
                            changed_at=None,
                            approved_by=None,
                        )
                    )
                    self._log.append(
                        conn,
                        f"gateway.{kind}_pinned",
                        actor="system:gateway",
                        subject=f"mcp:{server}",
                        resource=f"{server}/{name}",
                        detail={"hash": digest},
                    )
                    shown.append(definition)
                    learned[(server, kind, name)] = digest
                elif row.pinned_hash == digest:
                    if row.status != "pinned":  # the upstream went back to what was approved
                        conn.execute(
                            _where(server, kind, name).values(
                                status="pinned", pending_hash=None, pending=None
                            )
                        )
                    shown.append(definition)
                    learned[(server, kind, name)] = digest
                elif row.pending_hash != digest:
                    learned[(server, kind, name)] = ""  # changed: always ask the store again
                    conn.execute(
                        _where(server, kind, name).values(
                            status="changed", pending_hash=digest, pending=part, changed_at=now
                        )
                    )
                    self._log.append(
                        conn,
                        f"gateway.{kind}_changed",
                        actor="system:gateway",
                        subject=f"mcp:{server}",
                        resource=f"{server}/{name}",
                        decision="deny",
                        reason=f"the definition of {kind} {name} changed: blocked until approved",
                        detail={"pinned": dict(row.pinned), "new": part},
                    )
        self._known.update(learned)  # only once committed
        return shown

    def list(self, server: str) -> list[Pin]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(gateway_pins)
                .where(gateway_pins.c.server == server)
                .order_by(gateway_pins.c.kind, gateway_pins.c.name)
            )
            return [_pin(row) for row in rows]

    def approve(self, by: Caller, server: str, name: str, kind: str = "tool") -> Pin:
        """Make the changed definition of ``name`` the pinned one (an admin, or the
        upstream's owner)."""
        server = parse_name(server)
        if kind not in KINDS:
            raise InvalidRequest(f"unknown kind {kind!r}: tool, resource or prompt")
        if not by.is_admin and not by.owns(self._owner(server)):
            self._log.record(
                "access.refused",
                actor=by.subject,
                subject=f"mcp:{server}",
                reason="only an admin or the server's owner approves changed definitions",
                detail={"op": "gateway.approve"},
            )
            raise Forbidden("only an admin or the server's owner can approve a changed definition")
        with self._store.write() as conn:
            row = conn.execute(
                select(gateway_pins).where(
                    gateway_pins.c.server == server,
                    gateway_pins.c.kind == kind,
                    gateway_pins.c.name == name,
                )
            ).first()
            if row is None:
                raise NotFound(f"no {kind} {name} pinned on {server}")
            if row.status != "changed" or row.pending is None:
                raise InvalidRequest(f"{kind} {name} on {server} has no change to approve")
            conn.execute(
                _where(server, kind, name).values(
                    status="pinned",
                    pinned_hash=row.pending_hash,
                    pinned=row.pending,
                    pending_hash=None,
                    pending=None,
                    pinned_at=self._clock(),
                    approved_by=by.subject,
                )
            )
            self._log.append(
                conn,
                f"gateway.{kind}_approved",
                actor=by.subject,
                subject=f"mcp:{server}",
                resource=f"{server}/{name}",
                decision="allow",
                detail={"previous": dict(row.pinned), "approved": dict(row.pending)},
            )
        return next(p for p in self.list(server) if p.kind == kind and p.name == name)

    def _owner(self, server: str) -> str | None:
        with self._store.read() as conn:
            row = conn.execute(
                select(gateway_servers.c.owner).where(gateway_servers.c.name == server)
            ).first()
        return None if row is None else row.owner


def _where(server: str, kind: str, name: str) -> Any:
    return update(gateway_pins).where(
        gateway_pins.c.server == server, gateway_pins.c.kind == kind, gateway_pins.c.name == name
    )


def _pin(row: Any) -> Pin:
    return Pin(
        server=row.server,
        kind=row.kind,
        name=row.name,
        status=row.status,
        pinned_hash=row.pinned_hash,
        pinned=dict(row.pinned),
        pending_hash=row.pending_hash,
        pending=dict(row.pending) if row.pending is not None else None,
    )
