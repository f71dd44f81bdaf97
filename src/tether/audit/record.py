"""One audit event as the log holds it: its fields, its canonical bytes and its leaf hash.

The leaf bytes of event ``seq`` are the RFC 8785 canonical JSON of the object that
``tether audit export --format jsonl`` prints for it, so anyone can recompute a leaf
hash from an export. The stored text *is* those bytes; the columns beside it (time,
type, subject) are copies for indexing that verification checks against the body.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785
from sqlalchemy import Connection

from tether.audit.merkle import leaf_hash
from tether.audit.tree import Frontier

__all__ = [
    "MAX_TEXT",
    "REQUEST_ID",
    "Effect",
    "Entry",
    "Prepared",
    "canonical",
    "clean",
    "encode",
    "finish",
    "format_time",
    "has_columns",
    "parse_time",
    "prepare",
    "stage",
    "tail",
]

# The request being served, so every event it causes names it. Set by the API faces.
REQUEST_ID: ContextVar[str | None] = ContextVar("tether_request_id", default=None)

_MAX_SAFE_INT = 2**53 - 1  # RFC 8785 numbers are IEEE 754 doubles
MAX_TEXT = 2048  # longer strings in an event are cut (and say by how much)


def clean(value: Any) -> Any:
    """``value`` as plain JSON that survives every store and RFC 8785 unchanged: strings
    without NUL or lone surrogates, integers within 2**53, finite floats, string keys."""
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
    if len(text) > MAX_TEXT:  # nobody grows the log by megabytes through one field
        text = f"{text[:MAX_TEXT]}…(+{len(text) - MAX_TEXT} chars)"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON of an already :func:`clean` value.

    Values without floats whose keys are all below U+D800 (what events hold) come out of
    the standard library's encoder byte for byte as RFC 8785 has them: same escapes, same
    integers, and code-point key order equals UTF-16 order there. Anything else goes
    through ``rfc8785``, and a property test holds the two equal."""
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


