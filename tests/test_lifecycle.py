"""The state machine: legal moves, terminal states, and the effective state on read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import IllegalTransition
from tether.lifecycle import TERMINAL, check_transition, effective_state
from tether.model import AgentState

LEGAL = {
    (AgentState.ACTIVE, AgentState.SUSPENDED),
    (AgentState.SUSPENDED, AgentState.ACTIVE),
    (AgentState.ACTIVE, AgentState.RETIRED),
    (AgentState.SUSPENDED, AgentState.RETIRED),
    (AgentState.EXPIRED, AgentState.RETIRED),
    (AgentState.ACTIVE, AgentState.KILLED),
    (AgentState.SUSPENDED, AgentState.KILLED),
    (AgentState.EXPIRED, AgentState.KILLED),
}
states = st.sampled_from(list(AgentState))


@given(states, states)
def test_only_the_documented_moves_are_legal(current: AgentState, target: AgentState) -> None:
    if (current, target) in LEGAL:
        check_transition("x", current, target)
    else:
        with pytest.raises(IllegalTransition, match="x"):
            check_transition("x", current, target)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_never_move(terminal: AgentState) -> None:
    for target in AgentState:
        with pytest.raises(IllegalTransition):
            check_transition("x", terminal, target)


def test_expired_cannot_be_resumed_and_says_why() -> None:
    with pytest.raises(IllegalTransition, match="expired agent cannot come back"):
        check_transition("x", AgentState.EXPIRED, AgentState.ACTIVE)


base = datetime(2026, 1, 1, tzinfo=UTC)
offsets = st.integers(min_value=-10_000, max_value=10_000).map(lambda s: timedelta(seconds=s))


@given(states, offsets, st.one_of(st.none(), offsets), st.integers(0, 5000))
def test_effective_state(
    stored: AgentState, until_expiry: timedelta, unowned_for: timedelta | None, grace_s: int
) -> None:
    grace = timedelta(seconds=grace_s)
    unowned_since = None if unowned_for is None else base - unowned_for
    state = effective_state(
        stored, now=base, expires_at=base + until_expiry, unowned_since=unowned_since, grace=grace
    )
    live = stored in (AgentState.ACTIVE, AgentState.SUSPENDED)
    if live and until_expiry <= timedelta(0):
        assert state is AgentState.EXPIRED
    elif stored is AgentState.ACTIVE and unowned_for is not None and unowned_for >= grace:
        assert state is AgentState.SUSPENDED
    else:
        assert state is stored
    # Time never brings an agent back to active.
    if stored is not AgentState.ACTIVE:
        assert state is not AgentState.ACTIVE
