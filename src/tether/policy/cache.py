"""The decision cache's key, and what a decision (cached or fresh) says of the very
request it answers.

The key is the request without the fields only decision inputs read (``args``,
``session``, ``approval``) and the key part of every input the policies read
(:mod:`tether.policy.inputs`): calls that differ only in what no policy reads share a
decision. :func:`finish` then adds what belongs to this request alone: its arguments'
digest, its session (when a policy read it) and the allow that a consumed approval makes
of a held decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import fields
from datetime import datetime
from typing import Any

from tether.policy.decision import AccessRequest, Decision
from tether.policy.inputs import DecisionInput, Uncachable

__all__ = ["cache_key", "finish"]

# the request's fields that key the cache themselves: all but those only inputs read
_KEYED = tuple(
    f.name for f in fields(AccessRequest) if f.name not in ("args", "session", "approval", "http")
)


def cache_key(
    keyed: tuple[DecisionInput, ...], request: AccessRequest, now: datetime
) -> Hashable | None:
    """The request without its arguments, session and approval, and the key part of every
    input the policies read (the arguments' and the session's among them, when read);
    ``None`` when one of them may not be cached."""
    parts: list[tuple[str, Hashable]] = []
    for source in keyed:
        part = source.key(request, now)
        if isinstance(part, Uncachable):
            return None
        if part is not None:
            parts.append((source.name, part))
    return (*(getattr(request, name) for name in _KEYED), tuple(parts))


def finish(decision: Decision, request: AccessRequest) -> Decision:
    """What a decision says of this very request: its arguments' digest, its session when
    policies read it, and the allow a consumed approval makes of a held decision."""
    changes: dict[str, Any] = {}
    if request.args is not None:
        changes["args_digest"] = hashlib.sha256(
            request.args.encode("utf-8", "surrogatepass")
        ).hexdigest()
    if decision.session and decision.session != request.session:
        changes["session"] = request.session
    if decision.approval is not None and request.approval:
        changes.update(
            allowed=True,
            approval=None,
            reasons=(f"allowed with approval {request.approval}", *decision.reasons),
        )
    return _amended(decision, changes) if changes else decision


_DECISION_FIELDS = tuple(f.name for f in fields(Decision))


def _amended(decision: Decision, changes: dict[str, Any]) -> Decision:
    """``dataclasses.replace(decision, **changes)`` at a third of its cost (it runs on
    every decision with arguments): a field-by-field copy, as Decision has no checks of
    its own to run."""
    copy = object.__new__(Decision)
    for name in _DECISION_FIELDS:
        value = changes[name] if name in changes else getattr(decision, name)
        object.__setattr__(copy, name, value)
    return copy
