"""The audit encoding exactly as revision 0004 wrote it: frozen, not imported live.

Revision 0004 carries the events recorded before it into the Merkle log, and the leaves it
wrote must stay the leaves it wrote even if :mod:`tether.audit` changes how it encodes new
events one day. So this module is a copy of what 0004 used of the live code on the day it
was frozen: an event's cleaned body (``Entry.of`` and ``Entry.body`` of
:mod:`tether.audit.record`), its RFC 8785 canonical bytes, the RFC 9162 leaf and node
hashes and the frontier of :mod:`tether.audit.tree`. ``tests/test_layers.py`` holds it
byte for byte equal to the live code for the same inputs, so that a change to the live
encoding shows up there as a deliberate, visible difference, never a silent one. Do not
edit it to follow the live code: a new encoding needs a new revision.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import rfc8785

__all__ = ["Frontier", "OldEvent", "canonical", "clean", "leaf_hash", "node_hash", "stage"]

_MAX_SAFE_INT = 2**53 - 1
MAX_TEXT = 2048

# (type, actor, subject, reason, detail, at): a row of the ``events`` table before 0004
OldEvent = tuple[str, str, str | None, str, Mapping[str, Any], datetime]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The roots of the perfect subtrees of a tree of ``size`` leaves, largest first."""

    __slots__ = ("hashes", "size")

    def __init__(self) -> None:
        self.size = 0
        self.hashes: list[bytes] = []

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; every perfect subtree it completes, the leaf itself first."""
        index = self.size
        made = [(0, index, leaf)]
        current = leaf
        level = 0
        while (index >> level) & 1:
            current = node_hash(self.hashes.pop(), current)
            level += 1
            made.append((level, index >> level, current))
        self.hashes.append(current)
        self.size += 1
        return made


def clean(value: Any) -> Any:
    """``value`` as plain JSON: strings without NUL or lone surrogates, cut at
    ``MAX_TEXT``; integers within 2**53, finite floats, string keys."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, int):
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        ok = math.isfinite(value) and abs(value) <= _MAX_SAFE_INT
        return value if ok else str(value)
    if isinstance(value, Mapping):
        return {_clean_text(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [clean(v) for v in value]
    return _clean_text(str(value))


def _clean_text(text: str) -> str:
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}…(+{len(text) - MAX_TEXT} chars)"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON of a :func:`clean` value (the standard library's encoder
    where it gives the same bytes, ``rfc8785`` otherwise)."""
    if _plain(value):
        return _DUMPS(value).encode("utf-8")
    return rfc8785.dumps(value)


_DUMPS = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


def _plain(value: Any) -> bool:
    if isinstance(value, str | bool | int) or value is None:
        return not isinstance(value, int) or -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and (k.isascii() or max(k) < "\ud800") and _plain(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return False


def _body(event: OldEvent, seq: int) -> dict[str, Any]:
    """The exported form of an old event as leaf ``seq``: the actor alone in the chain,
    the type as the action, the subject as the resource, a refusal a deny."""
    type_, actor, subject, reason, detail, at = event
    value: dict[str, Any] = clean(
        {
            "action": type_,
            "actor": actor,
            "chain": [actor],
            "decision": "deny" if type_.endswith(".refused") else None,
            "detail": dict(detail),
            "reasons": [reason] if reason else [],
            "request_id": None,
            "resource": subject,
            "subject": subject,
            "type": type_,
        }
    )
    value["seq"] = seq
    value["time"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def stage(
    events: Iterable[OldEvent], frontier: Frontier
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``events`` and ``audit_nodes`` rows that append ``events`` after ``frontier``,
    which is advanced past them."""
    event_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    for event in events:
        seq = frontier.size + 1
        body = _body(event, seq)
        data = canonical(body)
        leaf = leaf_hash(data)
        event_rows.append(
            {
                "seq": seq,
                "at": event[5],
                "type": body["type"],
                "subject": body["subject"],
                "body": data.decode("utf-8"),
                "leaf_hash": leaf,
            }
        )
        node_rows.extend(
            {"level": level, "idx": idx, "hash": value}
            for level, idx, value in frontier.append(leaf)[1:]
        )
    return event_rows, node_rows
