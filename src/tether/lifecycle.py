"""Agent states, the legal transitions between them, and the effective state on read.

active  --suspend-->  suspended  --resume-->  active
active | suspended  --(expires_at passes)-->  expired   (never resumable)
active  --(unowned for longer than the grace period)-->  suspended
active | suspended | expired  --retire-->  retired
any but retired | killed  --kill-->  killed              (irreversible)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tether.errors import IllegalTransition
from tether.model import AgentState

__all__ = ["TERMINAL", "check_transition", "effective_state"]

TERMINAL = frozenset({AgentState.RETIRED, AgentState.KILLED})

_ALLOWED: dict[AgentState, frozenset[AgentState]] = {
    AgentState.SUSPENDED: frozenset({AgentState.ACTIVE}),
    AgentState.ACTIVE: frozenset({AgentState.SUSPENDED}),
    AgentState.RETIRED: frozenset({AgentState.ACTIVE, AgentState.SUSPENDED, AgentState.EXPIRED}),
    AgentState.KILLED: frozenset({AgentState.ACTIVE, AgentState.SUSPENDED, AgentState.EXPIRED}),
}

_VERB = {
    AgentState.SUSPENDED: "suspend",
    AgentState.ACTIVE: "resume",
    AgentState.RETIRED: "retire",
    AgentState.KILLED: "kill",
}


def effective_state(
    stored: AgentState,
    *,
    now: datetime,
    expires_at: datetime,
    unowned_since: datetime | None,
    grace: timedelta,
) -> AgentState:
    """The state as of ``now``: expiry and the unowned grace period apply on every read."""
    if stored in (AgentState.ACTIVE, AgentState.SUSPENDED) and expires_at <= now:
        return AgentState.EXPIRED
    if stored is AgentState.ACTIVE and unowned_since is not None and unowned_since + grace <= now:
        return AgentState.SUSPENDED
    return stored


def check_transition(name: str, current: AgentState, target: AgentState) -> None:
    """Raise :class:`IllegalTransition` with a clear reason unless ``current -> target``."""
    if current in _ALLOWED.get(target, frozenset()):
        return
    verb = _VERB.get(target, f"move to {target.value}")
    if current is target:
        raise IllegalTransition(f"agent {name} is already {current.value}")
    if current is AgentState.EXPIRED:
        raise IllegalTransition(
            f"cannot {verb} agent {name}: it is expired, and an expired agent cannot come "
            "back (register a new agent instead)"
        )
    if current in TERMINAL:
        raise IllegalTransition(f"cannot {verb} agent {name}: it is {current.value} for good")
    raise IllegalTransition(f"cannot {verb} agent {name}: it is {current.value}")
