"""Labels on what an upstream serves: how the decision point knows a tool reads private
data, takes in untrusted content, sends data out or destroys something.

The four classes (:data:`CLASSES`) are ``sensitive`` (it reads private data),
``untrusted`` (what it returns may carry content nobody vetted: the web, a mailbox, a
ticket), ``egress`` (it can send data out of the organisation) and ``destructive`` (it
changes or deletes something that cannot be taken back). ``plain`` is the fifth label an
admin may set: the item is none of the four.

**Effective labels** of an item (a tool, a resource, a prompt of server ``SERVER``):

1. its *explicit* labels (``tether gateway label``, by an admin or the server's owner), or,
   when it has none, the unlabelled default of its kind (``[guard] unlabelled_tool``,
   ``unlabelled_resource``, ``unlabelled_prompt``): safe by default, an unclassified tool
   counts as ``untrusted`` and ``egress``. An item whose only explicit label is ``plain``
   starts from no label at all;
2. *plus* the labels its MCP annotations add, read from the **pinned** definition (never
   from what the upstream serves now: an unpinned change is refused anyway):
   ``destructiveHint: true`` adds ``destructive``, ``openWorldHint: true`` adds
   ``untrusted`` and ``egress``. The upstream may lie, so annotations only ever add a
   restriction: ``readOnlyHint`` removes nothing, and a hint that is absent or anything
   but JSON ``true`` adds nothing (the MCP specification's defaults for absent hints are
   not applied: the explicit labels or the kind's default already decide).

Labels are state of the decision point: every change of one, and every pin that can change
an item's annotations (:mod:`tether.upstreams.pins`), moves the state epoch in its own
transaction, so each process's decision point sees it at once. :meth:`Labels.snapshot`
reads them all in one read, for one epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select

from tether.audit.record import Entry
from tether.callers import Caller
from tether.config import LABELS, GuardSettings
from tether.errors import Forbidden, InvalidRequest, NotFound
from tether.model import parse_name
from tether.permissions import HTTP_ACTIONS
from tether.services import Services
from tether.store import egress_destinations, gateway_labels, gateway_pins, gateway_servers
from tether.upstreams.paths import FIELD, item_path

__all__ = [
    "ACTION_KINDS",
    "CLASSES",
    "ItemLabels",
    "LabelSnapshot",
    "Labels",
    "annotation_labels",
    "effective_labels",
]

CLASSES = ("sensitive", "untrusted", "egress", "destructive")
ACTION_KINDS = {"tools/call": "tool", "resources/read": "resource", "prompts/get": "prompt"}
# annotation -> the labels it adds when it is JSON true
_HINTS = {"destructiveHint": ("destructive",), "openWorldHint": ("untrusted", "egress")}
_ALLOWED = ", ".join(LABELS)


def annotation_labels(definition: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The labels the annotations of a pinned ``definition`` add, each with the hints that
    add it (``{"destructive": ["annotation:destructiveHint"]}``)."""
    added: dict[str, list[str]] = {}
    annotations = definition.get("annotations") if definition else None
    if not isinstance(annotations, Mapping):
        return added
    for hint, labels in _HINTS.items():
        if annotations.get(hint) is True:
            for label in labels:
                added.setdefault(label, []).append(f"annotation:{hint}")
    return added


def effective_labels(
    kind: str,
    explicit: Iterable[str],
    definition: Mapping[str, Any] | None,
    guard: GuardSettings,
) -> dict[str, list[str]]:
    """An item's effective labels (see the module docstring), each with where it comes
    from: ``explicit``, ``default`` or ``annotation:<hint>``, in that order."""
    own = set(explicit)
    sources: dict[str, list[str]] = {}
    if own:
        base, source = own - {"plain"}, "explicit"
    else:
        base, source = set(_default(kind, guard)), "default"
    for label in sorted(base):
        sources[label] = [source]
    for label, hints in annotation_labels(definition).items():
        sources.setdefault(label, []).extend(hints)
    return {label: sources[label] for label in sorted(sources)}


def _default(kind: str, guard: GuardSettings) -> frozenset[str]:
    labels = {
        "tool": guard.unlabelled_tool,
        "resource": guard.unlabelled_resource,
        "prompt": guard.unlabelled_prompt,
    }[kind]
    return frozenset(labels) - {"plain"}


@dataclass(frozen=True, slots=True)
class ItemLabels:
    """One item of a server with its labels: the explicit ones and the effective ones,
    each with its sources. ``pinned``: the item has a pin (else it was labelled before
    the gateway first saw it); ``status`` is the pin's (pinned | changed | new)."""

    server: str
    kind: str
    item: str
    path: str
    pinned: bool
    status: str | None
    explicit: tuple[str, ...]
    sources: dict[str, list[str]] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kind": self.kind,
            "item": self.item,
            "path": self.path,
            "pinned": self.pinned,
            "status": self.status,
            "explicit": list(self.explicit),
            "labels": list(self.labels) or ["plain"],
            "sources": {label: list(src) for label, src in self.sources.items()},
        }


