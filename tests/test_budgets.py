"""Budgets on grants (tether.budgets): calls and result bytes per fixed window, charged
on decisions in the transaction that records them, refused with the reset time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ADMIN, Clock, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from tether import AccessRequest, GrantSpec, StoreUnavailable, Tether
from tether.budgets import Budgets, usage, window_start
from tether.errors import InvalidGrant
from tether.limits import Limit, parse_limit
from tether.store import budget_usage
from tether.tokens import TOKEN_TYPE_ACCESS

ALICE = "user:alice@example.com"
TOOL = "github/create_issue"


def grant(tether: Tether, *limits: str, principal: str = "helper", resource: str = TOOL) -> str:
    return tether.grants.add(
        ADMIN, GrantSpec(principal, "tools/call", resource, limits=tuple(limits))
    ).id


@pytest.fixture
def helper(tether: Tether) -> Tether:
    tether.registry.register(ADMIN, spec("helper"))
    return tether


def call(tether: Tether, resource: str = TOOL, **kw):
    [decision] = tether.decide_all([AccessRequest.of("helper", "tools/call", resource, **kw)])
    return decision


def rows(tether: Tether) -> dict[tuple[str, str], int]:
    with tether.store.read() as conn:
        found = conn.execute(select(budget_usage)).all()
    return {(r.grant_id, r.metric): r.used for r in found}


def test_window_starts_are_aligned_on_the_unix_epoch() -> None:
    at = datetime(2026, 12, 7, 19, 20, 26, 500000, tzinfo=UTC)
    assert window_start(at, parse_limit("calls=1/1m")) == datetime(2026, 12, 7, 19, 20, tzinfo=UTC)
    assert window_start(at, parse_limit("calls=1/1h")) == datetime(2026, 12, 7, 19, tzinfo=UTC)
    assert window_start(at, parse_limit("calls=1/7s")).timestamp() % 7 == 0
    assert window_start(at, parse_limit("calls=1/1d")) == datetime(2026, 12, 7, tzinfo=UTC)


@given(
    metric=st.sampled_from(["calls", "bytes"]),
    amount=st.integers(1, 2**53 - 1),
    seconds=st.integers(1, 3650 * 86400),
)
def test_a_limit_reads_back_what_it_prints(metric: str, amount: int, seconds: int) -> None:
    """A decision's budget names each limit by ``str(limit)``; results are counted from it."""
    limit = Limit(metric, amount, timedelta(seconds=seconds))
    assert parse_limit(str(limit)) == limit


def test_calls_are_refused_with_the_reset_time_then_the_window_rolls_over(
    helper: Tether, clock: Clock
) -> None:
    g = grant(helper, "calls=3/1m")
    clock.advance(seconds=26)  # 12:00:26
    lefts = []
    for _ in range(3):
        d = call(helper)
        assert d.allowed and d.seq is not None
        lefts.append([r for r in d.reasons if r.startswith("budget of grant")])
    assert lefts[-1] == [f"budget of grant {g}: calls=3/1m has 0 left until 2026-01-01T12:01:00Z"]
    assert "has 2 left" in lefts[0][0]

    refused = call(helper)
    assert not refused.allowed
    assert refused.reasons == (
        f"budget exhausted: grant {g} allows calls=3/1m; 0 left until "
        "2026-01-01T12:01:00Z (in 34s)",
    )
    assert refused.grants == ()
    event = helper.events.get(refused.seq)
    assert event.decision == "deny" and event.reasons == refused.reasons
    [charge] = event.detail["budget"]
    assert charge == {
        "grant": g,
        "limit": "calls=3/1m",
        "used": 3,
        "left": 0,
        "window_start": "2026-01-01T12:00:00Z",
        "resets_at": "2026-01-01T12:01:00Z",
    }
    clock.advance(seconds=33)  # 12:00:59: still the same window
    assert "(in 1s)" in call(helper).reasons[0]
    clock.advance(seconds=1)  # 12:01:00: a new window
    fresh = call(helper)
    assert fresh.allowed
    recorded = helper.events.get(fresh.seq)
    assert recorded.detail["budget"][0]["used"] == 1
    with helper.store.read() as conn:
        windows = conn.execute(
            select(budget_usage.c.window_start, budget_usage.c.used).order_by(
                budget_usage.c.window_start
            )
        ).all()
    assert [w.used for w in windows] == [3, 1]


