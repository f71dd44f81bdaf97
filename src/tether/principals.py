"""Principals: an agent (SPIFFE ID or bare name) or a person written ``user:<email>``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from tether.model import parse_agent_ref, parse_email

__all__ = ["Principal", "parse_principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["agent", "user"]
    id: str  # the agent's name, or the person's email

    @property
    def key(self) -> str:
        """How grants store it: ``agent:<name>`` or ``user:<email>``."""
        return f"{self.kind}:{self.id}"

    @property
    def cedar_type(self) -> str:
        return "Agent" if self.kind == "agent" else "User"

    def display(self, trust_domain: str) -> str:
        """The SPIFFE ID of an agent, ``user:<email>`` for a person."""
        if self.kind == "agent":
            return f"spiffe://{trust_domain}/agent/{self.id}"
        return self.key

    @classmethod
    def from_key(cls, key: str) -> Principal:
        kind, _, ident = key.partition(":")
        return cls("user" if kind == "user" else "agent", ident)


@lru_cache(maxsize=65536)
def parse_principal(text: str, trust_domain: str) -> Principal:
    if isinstance(text, str) and text.startswith("user:"):
        return Principal("user", parse_email(text[len("user:") :]))
    if isinstance(text, str) and text.startswith("agent:"):
        text = text[len("agent:") :]
    return Principal("agent", parse_agent_ref(text, trust_domain))
