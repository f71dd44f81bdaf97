"""What is asked of the decision point, and what it answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["AccessRequest", "Decision"]


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """May ``principal`` do ``action`` on ``resource``, for ``on_behalf_of`` through ``chain``?

    ``chain`` lists the agents the task passed through before ``principal`` (the acting
    one), earliest first. ``scope``, when given, is the token's list of ``ACTION:RESOURCE``
    permissions: the request must fall inside one of them. ``groups`` are the person's
    identity-provider groups (the person of ``on_behalf_of``, or the principal when it is
    a person), sorted: Cedar sees them as ``User.groups``, and as a field of the request
    they are part of the decision cache key.
    """

    principal: str
    action: str
    resource: str
    on_behalf_of: str | None = None
    chain: tuple[str, ...] = ()
    context: str = ""  # extra Cedar context, as canonical JSON (hashable: requests key the cache)
    scope: tuple[str, ...] | None = None
    groups: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        principal: str,
        action: str,
        resource: str,
        *,
        on_behalf_of: str | None = None,
        chain: tuple[str, ...] | list[str] = (),
        context: dict[str, Any] | None = None,
        scope: tuple[str, ...] | list[str] | None = None,
        groups: tuple[str, ...] | list[str] = (),
    ) -> AccessRequest:
        return cls(
            principal=principal,
            action=action,
            resource=resource,
            on_behalf_of=on_behalf_of,
            chain=tuple(chain),
            context=json.dumps(context, sort_keys=True, separators=(",", ":")) if context else "",
            scope=tuple(scope) if scope is not None else None,
            groups=tuple(sorted(set(groups))),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """An allow or a deny with its reasons. ``chain`` is human first, acting agent last."""

    allowed: bool
    chain: tuple[str, ...]
    action: str
    resource: str
    reasons: tuple[str, ...]
    grants: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    epoch: int = 0
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": "allow" if self.allowed else "deny",
            "allowed": self.allowed,
            "chain": list(self.chain),
            "action": self.action,
            "resource": self.resource,
            "reasons": list(self.reasons),
            "grants": list(self.grants),
            "policies": list(self.policies),
            "epoch": self.epoch,
            "cached": self.cached,
        }