class LabelSnapshot:
    """Every item's effective labels as of one read of the store, for the decision point:
    :meth:`of` answers for a request's action and resource path."""

    def __init__(
        self,
        items: Mapping[tuple[str, str], frozenset[str]],
        defaults: Mapping[str, frozenset[str]],
        destinations: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._items = dict(items)
        self._defaults = dict(defaults)
        self._destinations = dict(destinations or {})

    def of(self, action: str, resource: str) -> frozenset[str]:
        """The labels of ``resource`` (a path as :func:`tether.upstreams.paths.item_path`
        makes it) used by ``action``: an item not pinned nor labelled yet has its kind's
        default; an API call through the egress proxy (an HTTP method on
        ``DESTINATION/<path>``) has its destination's labels (``[egress] unlabelled``
        while it has none); anything else (a delegation) has none."""
        kind = ACTION_KINDS.get(action)
        if kind is None:
            if action in HTTP_ACTIONS:
                return self._destinations.get(resource.split("/", 1)[0], frozenset())
            return frozenset()
        return self._items.get((kind, resource), self._defaults[kind])


class Labels:
    """Explicit labels (:meth:`change`), what they come to (:meth:`list`) and the decision
    point's view of them (:meth:`snapshot`)."""

    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._guard = services.settings.guard
        self._unlabelled = services.settings.egress.unlabelled
        self._log = services.events
        self._epoch = services.epoch
        self._clock = services.clock

    def change(
        self,
        by: Caller,
        server: str,
        item: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        kind: str = "tool",
    ) -> ItemLabels:
        """Add and remove explicit labels of ``item`` (a tool or prompt name, a resource
        URI) of ``server``: an admin or the server's owner; recorded
        (``gateway.labelled``) with the epoch moved, both only when something changed.
        Raises InvalidRequest (a bad label, kind or item), NotFound (no such server),
        Forbidden (recorded)."""
        server = parse_name(server)
        kind = _kind(kind)
        added, removed = _checked(add, "add"), _checked(remove, "remove")
        if not added and not removed:
            raise InvalidRequest("give a label to --add or --remove")
        if added & removed:
            raise InvalidRequest(f"{', '.join(sorted(added & removed))}: both added and removed")
        path = _path(server, kind, item)
        self._authorised(by, server, "gateway.label", "label its items")
        with self._store.write() as conn:
            rows = conn.execute(
                select(gateway_labels.c.label).where(*_item(server, kind, item))
            ).scalars()
            before = set(rows)
            after = (before | added) - removed
            if "plain" in after and len(after) > 1:
                raise InvalidRequest(
                    "plain means none of " + ", ".join(CLASSES) + ": it cannot be set with "
                    f"{', '.join(sorted(after - {'plain'}))} (remove those first)"
                )
            if after != before:
                now = self._clock()
                if before - after:
                    conn.execute(
                        delete(gateway_labels).where(
                            *_item(server, kind, item),
                            gateway_labels.c.label.in_(sorted(before - after)),
                        )
                    )
                for label in sorted(after - before):
                    conn.execute(
                        insert(gateway_labels).values(
                            server=server,
                            kind=kind,
                            item=item,
                            label=label,
                            added_by=by.subject,
                            added_at=now,
                        )
                    )
                self._log.append(
                    conn,
                    Entry.of(
                        "gateway.labelled",
                        actor=by.subject,
                        subject=f"mcp:{server}",
                        resource=path,
                        detail={
                            "kind": kind,
                            "item": item,
                            "added": sorted(after - before),
                            "removed": sorted(before - after),
                            "labels": sorted(after),
                        },
                    ),
                )
                self._epoch.bump(conn)  # decisions see the new labels at once
        [labelled] = self._items(server, (kind, item))
        return labelled

    def _items(self, server: str, only: tuple[str, str] | None = None) -> list[ItemLabels]:
        """The items of ``server`` (``only``: that one (kind, item), even if it has
        neither a pin nor a label) with their labels."""
        label_where = [gateway_labels.c.server == server]
        pin_where = [gateway_pins.c.server == server]
        if only is not None:
            label_where += [gateway_labels.c.kind == only[0], gateway_labels.c.item == only[1]]
            pin_where += [gateway_pins.c.kind == only[0], gateway_pins.c.name == only[1]]
        with self._store.read() as conn:
            labels = conn.execute(
                select(gateway_labels.c.kind, gateway_labels.c.item, gateway_labels.c.label).where(
                    *label_where
                )
            ).all()
            pins = conn.execute(
                select(
                    gateway_pins.c.kind,
                    gateway_pins.c.name,
                    gateway_pins.c.status,
                    gateway_pins.c.pinned,
                ).where(*pin_where)
            ).all()
        explicit: dict[tuple[str, str], set[str]] = {}
        for row in labels:
            explicit.setdefault((row.kind, row.item), set()).add(row.label)
        pinned = {(row.kind, row.name): row for row in pins}
        keys = {*explicit, *pinned} | ({only} if only is not None else set())
        items: list[ItemLabels] = []
        for kind, name in sorted(keys, key=lambda k: (_ORDER[k[0]], k[1])):
            pin = pinned.get((kind, name))
            own = explicit.get((kind, name), set())
            items.append(
                ItemLabels(
                    server=server,
                    kind=kind,
                    item=name,
                    path=_shown_path(server, kind, name),
                    pinned=pin is not None,
                    status=pin.status if pin is not None else None,
                    explicit=tuple(sorted(own)),
                    sources=effective_labels(
                        kind, own, pin.pinned if pin is not None else None, self._guard
                    ),
                )
            )
        return items

    def snapshot(self) -> LabelSnapshot:
        """Every item's effective labels, from one read of the store (the decision point
        takes one per state epoch: every change of a label or a pin moves it)."""
        with self._store.read(snapshot=True) as conn:
            labels = conn.execute(select(gateway_labels)).all()
            egress = conn.execute(
                select(egress_destinations.c.name, egress_destinations.c.labels)
            ).all()
            pins = conn.execute(
                select(
                    gateway_pins.c.server,
                    gateway_pins.c.kind,
                    gateway_pins.c.name,
                    gateway_pins.c.pinned,
                )
            ).all()
        explicit: dict[tuple[str, str, str], set[str]] = {}
        for row in labels:
            explicit.setdefault((row.server, row.kind, row.item), set()).add(row.label)
        definitions = {(row.server, row.kind, row.name): row.pinned for row in pins}
        items: dict[tuple[str, str], frozenset[str]] = {}
        for server, kind, name in {*explicit, *definitions}:
            try:
                path = item_path(server, kind, {FIELD[kind]: name})
            except (InvalidRequest, KeyError):  # never decided on: it cannot be named
                continue
            own = explicit.get((server, kind, name), set())
            pinned = definitions.get((server, kind, name))
            items[(kind, path)] = frozenset(effective_labels(kind, own, pinned, self._guard))
        defaults = {kind: _default(kind, self._guard) for kind in FIELD}
        unlabelled = self._unlabelled
        destinations = {row.name: frozenset(row.labels or unlabelled) - {"plain"} for row in egress}
        return LabelSnapshot(items, defaults, destinations)

    def _authorised(self, by: Caller, server: str, op: str, what: str) -> None:
        """Raise NotFound for an unknown server, Forbidden (recorded) unless ``by`` is an
        admin or the server's owner."""
        with self._store.read() as conn:
            row = conn.execute(
                select(gateway_servers.c.owner).where(gateway_servers.c.name == server)
            ).first()
        if row is None:
            raise NotFound(f"no upstream server {server}")
        if by.is_admin or by.owns(row.owner):
            return
        why = f"only an admin or the owner of {server} may {what}"
        self._log.record(
            Entry.of(
                "access.refused",
                actor=by.subject,
                subject=f"mcp:{server}",
                reason=why,
                detail={"op": op},
            )
        )
        raise Forbidden(why)

    def list(self, by: Caller, server: str) -> list[ItemLabels]:
        """``server``'s pinned items and the items labelled before they were pinned, with
        their effective labels and where each comes from; admins and the server's owner
        only (others are refused, and that is recorded)."""
        server = parse_name(server)
        self._authorised(by, server, "gateway.labels", "see its labels")
        return self._items(server)


_ORDER = {"tool": 0, "resource": 1, "prompt": 2}


def _kind(kind: str) -> str:
    if kind not in FIELD:
        raise InvalidRequest(f"unknown kind {kind!r}: tool, resource or prompt")
    return kind


def _checked(labels: Sequence[str], what: str) -> set[str]:
    """``labels`` as a set; raises InvalidRequest naming the allowed ones."""
    if isinstance(labels, str):
        labels = [labels]
    wrong = [label for label in labels if label not in LABELS]
    if wrong:
        raise InvalidRequest(f"cannot {what} {wrong[0]!r}: the labels are {_ALLOWED}")
    return set(labels)


def _path(server: str, kind: str, item: str) -> str:
    if not isinstance(item, str) or not item:
        what = "its URI" if kind == "resource" else "its name"
        raise InvalidRequest(f"name the {kind} to label ({what})")
    try:
        return item_path(server, kind, {FIELD[kind]: item})
    except InvalidRequest as exc:
        raise InvalidRequest(f"{kind} {item!r} cannot be labelled: {exc.description}") from None


def _shown_path(server: str, kind: str, item: str) -> str:
    try:
        return item_path(server, kind, {FIELD[kind]: item})
    except InvalidRequest:
        return ""


def _item(server: str, kind: str, item: str) -> tuple[Any, ...]:
    return (
        gateway_labels.c.server == server,
        gateway_labels.c.kind == kind,
        gateway_labels.c.item == item,
    )
