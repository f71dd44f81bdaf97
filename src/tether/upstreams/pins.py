"""Tool pinning, against "rug pulls" and tool poisoning.

Every tool, resource and prompt an upstream serves is pinned by the SHA-256 of the RFC 8785
canonical JSON of its *whole* definition as served: every field an agent receives (name,
title, description, annotations, both schemas, ``_meta``, icons, ...), every byte of each,
nothing cut or left out. The first listing of each kind from an upstream is pinned on first
sight. After it:

- an item whose definition differs from its pin is *changed*: hidden from listings and
  refused when used until an admin or the server's owner approves the new definition (or
  the upstream serves the pinned one again);
- an item that was not in that first listing is *new*: held the same way until approved;
- an item that grants cannot name (:mod:`tether.upstreams.paths`), or whose definition has no
  RFC 8785 form, is hidden and refused, and recorded once (``gateway.<kind>_refused``).

A pin is state of the decision point: the labels an item's MCP annotations add come from
its pinned definition (:mod:`tether.upstreams.labels`), so every write that sets a pinned
definition (a first pin, a re-pin, an approval) moves the state epoch in its transaction.

Changes are recorded once each, with both versions (cut for the log; the hashes are always
of the whole definitions). A listing is shown only as far as its hash equals the pinned or
approved one, so what an agent receives is exactly what was pinned or approved.

Pins made before whole-definition pinning (``hash_version`` 1: the hash of some fields,
each string cut at 2,048 characters) are migrated on their next sight: re-pinned whole
(``gateway.<kind>_repinned``) only when the served definition still matches the old pin
*and* that pin covered its text entirely (no string was cut); otherwise the item is held as
changed until approved. So an upgrade neither blocks every tool nor keeps a pin that never
covered what agents are shown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tether.audit.record import Entry, canonical, clean
from tether.callers import Caller
from tether.errors import Forbidden, InvalidRequest, NotFound
from tether.model import parse_name
from tether.services import Services
from tether.store import Store, gateway_pins, gateway_servers
from tether.upstreams.paths import item_key, item_path

__all__ = ["HASH_VERSION", "KINDS", "Pin", "Pins", "Sorted", "definition_hash"]

KINDS = ("tool", "resource", "prompt")
HASH_VERSION = 2  # the SHA-256 of the RFC 8785 form of the whole definition
# What a version 1 pin covered (each string cut at 2,048 characters): to migrate old pins.
_V1_FIELDS = {
    "tool": ("name", "title", "description", "inputSchema", "outputSchema", "annotations"),
    "resource": ("uri", "name", "title", "description", "mimeType"),
    "prompt": ("name", "title", "description", "arguments"),
}
_MEMO = 10_000  # items remembered as refused (recorded once), per process


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidRequest(f"unknown kind {kind!r}: tool, resource or prompt")


def definition_hash(kind: str, definition: Mapping[str, Any]) -> str:
    """The pin of ``definition``: SHA-256 (hex) of the RFC 8785 canonical JSON of all of
    it; raises InvalidRequest when it has none (a lone surrogate, an integer beyond
    2**53, a non-finite number)."""
    _check_kind(kind)
    try:
        return hashlib.sha256(canonical(dict(definition))).hexdigest()
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(
            f"its definition has no RFC 8785 canonical form ({type(exc).__name__})"
        ) from None


def _v1(kind: str, definition: Mapping[str, Any]) -> tuple[str, bool]:
    """A version 1 pin of ``definition``, and whether it covered all of its text."""
    part = {k: definition[k] for k in _V1_FIELDS[kind] if k in definition}
    cut = clean(part)
    return hashlib.sha256(canonical(cut)).hexdigest(), cut == part


@dataclass(frozen=True, slots=True)
class Pin:
    server: str
    kind: str
    name: str
    status: str  # pinned | changed | new
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


@dataclass(frozen=True, slots=True)
class Sorted:
    """A listing sorted by its pins: what may be shown, in order, and why each item that
    may not is held (by its name or URI)."""

    shown: list[Mapping[str, Any]]
    held: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Item:
    key: str
    digest: str
    definition: Mapping[str, Any]


class Pins:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._log = services.events
        self._clock = services.clock
        self._epoch = services.epoch
        # (server, kind, name) -> the hash seen pinned: a definition seen as pinned stays
        # pinned until it changes (and then it no longer matches) or its server is removed.
        self._known: dict[tuple[str, str, str], str] = {}
        # (server, kind) whose first listing this process saw pinned
        self._listed: set[tuple[str, str]] = set()
        # items refused for their name or form, already recorded (by this process)
        self._refused: set[tuple[str, str, str]] = set()

    def observe(
        self,
        server: str,
        kind: str,
        definitions: Sequence[Mapping[str, Any]],
        *,
        complete: bool = True,
    ) -> list[Mapping[str, Any]]:
        """The definitions the gateway may show, in order (see :meth:`sort`)."""
        return self.sort(server, kind, definitions, complete=complete).shown

    def sort(
        self,
        server: str,
        kind: str,
        definitions: Sequence[Mapping[str, Any]],
        *,
        complete: bool = True,
    ) -> Sorted:
        """Sort a listing of ``server``'s items of ``kind`` by their pins, pinning the first
        listing, recording each change once. ``complete``: this is the whole listing (its
        first one marks the end of trust on first sight); a part of one (the item a call
        names) pins nothing new once the first listing was seen."""
        _check_kind(kind)
        items: list[_Item] = []
        held: dict[str, str] = {}
        odd: list[tuple[tuple[str, str, str], str, str]] = []
        keys: set[str] = set()
        for definition in definitions:
            try:
                key = item_key(kind, definition)
                item_path(server, kind, definition)
                item = _Item(key, definition_hash(kind, definition), definition)
            except InvalidRequest as exc:
                shown_as = str(definition.get("uri" if kind == "resource" else "name"))
                held[shown_as] = exc.description
                digest = hashlib.sha256(shown_as.encode("utf-8", "replace")).hexdigest()
                memo = (server, kind, digest)
                if memo not in self._refused:
                    odd.append((memo, shown_as, exc.description))
                continue
            if key not in keys:  # an item served twice in one listing: the first one only
                keys.add(key)
                items.append(item)
        known = self._known
        if (
            not odd
            and (not complete or (server, kind) in self._listed)  # a first listing marks
            and all(known.get((server, kind, i.key)) == i.digest for i in items)
        ):
            return Sorted([i.definition for i in items], held)  # all pinned: nothing to write
        shown: list[Mapping[str, Any]] = []
        learned: dict[tuple[str, str, str], str] = {}
        with self._store.write() as conn:
            for _, shown_as, problem in odd:
                self._log.append(
                    conn,
                    Entry.of(
                        f"gateway.{kind}_refused",
                        actor="system:gateway",
                        subject=f"mcp:{server}",
                        resource=f"{server}/*",
                        decision="deny",
                        reason=f"{kind} {shown_as!r} is hidden and refused: {problem}",
                        detail={"name": shown_as},
                    ),
                )
            listed = _listed(conn, server)
            first = listed is None or kind not in listed
            rows = conn.execute(
                select(gateway_pins).where(
                    gateway_pins.c.server == server, gateway_pins.c.kind == kind
                )
            )
            pins = {row.name: row for row in rows}
            for item in items:
                why = self._settle(conn, server, kind, item, pins.get(item.key), first)
                if why is None:
                    shown.append(item.definition)
                    learned[(server, kind, item.key)] = item.digest
                else:
                    held[item.key] = why
                    learned[(server, kind, item.key)] = ""  # held: always ask the store again
            if first and complete and listed is not None:
                conn.execute(
                    update(gateway_servers)
                    .where(gateway_servers.c.name == server)
                    .values(listed=",".join(sorted({*listed, kind})))
                )
        self._known.update(learned)  # only once committed
        if not first or complete:
            self._listed.add((server, kind))
        if len(self._refused) > _MEMO:
            self._refused.clear()
        self._refused.update(memo for memo, _, _ in odd)
        return Sorted(shown, held)

    def _settle(
        self, conn: Connection, server: str, kind: str, item: _Item, row: Any, first: bool
    ) -> str | None:
        """Bring the pin of one served item up to date; None when it may be shown, else
        why it is held."""
        name, digest, definition = item.key, item.digest, item.definition
        now = self._clock()
        where = _where(server, kind, name)
        if row is None and first:
            conn.execute(
                insert(gateway_pins).values(
                    **_pinned(digest, definition, now),
                    server=server,
                    kind=kind,
                    name=name,
                    pending_hash=None,
                    pending=None,
                    changed_at=None,
                    approved_by=None,
                )
            )
            self._event(conn, "pinned", server, kind, name, detail={"hash": digest})
            self._moved(conn)
            return None
        if row is None:
            conn.execute(
                insert(gateway_pins).values(
                    server=server,
                    kind=kind,
                    name=name,
                    status="new",
                    pinned_hash="",
                    pinned={},
                    pending_hash=digest,
                    pending=dict(definition),
                    pinned_at=now,
                    changed_at=now,
                    approved_by=None,
                    hash_version=HASH_VERSION,
                )
            )
            why = f"{kind} {name} is new since the server's first listing: held until approved"
            self._event(conn, "new", server, kind, name, why, {"new": dict(definition)})
            return why
        if row.status == "new":
            why = f"{kind} {name} is new since the server's first listing: held until approved"
            if row.pending_hash != digest:
                conn.execute(where.values(pending_hash=digest, pending=dict(definition)))
                self._event(conn, "new", server, kind, name, why, {"new": dict(definition)})
            return why
        if row.hash_version < HASH_VERSION:
            v1_hash, covered = _v1(kind, definition)
            if row.pinned_hash == v1_hash and covered:
                pinned = _pinned(digest, definition, now)
                conn.execute(where.values(**pinned, pending_hash=None, pending=None))
                detail = {"from": row.pinned_hash, "hash": digest}
                self._event(conn, "repinned", server, kind, name, detail=detail)
                self._moved(conn)
                return None
            matched = row.pinned_hash == v1_hash
        elif row.pinned_hash == digest:
            if row.status != "pinned":  # the upstream went back to what was approved
                conn.execute(where.values(status="pinned", pending_hash=None, pending=None))
            return None
        else:
            matched = False
        why = (
            f"{kind} {name} was pinned before whole definitions were, and that pin did not "
            "cover all of it: blocked until approved"
            if matched
            else f"the definition of {kind} {name} changed: blocked until approved"
        )
        if row.pending_hash != digest:
            conn.execute(
                where.values(
                    status="changed", pending_hash=digest, pending=dict(definition), changed_at=now
                )
            )
            detail = {"pinned": dict(row.pinned), "new": dict(definition), "hash": digest}
            self._event(conn, "changed", server, kind, name, why, detail)
        return why

    def _moved(self, conn: Connection) -> None:
        """A pinned definition was set: move the state epoch (once per transaction), so
        the labels its annotations add reach every decision point at once."""
        state = Store.state(conn)
        if not state.get("pins_moved"):
            state["pins_moved"] = True
            self._epoch.bump(conn)

    def _event(
        self,
        conn: Connection,
        what: str,
        server: str,
        kind: str,
        name: str,
        why: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._log.append(
            conn,
            Entry.of(
                f"gateway.{kind}_{what}",
                actor="system:gateway",
                subject=f"mcp:{server}",
                resource=f"{server}/{name}",
                decision="deny" if why else None,
                reason=why,
                detail=detail,
            ),
        )

    def list(self, server: str) -> list[Pin]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(gateway_pins)
                .where(gateway_pins.c.server == server)
                .order_by(gateway_pins.c.kind, gateway_pins.c.name)
            )
            return [_pin(row) for row in rows]

    def approve(self, by: Caller, server: str, name: str, kind: str = "tool") -> Pin:
        """Make the changed (or new) definition of ``name`` the pinned one (an admin, or
        the upstream's owner)."""
        server = parse_name(server)
        _check_kind(kind)
        if not by.is_admin and not by.owns(self._owner(server)):
            self._log.record(
                Entry.of(
                    "access.refused",
                    actor=by.subject,
                    subject=f"mcp:{server}",
                    reason="only an admin or the server's owner approves changed definitions",
                    detail={"op": "gateway.approve"},
                )
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
            if row.status not in ("changed", "new") or row.pending is None:
                raise InvalidRequest(f"{kind} {name} on {server} has no change to approve")
            conn.execute(
                _where(server, kind, name).values(
                    **_pinned(row.pending_hash, row.pending, self._clock()),
                    pending_hash=None,
                    pending=None,
                    approved_by=by.subject,
                )
            )
            self._moved(conn)
            self._log.append(
                conn,
                Entry.of(
                    f"gateway.{kind}_approved",
                    actor=by.subject,
                    subject=f"mcp:{server}",
                    resource=f"{server}/{name}",
                    decision="allow",
                    detail={
                        "previous": dict(row.pinned),
                        "approved": dict(row.pending),
                        "hash": row.pending_hash,
                    },
                ),
            )
        return next(p for p in self.list(server) if p.kind == kind and p.name == name)

    def _owner(self, server: str) -> str | None:
        with self._store.read() as conn:
            row = conn.execute(
                select(gateway_servers.c.owner).where(gateway_servers.c.name == server)
            ).first()
        return None if row is None else row.owner


def _listed(conn: Connection, server: str) -> set[str] | None:
    """The kinds of ``server`` whose first listing was pinned (None: no such server)."""
    row = conn.execute(
        select(gateway_servers.c.listed).where(gateway_servers.c.name == server)
    ).first()
    return None if row is None else {k for k in row.listed.split(",") if k}


def _pinned(digest: str, definition: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "status": "pinned",
        "pinned_hash": digest,
        "pinned": dict(definition),
        "pinned_at": now,
        "hash_version": HASH_VERSION,
    }


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