def format_time(at: datetime) -> str:
    """UTC with microseconds and a ``Z``: the one way an event time is written."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def tail(seq: int, subject: str | None, time: str, type: str) -> str:
    """How the canonical body of an event must end, given its indexed columns.

    RFC 8785 sorts members, and ``seq``, ``subject``, ``time``, ``type`` are the last
    four top-level keys, so a body ends with exactly this text iff its columns match."""
    return (
        f',"seq":{seq},"subject":{_json_text(subject)},"time":"{time}","type":{_json_text(type)}}}'
    )


def has_columns(body: bytes, seq: int, subject: object, time: object, type: object) -> bool:
    """Whether a stored body ends as its raw columns say (:func:`tail`); a column of the
    wrong kind, as a tampered row may hold, never matches."""
    if not (isinstance(time, str) and isinstance(type, str)):
        return False
    if not (subject is None or isinstance(subject, str)):
        return False
    return body.endswith(tail(seq, subject, time, type).encode())


@functools.lru_cache(maxsize=65_536)
def _json_text(value: str | None) -> str:
    """A subject's or type's JSON (few distinct values: verification asks millions of times)."""
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Entry:
    """An event waiting for its sequence number and time (given when it is written)."""

    type: str
    actor: str
    subject: str | None = None
    chain: tuple[str, ...] = ()
    action: str | None = None
    resource: str | None = None
    decision: str | None = None
    reasons: tuple[str, ...] = ()
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        type: str,
        *,
        actor: str,
        subject: str | None = None,
        reason: str = "",
        detail: Mapping[str, Any] | None = None,
        chain: Sequence[str] | None = None,
        action: str | None = None,
        resource: str | None = None,
        decision: str | None = None,
        reasons: Sequence[str] | None = None,
    ) -> Entry:
        """An entry with the usual defaults: the chain is the actor alone, the action is
        the event type, a refusal is a deny, and the request is the one being served."""
        if reasons is None:
            reasons = (reason,) if reason else ()
        if decision is None and type.endswith(".refused"):
            decision = "deny"
        return cls(
            type=type,
            actor=actor,
            subject=subject,
            chain=tuple(chain) if chain else (actor,),
            action=action or type,
            resource=resource if resource is not None else subject,
            decision=decision,
            reasons=tuple(reasons),
            request_id=REQUEST_ID.get(),
            detail=detail or {},
        )

    def fields(self) -> dict[str, Any]:
        """The members of the body before ``seq`` (in key order), not cleaned."""
        return {
            "action": self.action,
            "actor": self.actor,
            "chain": list(self.chain),
            "decision": self.decision,
            "detail": dict(self.detail),
            "reasons": list(self.reasons),
            "request_id": self.request_id,
            "resource": self.resource,
        }

    def body(self, seq: int, time: str) -> dict[str, Any]:
        """The event as exported (before canonicalisation), cleaned."""
        value: dict[str, Any] = clean({**self.fields(), "subject": self.subject, "type": self.type})
        value["seq"] = seq
        value["time"] = time
        return value


def encode(entry: Entry, seq: int, at: datetime) -> tuple[dict[str, Any], str, bytes]:
    """(cleaned body, its canonical text, leaf hash) of ``entry`` as event ``seq``: the
    reference :func:`prepare` and :func:`finish` give the same text as, faster."""
    body = entry.body(seq, format_time(at))
    data = canonical(body)
    return body, data.decode("utf-8"), leaf_hash(data)


Effect = Callable[[Connection, int], None]


@dataclass(frozen=True, slots=True)
class Prepared:
    """An entry encoded as far as it can be before it has its place in the log.

    RFC 8785 sorts the members of the body, and ``seq``, ``subject``, ``time``, ``type``
    are its last four: the canonical text is ``head`` + :func:`tail`. Everything costly
    (cleaning, canonicalising the detail) is done here, by the caller, before the append
    takes its lock; the append only adds the sequence number and the time."""

    head: str  # the canonical body up to and without ',"seq":'
    subject: str | None  # cleaned, as the body and the index column hold it
    type: str
    # runs in the transaction that writes the entry, once it has its sequence number
    # (the state a decision sets, written with it: commits with it or neither does)
    effect: Effect | None = None


def prepare(entry: Entry) -> Prepared:
    """``entry`` encoded up to its sequence number and time (see :class:`Prepared`)."""
    fields, subject, kind = entry.fields(), entry.subject, entry.type
    if isinstance(kind, str) and _is_clean(kind) and _is_clean(subject) and _is_clean(fields):
        text = _DUMPS(fields)
        if all(map(_encodes, (text, subject or "", kind))):  # no lone surrogate anywhere
            return Prepared(text[:-1], subject, kind)
    cleaned: dict[str, Any] = clean({**fields, "subject": subject, "type": kind})
    subject, kind = cleaned.pop("subject"), cleaned.pop("type")
    return Prepared(canonical(cleaned).decode("utf-8")[:-1], subject, kind)


def finish(prepared: Prepared, seq: int, time: str) -> str:
    """The canonical body text of ``prepared`` as event ``seq`` written at ``time``
    (:func:`format_time`)."""
    return prepared.head + tail(seq, prepared.subject, time, prepared.type)


def _is_clean(value: Any) -> bool:
    """Whether :func:`clean` leaves ``value`` as it is and the standard encoder writes it
    as RFC 8785 does (no floats, keys below U+D800): one pass, by exact type. Lone
    surrogates are left to :func:`_encodes` on the encoded text; anything else unusual
    (a subclass, a float, a set) answers False and takes the reference path."""
    kind = type(value)
    if kind is str:
        return _short(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _short(key):
                return False
            if not (key.isascii() or max(key) < "\ud800"):
                return False
            if not (_short(item) if type(item) is str else _is_clean(item)):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_short(item) if type(item) is str else _is_clean(item) for item in value)
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    return value is None or kind is bool


def _short(text: str) -> bool:
    return len(text) <= MAX_TEXT and "\x00" not in text


def _encodes(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stage(
    entries: Iterable[Prepared], at: datetime, frontier: Frontier
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``events`` and ``audit_nodes`` rows that append ``entries`` at time ``at``
    after ``frontier``, which is advanced past them."""
    time = format_time(at)
    event_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    for prepared in entries:
        seq = frontier.size + 1
        text = finish(prepared, seq, time)
        leaf = leaf_hash(text.encode("utf-8"))
        event_rows.append(
            {
                "seq": seq,
                "at": at,
                "type": prepared.type,
                "subject": prepared.subject,
                "body": text,
                "leaf_hash": leaf,
            }
        )
        node_rows.extend(
            {"level": level, "idx": idx, "hash": value}
            for level, idx, value in frontier.append(leaf)[1:]
        )
    return event_rows, node_rows
