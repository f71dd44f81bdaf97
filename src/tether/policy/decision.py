"""What is asked of the decision point, and what it answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["AccessRequest", "Decision", "canonical"]


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys: the form requests hold (hashable, comparable)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """May ``principal`` do ``action`` on ``resource``, for ``on_behalf_of`` through ``chain``?

    ``chain`` lists the agents the task passed through before ``principal`` (the acting
    one), earliest first. ``scope``, when given, is the token's list of ``ACTION:RESOURCE``
    permissions: the request must fall inside one of them. ``groups`` are the person's
    identity-provider groups (the person of ``on_behalf_of``, or the principal when it is
    a person), sorted: Cedar sees them as ``User.groups``, and as a field of the request
    they are part of the decision cache key.

    Server-computed fields (set by the gateway, never by a caller of the API):

    - ``args``: the call's arguments as canonical JSON (a tool's ``arguments``, a prompt's
      ``arguments``, ``{"uri": ...}`` for a resource), which Cedar sees as ``context.args``
      (:mod:`tether.policy.args`); ``None`` when the request carries none.
    - ``session``: canonical JSON ``{label: {"seq": N, "resource": R}}``, the labels the
      work has touched and the latest decision event that touched each; Cedar sees
      ``context.session.labels``.
    - ``approval``: the ID of a granted approval the gateway consumed for this very call.
    - ``http``: an API call's request through the egress proxy as canonical JSON
      (``{"method", "path", "query", "headers", "body"}``, :mod:`tether.egress`), which
      Cedar sees as ``context.http``; ``None`` for anything else.
    """

    principal: str
    action: str
    resource: str
    on_behalf_of: str | None = None
    chain: tuple[str, ...] = ()
    context: str = ""  # extra Cedar context, as canonical JSON (hashable: requests key the cache)
    scope: tuple[str, ...] | None = None
    groups: tuple[str, ...] = ()
    args: str | None = None
    session: str = ""
    approval: str = ""
    http: str | None = None

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
        args: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
        approval: str = "",
        http: dict[str, Any] | None = None,
    ) -> AccessRequest:
        return cls(
            principal=principal,
            action=action,
            resource=resource,
            on_behalf_of=on_behalf_of,
            chain=tuple(chain),
            context=canonical(context) if context else "",
            scope=tuple(scope) if scope is not None else None,
            groups=tuple(sorted(set(groups))),
            args=canonical(args) if args is not None else None,
            session=canonical(session) if session else "",
            approval=approval,
            http=canonical(http) if http is not None else None,
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
    # held, not refused: every reason is a rule that lets the call through once a person
    # approves it, and this says who may (owner | admin)
    approval: str | None = None
    labels: tuple[str, ...] = ()  # the resource's labels as the decision saw them
    session: str = ""  # the request's session labels (canonical JSON), when a policy read them
    args_digest: str = ""  # SHA-256 of the request's canonical arguments, when it had any
    seq: int | None = None  # the sequence number of its event, once recorded
    # the budgets it was charged (or found exhausted), canonical JSON of a list of
    # {grant, limit, used, left, window_start, resets_at}: set by tether.budgets
    budget: str = ""

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
            "approval": self.approval,
            "labels": list(self.labels),
            "session": json.loads(self.session) if self.session else {},
            "args_digest": self.args_digest,
            "seq": self.seq,
            "budget": json.loads(self.budget) if self.budget else [],
        }
