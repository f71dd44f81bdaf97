"""Frozen value types shared by the library and its faces."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NewType

from tether.errors import InvalidRequest

__all__ = [
    "Agent",
    "AgentId",
    "AgentKind",
    "AgentName",
    "AgentState",
    "Email",
    "Event",
    "agent_id_prefix",
    "parse_agent_ref",
    "parse_email",
    "parse_labels",
    "parse_name",
    "parse_text",
]

AgentName = NewType("AgentName", str)
AgentId = NewType("AgentId", str)
Email = NewType("Email", str)


class AgentKind(enum.StrEnum):
    CHATBOT = "chatbot"
    COPILOT = "copilot"
    CONNECTOR = "connector"
    MCP_SERVER = "mcp-server"
    MCP_CLIENT = "mcp-client"
    AUTONOMOUS = "autonomous"
    OTHER = "other"


class AgentState(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    RETIRED = "retired"
    KILLED = "killed"


_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+")
_LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,62})")
_MAX_LABELS = 32
_MAX_LABEL_VALUE = 256


def parse_name(text: str) -> AgentName:
    """Check an agent name: 1-63 of ``a-z 0-9 . _ -``, starting with a letter or digit.

    ``..`` is refused anywhere, so a name is always a safe file name and SPIFFE path segment.
    """
    if not isinstance(text, str) or _NAME.fullmatch(text) is None or ".." in text:
        raise InvalidRequest(
            f"invalid agent name {text!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' or '/'"
        )
    return AgentName(text)


def parse_email(text: str) -> Email:
    """Check and normalise (lowercase) an owner's email address."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if len(value) > 254 or _EMAIL.fullmatch(value) is None:
        raise InvalidRequest(f"invalid email address {text!r}: expected name@domain")
    return Email(value)


def agent_id_prefix(trust_domain: str) -> str:
    """What every agent's SPIFFE ID starts with: ``spiffe://<td>/agent/``."""
    return f"spiffe://{trust_domain}/agent/"


def parse_agent_ref(text: str, trust_domain: str) -> AgentName:
    """Accept a full SPIFFE ID ``spiffe://<td>/agent/<name>`` or a bare name."""
    prefix = agent_id_prefix(trust_domain)
    if isinstance(text, str) and text.startswith("spiffe://"):
        if not text.startswith(prefix):
            raise InvalidRequest(
                f"invalid agent ID {text!r}: expected {prefix}<name> (trust domain {trust_domain})"
            )
        return parse_name(text[len(prefix) :])
    return parse_name(text)


def parse_text(text: str, what: str, limit: int = 1000) -> str:
    """Free text (a purpose, a reason): at most ``limit`` characters, no NUL."""
    if not isinstance(text, str) or len(text) > limit or "\x00" in text:
        raise InvalidRequest(f"{what} must be text of at most {limit} characters, without NUL")
    return text


def parse_labels(labels: dict[str, str]) -> dict[str, str]:
    """Check label keys (``a-z 0-9 . _ / -``, up to 63) and values (up to 256 chars)."""
    if len(labels) > _MAX_LABELS:
        raise InvalidRequest(f"too many labels: at most {_MAX_LABELS}")
    for key, value in labels.items():
        if not isinstance(key, str) or _LABEL_KEY.fullmatch(key) is None:
            raise InvalidRequest(
                f"invalid label key {key!r}: use 1-63 lowercase letters, digits, '.', '_', '/' "
                "or '-', starting with a letter or digit"
            )
        if not isinstance(value, str) or len(value) > _MAX_LABEL_VALUE or "\x00" in value:
            raise InvalidRequest(f"invalid label value for {key!r}: a string of at most 256 chars")
    return dict(sorted(labels.items()))


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent as the registry reports it; ``state`` is already the effective state."""

    id: AgentId
    name: AgentName
    kind: AgentKind
    owner: Email | None
    purpose: str
    parent: AgentId | None
    labels: dict[str, str]
    created_by: str
    created_at: datetime
    expires_at: datetime
    state: AgentState
    unowned_since: datetime | None
    public_key: str
    key_rotated_at: datetime
    held_by: str | None = None  # who put the agent on an admin hold (only while suspended)

    @property
    def unowned(self) -> bool:
        return self.owner is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "owner": self.owner,
            "unowned": self.unowned,
            "purpose": self.purpose,
            "parent": self.parent,
            "labels": dict(self.labels),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "state": self.state.value,
            "unowned_since": self.unowned_since.isoformat() if self.unowned_since else None,
            "public_key": self.public_key,
            "key_rotated_at": self.key_rotated_at.isoformat(),
            "held_by": self.held_by,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """An audit event: who (the whole chain, human first) did what to which resource,
    when, with what decision and why. ``seq`` is its 1-based place in the audit log."""

    seq: int
    at: datetime
    type: str
    actor: str
    subject: str | None
    chain: tuple[str, ...] = ()
    action: str | None = None
    resource: str | None = None
    decision: str | None = None
    reasons: tuple[str, ...] = ()
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """The event as exported (its canonical body, parsed)."""
        return {
            "action": self.action,
            "actor": self.actor,
            "chain": list(self.chain),
            "decision": self.decision,
            "detail": dict(self.detail),
            "reasons": list(self.reasons),
            "request_id": self.request_id,
            "resource": self.resource,
            "seq": self.seq,
            "subject": self.subject,
            "time": self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "type": self.type,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any], at: datetime) -> Event:
        return cls(
            seq=body["seq"],
            at=at,
            type=body["type"],
            actor=body["actor"],
            subject=body["subject"],
            chain=tuple(body["chain"]),
            action=body["action"],
            resource=body["resource"],
            decision=body["decision"],
            reasons=tuple(body["reasons"]),
            request_id=body["request_id"],
            detail=dict(body["detail"]),
        )
