"""Vault references: what an agent or an upstream asks the broker for.

``vault:<path>#<field>``
    A field of a KV v2 secret in the configured mount (``vault:github#token``,
    ``vault:team/ci#api_key``). Resource name ``vault/<path>``.
``vault-token:<policy>``
    A new Vault token carrying that one policy (``vault-token:ci-read``). Resource name
    ``vault-token/<policy>``. ``root`` is refused in any spelling: no grant can mint a
    root token.

Parsing is strict (ASCII names only, no empty, ``.`` or ``..`` segments, at most 512
characters), so a reference is its own canonical form and ``text`` is a safe cache key.
A policy name is compared the way OpenBao / Vault compare them (``policyutil.
SanitizePolicies``: surrounding white space trimmed, then lowercased): a name that is not
already in that form is refused, so ``vault-token:CI-Read`` can neither pass a grant or
guardrail written for ``vault-token/ci-read`` nor become a token the grant did not name,
and ``ROOT`` or `` root`` are refused as ``root``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tether.errors import InvalidRequest

__all__ = ["MAX_REF", "VaultRef", "parse_ref", "vault_policy_name"]

MAX_REF = 512
_MAX_FIELD = 255  # vault_issued.field
_MAX_POLICY = 128
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_FIELD = re.compile(r"[A-Za-z0-9_.-]+")
_POLICY = re.compile(r"[a-z0-9_-]+")
_FORBIDDEN_POLICIES = frozenset({"root"})
_EXAMPLES = "use vault:<path>#<field> (e.g. vault:github#token) or vault-token:<policy>"


@dataclass(frozen=True, slots=True)
class VaultRef:
    """A parsed reference. ``path`` is the KV path, or the policy of a ``vault-token:``."""

    kind: Literal["static", "dynamic"]
    path: str
    field: str | None
    text: str

    @property
    def resource(self) -> str:
        """The grant resource: ``vault/<path>`` or ``vault-token/<policy>``."""
        return f"vault/{self.path}" if self.kind == "static" else f"vault-token/{self.path}"

    def __str__(self) -> str:
        return self.text


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "…")


def parse_ref(text: str) -> VaultRef:
    """``text`` as a :class:`VaultRef`; :class:`InvalidRequest` saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidRequest(f"a vault reference is text: {_EXAMPLES}")
    if len(text) > MAX_REF:
        raise InvalidRequest(f"a vault reference has at most {MAX_REF} characters")
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in ("vault", "vault-token"):
        raise InvalidRequest(f"not a vault reference {_shown(text)}: {_EXAMPLES}")
    if scheme == "vault-token":
        policy = vault_policy_name(rest)
        if policy in _FORBIDDEN_POLICIES:
            raise InvalidRequest(
                f"{_shown(text)}: Tether never issues {policy} tokens, in any spelling"
            )
        if len(rest) > _MAX_POLICY or _POLICY.fullmatch(rest) is None:
            hint = f" (the vault reads it as {_shown(policy)})" if policy != rest and policy else ""
            raise InvalidRequest(
                f"invalid policy in {_shown(text)}{hint}: a policy name is 1-{_MAX_POLICY} "
                "of a-z 0-9 _ - (the vault lowercases policy names)"
            )
        return VaultRef("dynamic", rest, None, text)
    path, sep, field = rest.partition("#")
    if not sep:
        raise InvalidRequest(f"{_shown(text)} names no field: {_EXAMPLES}")
    for segment in path.split("/"):
        if _SEGMENT.fullmatch(segment) is None:
            raise InvalidRequest(
                f"invalid path in {_shown(text)}: path segments are non-empty runs of "
                "A-Z a-z 0-9 _ . - separated by single slashes"
            )
        if segment == "." or ".." in segment:
            raise InvalidRequest(f"invalid path in {_shown(text)}: no '.' or '..' segments")
    if len(field) > _MAX_FIELD or _FIELD.fullmatch(field) is None:
        raise InvalidRequest(
            f"invalid field in {_shown(text)}: a field is 1-{_MAX_FIELD} of A-Z a-z 0-9 _ . -"
        )
    return VaultRef("static", path, field, text)


def vault_policy_name(name: str) -> str:
    """``name`` as the vault stores and compares it: trimmed of white space, lowercased."""
    return name.strip().lower()


def as_ref(ref: str | VaultRef) -> VaultRef:
    """``ref`` parsed, unless it already is."""
    return ref if isinstance(ref, VaultRef) else parse_ref(ref)