def test_every_limit_must_have_budget_left_and_the_last_reset_is_named(
    helper: Tether, clock: Clock
) -> None:
    g = grant(helper, "calls=2/1m", "calls=3/1h")
    assert call(helper).allowed and call(helper).allowed
    assert "calls=2/1m; 0 left until 2026-01-01T12:01:00Z (in 60s)" in call(helper).reasons[0]
    clock.advance(minutes=1)
    assert call(helper).allowed  # the hour's third
    clock.advance(minutes=1)
    refused = call(helper)
    assert refused.reasons == (
        f"budget exhausted: grant {g} allows calls=3/1h; 0 left until "
        "2026-01-01T13:00:00Z (in 3480s)",
    )
    # the minute's count was given back when the hour's refused the call
    assert rows(helper)[(g, "calls/60")] == 0
    assert rows(helper)[(g, "calls/3600")] == 3


def test_an_unlimited_grant_beats_a_limited_one_and_costs_no_store_access(
    helper: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(helper, "calls=1/1h")
    grant(helper)  # the same permission, unlimited

    def no_charge(*_a, **_k):
        raise AssertionError("an unlimited decision was charged")

    monkeypatch.setattr(Budgets, "charge", no_charge)
    reads = []
    live = helper.grants.live
    monkeypatch.setattr(helper.grants, "live", lambda: reads.append(1) or live())
    assert call(helper).allowed  # the state of this epoch is read once (the PDP's, ours)
    reads.clear()
    for _ in range(5):
        assert call(helper).allowed
    assert reads == []
    assert rows(helper) == {}


def test_the_first_limited_grant_with_budget_left_is_charged(helper: Tether) -> None:
    amounts = {grant(helper, "calls=1/1h"): 1, grant(helper, "calls=2/1h"): 2}
    first, second = sorted(amounts)
    taken = []
    for _ in range(3):
        d = call(helper)
        assert d.allowed
        taken.append(d.reasons[-1].split(":")[0].removeprefix("budget of grant "))
    assert taken == [first] * amounts[first] + [second] * amounts[second]  # first by ID, then
    assert rows(helper) == {
        (first, "calls/3600"): amounts[first],
        (second, "calls/3600"): amounts[second],
    }
    refused = call(helper)
    assert not refused.allowed
    assert [r.split(" allows")[0] for r in refused.reasons] == [
        f"budget exhausted: grant {first}",
        f"budget exhausted: grant {second}",
    ]


def test_each_identity_of_a_chain_is_charged_to_its_own_grants(helper: Tether) -> None:
    theirs = grant(helper, "calls=1/1h", principal=ALICE)
    grant(helper)  # the agent's own grant: unlimited
    assert call(helper, on_behalf_of=ALICE).allowed
    refused = call(helper, on_behalf_of=ALICE)
    assert not refused.allowed and theirs in refused.reasons[0]
    assert call(helper).allowed  # alone, the agent is not limited


def test_result_bytes_count_and_refuse_once_reached(helper: Tether, clock: Clock) -> None:
    g = grant(helper, "bytes=100/1h", "calls=10/1h")
    first = call(helper)
    assert first.allowed
    helper.budgets.spend(first, 80)
    helper.budgets.flush()
    assert rows(helper)[(g, "bytes/3600")] == 80
    second = call(helper)
    assert second.allowed  # 80 < 100: it may still run
    assert "bytes=100/1h has 20 left" in " ".join(second.reasons)
    helper.budgets.spend(second, 30)  # the call that crosses the limit completed
    refused = call(helper)  # pending bytes are written with the next charge
    assert refused.reasons == (
        f"budget exhausted: grant {g} allows bytes=100/1h; 0 left until "
        "2026-01-01T13:00:00Z (in 3600s)",
    )
    assert rows(helper)[(g, "calls/3600")] == 2  # the refused call took none
    clock.advance(hours=1)
    assert call(helper).allowed


def test_a_store_failure_while_charging_is_a_recorded_deny(
    helper: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(helper, "calls=5/1h")

    def down(*_a, **_k):
        raise StoreUnavailable("the store is unavailable; see the server log")

    monkeypatch.setattr(usage, "take", down)
    refused = call(helper)
    assert not refused.allowed
    assert refused.reasons == (
        "the budget could not be charged, denied: the store is unavailable; see the server log",
    )
    assert helper.events.get(refused.seq).decision == "deny"

    monkeypatch.setattr(helper.grants, "live", down)
    helper.budgets._known = None  # as after a change of state
    refused = call(helper)
    assert not refused.allowed
    assert "budgets could not be read" in refused.reasons[0]


def test_a_revoked_grant_and_unknown_bytes_fail_closed(helper: Tether) -> None:
    g = grant(helper, "calls=5/1h")
    [d] = [helper.pdp.decide(AccessRequest.of("helper", "tools/call", TOOL))]
    helper.grants.revoke(ADMIN, g)
    helper.budgets._known = (d.epoch, {})  # the state the decision saw is gone
    [recorded] = helper.record([d])
    assert not recorded.allowed
    assert recorded.reasons == (f"grant {g} is no longer live, denied",)


def test_old_windows_are_pruned_in_bounded_batches(helper: Tether, clock: Clock) -> None:
    g = grant(helper, "calls=5/1m")
    now = clock()
    with helper.store.write() as conn:
        conn.execute(
            insert(budget_usage),
            [
                {
                    "grant_id": g,
                    "metric": "calls/60",
                    "window_start": now - timedelta(days=1, minutes=2 + i),
                    "used": 1,
                }
                for i in range(5)
            ]
            + [{"grant_id": g, "metric": "calls/60", "window_start": now, "used": 1}],
        )
    assert helper.budgets.prune(now, batch=3) == 3
    assert helper.budgets.prune(now, batch=3) == 2
    assert helper.budgets.prune(now) == 0
    with helper.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(budget_usage)).scalar() == 1


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(amount=st.integers(1, 12), threads=st.integers(2, 6), each=st.integers(1, 5))
def test_concurrent_charges_never_exceed_the_amount(
    helper: Tether, amount: int, threads: int, each: int
) -> None:
    g = grant(helper, f"calls={amount}/1h")
    outcomes: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(each):
            d = call(helper)
            with lock:
                outcomes.append(d.allowed)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sum(outcomes) == min(amount, threads * each)
    assert rows(helper)[(g, "calls/3600")] == min(amount, threads * each)
    helper.grants.revoke(ADMIN, g)  # the next example starts from a fresh grant


def test_a_delegation_hop_is_charged_to_a_limited_delegate_grant(tether: Tether) -> None:
    """Token exchange decides its hop with the effect (decide_with_effect): a limited
    ``delegate`` grant is charged there too, and refused with the reset time."""
    for name in ("a", "b"):
        tether.registry.register(ADMIN, spec(name))
        tether.grants.add(ADMIN, GrantSpec(name, "tools/call", "github/*", reason="test"))
    g = tether.grants.add(ADMIN, GrantSpec("a", "delegate", "b", limits=("calls=1/1h",))).id
    a, b = (tether.registry.get(ADMIN, name) for name in ("a", "b"))
    token = tether.tokens.client_credentials(a, str(b.id), "tools/call:github/*").access_token
    tether.tokens.exchange(b, token, TOKEN_TYPE_ACCESS, tether.settings.issuer, None)
    with pytest.raises(InvalidGrant) as refused:
        tether.tokens.exchange(b, token, TOKEN_TYPE_ACCESS, tether.settings.issuer, None)
    assert f"budget exhausted: grant {g} allows calls=1/1h; 0 left until " in str(refused.value)
    hops = [e for e in tether.events.list(type="decision") if e.action == "delegate"]
    assert [h.decision for h in hops] == ["allow", "deny"]
    assert hops[0].detail["budget"][0]["used"] == 1


def test_a_batch_keeps_its_order_and_every_answer_is_recorded(helper: Tether) -> None:
    """An AuthZEN batch mixes unlimited, limited and refused requests: each answer comes
    back in its place, each on record (the limited ones with their charge)."""
    grant(helper, "calls=1/1h")
    grant(helper, resource="github/list_issues")
    asks = [
        AccessRequest.of("helper", "tools/call", r)
        for r in ("github/list_issues", TOOL, "github/delete_repo", TOOL, "github/list_issues")
    ]
    answers = helper.decide_all(asks)
    assert [d.allowed for d in answers] == [True, True, False, False, True]
    assert [d.resource for d in answers] == [a.resource for a in asks]
    assert "budget exhausted" in answers[3].reasons[0]
    events = {e.seq: e for e in helper.events.list(type="decision")}
    assert len(events) == 5
    for d in answers:
        assert events[d.seq].resource == d.resource
        assert events[d.seq].decision == ("allow" if d.allowed else "deny")
    assert events[answers[1].seq].detail["budget"][0]["used"] == 1
