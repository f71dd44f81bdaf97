"""Audit events as ArcSight CEF lines (the ``cef`` export format), and a parser for them.

``CEF:0|Tether|Tether|<version>|<type>|<name>|<severity>|<extensions>``: the signature ID
is the event type, the severity 0-10 follows :func:`tether.audit.ocsf.severity_id`
(Informational 3, Medium 6 for a deny or a refusal, High 8 for a killed agent or an
alert, 10 for a critical alert). The extensions:

=================  ================================================================
``rt``             event time, milliseconds since the epoch
``act``            the action
``outcome``        the decision, ``allow`` or ``deny`` (absent when there is none)
``suser``          the human at the head of the chain (``user:`` dropped)
``suid``           who performed the event (the acting agent's SPIFFE ID, ``admin``…)
``duser``          the subject
``cs1``            the resource (``cs1Label=resource``)
``cs2``            the chain, joined by `` > `` (``cs2Label=chain``)
``cs3``            the request id (``cs3Label=requestId``)
``cs4``            the detail as compact JSON (``cs4Label=detail``)
``reason``         the reasons, joined by ``; ``
``externalId``     the event's seq
``msg``            the one-line summary (:func:`tether.audit.ocsf.summary`)
=================  ================================================================

A key whose value is absent (null, or an empty chain, reason list or detail) is left
out. Escaping follows the CEF spec: in the header ``\\`` and ``|``; in extension values
``\\``, ``=``, and line breaks as ``\\n`` / ``\\r``. The header cannot carry a line break
at all, so one there becomes a space: a line never holds a raw CR or LF. Every other
control or bidirectional character is shown as its ``\\uXXXX`` escape (:func:`visible`).
"""

from __future__ import annotations

import json
from typing import Any

from tether.audit.ocsf import epoch_ms, severity_id, summary
from tether.safe_text import neutralise

__all__ = ["parse_cef", "to_cef", "visible"]

# OCSF severity_id -> CEF severity
_SEVERITY = {0: 0, 1: 3, 2: 4, 3: 6, 4: 8, 5: 10, 6: 10}
_HUMAN_PREFIXES = ("user:", "system:")


def to_cef(event: dict[str, Any], *, version: str) -> str:
    """The CEF line (no newline) for the audit event body ``event``; ``version`` is Tether's."""
    kind = event.get("type") or ""
    header = ["Tether", "Tether", version, kind, _name(event), str(_SEVERITY[severity_id(event)])]
    extensions = " ".join(
        f"{key}={_escape_value(value)}" for key, value in _extensions(event).items()
    )
    return "CEF:0|" + "|".join(_escape_header(field) for field in header) + "|" + extensions


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """(the seven header fields, ``CEF:0`` first, and the extensions) of a CEF line, all
    unescaped. Anything before ``CEF:`` (a syslog header) is skipped."""
    start = line.find("CEF:")
    if start < 0:
        raise ValueError("not a CEF line: no 'CEF:'")
    text = line[start:]
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while len(fields) < 7:
        if i >= len(text):
            raise ValueError(f"a CEF header has 7 fields, this one {len(fields)}")
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] in ("\\", "|"):
            current.append(text[i + 1])
            i += 2
        elif char == "|":
            fields.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    return fields, _parse_extensions(text[i:])


def _extensions(event: dict[str, Any]) -> dict[str, str]:
    chain = [str(p) for p in event.get("chain") or []]
    reasons = [str(r) for r in event.get("reasons") or []]
    detail = event.get("detail")
    human = (
        chain[0]
        if chain and (chain[0] == "admin" or chain[0].startswith(_HUMAN_PREFIXES))
        else None
    )
    values: dict[str, Any] = {
        "rt": epoch_ms(event["time"]),
        "act": event.get("action"),
        "outcome": event.get("decision"),
        "suser": human.removeprefix("user:") if human is not None else None,
        "suid": event.get("actor"),
        "duser": event.get("subject"),
        "cs1Label": "resource" if event.get("resource") is not None else None,
        "cs1": event.get("resource"),
        "cs2Label": "chain" if chain else None,
        "cs2": " > ".join(chain) if chain else None,
        "cs3Label": "requestId" if event.get("request_id") is not None else None,
        "cs3": event.get("request_id"),
        "cs4Label": "detail" if detail else None,
        "cs4": _json(detail) if detail else None,
        "reason": "; ".join(reasons) if reasons else None,
        "externalId": event.get("seq"),
        "msg": summary(event),
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def _name(event: dict[str, Any]) -> str:
    """Human-readable: ``Access allowed`` / ``Access denied`` for a decision, else the
    type in words (``agent.owner_changed`` → ``Agent owner changed``)."""
    kind = str(event.get("type") or "")
    if kind == "decision" and event.get("decision") in ("allow", "deny"):
        return "Access allowed" if event["decision"] == "allow" else "Access denied"
    words = kind.replace(".", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else "Event"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def visible(text: str) -> str:
    """``text`` with control and bidirectional characters (but CR and LF, which CEF
    escapes its own way) as visible ``\\uXXXX`` escapes (:mod:`tether.safe_text`): CEF has
    no escape for them, and a value must never forge a second line, a fake header, or
    text that reads in another order than it is written."""
    return neutralise(text, keep="\r\n")


def _escape_header(text: str) -> str:
    text = visible(text).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")


def _escape_value(text: str) -> str:
    text = visible(text).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


_UNESCAPE = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def _parse_extensions(text: str) -> dict[str, str]:
    """``key=value`` pairs separated by spaces; a value may hold spaces, and its ``=`` are
    escaped, so each unescaped ``=`` ends a key that starts after the last space."""
    equals: list[int] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "=":
            equals.append(i)
        i += 1
    keys = [(text.rfind(" ", 0, at) + 1, at) for at in equals]
    out: dict[str, str] = {}
    for index, (start, at) in enumerate(keys):
        end = keys[index + 1][0] - 1 if index + 1 < len(keys) else len(text)
        out[text[start:at]] = _unescape_value(text[at + 1 : end])
    return out


def _unescape_value(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] in _UNESCAPE:
            out.append(_UNESCAPE[text[i + 1]])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)
