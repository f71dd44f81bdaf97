"""Risk scores (``tether.detect.risk``): the formula and its invariants, how they are
stored and read, and ``context.risk`` in Cedar end to end through ``Tether.authorize``:
cached per agent, never by moving the state epoch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from conftest import ADMIN, Clock, spec
from hypothesis import given
from hypothesis import strategies as st

from tether import AccessRequest, Denied, GrantSpec, InvalidRequest, Settings, Tether
from tether.detect.model import Alert, Finding
from tether.detect.risk import COUNTED, WEIGHTS, RiskInput, risk_score
from tether.principals import Principal
from tether.store import detect_risk

ALICE = "user:alice@example.com"
PAYMENTS_RAIL = (
    '@id("risky-payments")\n'
    "forbid (principal, action, resource) "
    'when { context.risk >= 70 && resource.path like "payments/*" };'
)
AT = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


def spiffe(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


def raise_(tether: Tether, agent: str, severity: str = "high", seq: int = 1) -> Alert:
    found = Finding(
        "first_use",
        severity,
        agent,
        (ALICE, spiffe(agent)),
        "new tool",
        (seq,),
        AT,  # type: ignore[arg-type]
    )
    with tether.store.write() as conn:
        [alert] = tether.alerts.raise_all(conn, [found])
    return alert


# ---- the formula ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severities", "score"),
    [
        ([], 0),
        (["low"], 10),
        (["medium"], 40),
        (["high"], 70),
        (["critical"], 90),
        (["low", "low"], 15),
        (["high", "low", "low"], 80),
        (["critical", "low", "medium"], 100),
        (["critical"] * 5, 100),
        (["unheard-of"], 90),  # an unknown severity weighs as a critical one
    ],
)
def test_the_formula(severities: list[str], score: int) -> None:
    assert risk_score(severities) == score


SEVERITY = st.sampled_from(sorted(WEIGHTS))
STATE = st.sampled_from(["open", "acknowledged", "resolved", "suppressed"])
ALERTS = st.lists(st.tuples(SEVERITY, STATE), max_size=30)


def _score(alerts: list[tuple[str, str]]) -> int:
    return risk_score(severity for severity, state in alerts if state in COUNTED)


@given(ALERTS, st.data())
def test_acknowledging_never_lowers_and_closing_never_raises(
    alerts: list[tuple[str, str]], data: st.DataObject
) -> None:
    before = _score(alerts)
    assert 0 <= before <= 100
    if not alerts:
        return
    index = data.draw(st.integers(0, len(alerts) - 1))
    severity, _ = alerts[index]
    for state, compare in (
        ("acknowledged", lambda after: after >= before if alerts[index][1] == "open" else True),
        ("resolved", lambda after: after <= before),
        ("suppressed", lambda after: after <= before),
    ):
        moved = [*alerts[:index], (severity, state), *alerts[index + 1 :]]
        assert compare(_score(moved)), (alerts, index, state)
    # and acknowledging an open alert leaves the score exactly as it was
    if alerts[index][1] == "open":
        acked = [*alerts[:index], (severity, "acknowledged"), *alerts[index + 1 :]]
        assert _score(acked) == before


@given(ALERTS, SEVERITY)
def test_a_new_alert_never_lowers_the_score(alerts: list[tuple[str, str]], severity: str) -> None:
    assert _score([*alerts, (severity, "open")]) >= _score(alerts)


# ---- stored and read -----------------------------------------------------------------


@pytest.fixture
def org(tether: Tether) -> Tether:
    for name in ("helper", "scout", "billing"):
        tether.registry.register(ADMIN, spec(name, owner="alice@example.com"))
        tether.grants.add(ADMIN, GrantSpec(name, "tools/call", "payments/*"))
        tether.grants.add(ADMIN, GrantSpec(name, "tools/call", "github/*"))
    tether.grants.add(ADMIN, GrantSpec(ALICE, "tools/call", "payments/*"))
    return tether


def test_scores_follow_the_alerts_states(org: Tether) -> None:
    first = raise_(org, "helper", "high", 1)
    assert org.risk.score("helper") == org.risk.score(spiffe("helper")) == 70
    second = raise_(org, "helper", "low", 2)
    assert org.risk.score("helper") == 75
    org.alerts.acknowledge(ADMIN, first.id)
    assert org.risk.score("helper") == 75  # acknowledging lowers nothing
    org.alerts.resolve(ADMIN, first.id, "expected")
    assert org.risk.score("helper") == 10
    org.alerts.suppress(ADMIN, second.id, "noise")
    assert org.risk.score("helper") == 0
    assert org.risk.score("scout") == 0
    with org.store.read() as conn:
        rows = {r.agent: (r.score, r.rev) for r in conn.execute(detect_risk.select())}
    assert rows[spiffe("helper")][0] == 0
    assert rows[spiffe("helper")][1] == 5  # one revision per write, store-wide


@pytest.fixture
def other(
    make_settings: Callable[..., Settings], org: Tether, clock: Clock
) -> Iterator[Callable[..., Tether]]:
    """Another process on the same store (and clock), with its own staleness bound."""
    opened: list[Tether] = []

    def open_(staleness_ms: int) -> Tether:
        tether = Tether.open(make_settings(decision_staleness_ms=staleness_ms), clock=clock)
        opened.append(tether)
        return tether

    yield open_
    for tether in opened:
        tether.close()


def test_another_process_sees_a_score_within_the_staleness_bound(
    org: Tether, other: Callable[..., Tether]
) -> None:
    far = other(200)
    assert far.risk.score("helper") == 0  # read now, trusted for 200 ms
    raise_(org, "helper", "critical")
    started = time.monotonic()
    while far.risk.score("helper") != 90:
        assert time.monotonic() - started < 2, "not seen within the bound"
        time.sleep(0.02)
    assert time.monotonic() - started >= 0.1  # it was cached, not read on every call


# ---- in Cedar ------------------------------------------------------------------------


def pay(principal: str = "helper", **kw: object) -> AccessRequest:
    return AccessRequest.of(principal, "tools/call", "payments/refund", **kw)  # type: ignore[arg-type]


def test_a_guardrail_on_context_risk_validates_and_denies_a_risky_agent(org: Tether) -> None:
    org.guardrails.add(ADMIN, PAYMENTS_RAIL)  # validated against the schema: risk is a Long
    assert org.authorize(pay()).allowed
    assert org.authorize(pay()).cached
    github = AccessRequest.of("helper", "tools/call", "github/create_issue")
    assert org.authorize(github).allowed
    raise_(org, "helper", "high")
    with pytest.raises(Denied, match="risky-payments") as denied:
        org.authorize(pay())
    assert not denied.value.detail.cached
    assert org.authorize(github).allowed  # the rail is about payments only
    low = raise_(org, "scout", "medium")
    assert org.authorize(pay("scout")).allowed  # 40 < 70
    org.alerts.acknowledge(ADMIN, low.id)
    assert org.authorize(pay("scout")).allowed


def test_the_chain_takes_its_riskiest_agent(org: Tether) -> None:
    org.guardrails.add(ADMIN, PAYMENTS_RAIL)
    through = pay("scout", on_behalf_of=ALICE, chain=["helper", "scout"])
    assert org.authorize(through).allowed
    alert = raise_(org, "helper", "critical")  # the delegating agent, not the acting one
    with pytest.raises(Denied, match="risky-payments"):
        org.authorize(through)
    assert org.authorize(pay("scout")).allowed  # scout alone is not risky
    org.alerts.resolve(ADMIN, alert.id, "false alarm")
    decision = org.authorize(through)
    assert decision.allowed and decision.cached  # the score it was cached under is back


def test_a_risk_change_moves_no_epoch_and_keeps_other_agents_decisions(org: Tether) -> None:
    org.guardrails.add(ADMIN, PAYMENTS_RAIL)
    for name in ("helper", "billing"):
        assert org.authorize(pay(name)).allowed
    epoch = org.epoch.current()
    org.epoch.invalidate()
    raise_(org, "helper", "critical")
    org.epoch.invalidate()
    assert org.epoch.current() == epoch  # the store's epoch did not move
    assert org.authorize(pay("billing")).cached  # billing's cached allow still stands
    with pytest.raises(Denied):
        org.authorize(pay("helper"))


def test_another_process_denies_within_the_bound_and_serves_no_stale_allow(
    org: Tether, other: Callable[..., Tether]
) -> None:
    org.guardrails.add(ADMIN, PAYMENTS_RAIL)
    far = other(150)
    assert far.authorize(pay()).allowed
    assert far.authorize(pay()).cached
    raise_(org, "helper", "high")
    started = time.monotonic()
    while True:
        try:
            far.authorize(pay())
        except Denied as exc:
            assert not exc.detail.cached
            break
        assert time.monotonic() - started < 2, "a stale allow outlived the bound"
        time.sleep(0.02)
    assert time.monotonic() - started < 1


def test_no_caller_sets_the_risk(org: Tether) -> None:
    with pytest.raises(InvalidRequest, match="'risk' is set by Tether"):
        org.authorize(pay(context={"risk": 0}))


def test_the_value_cedar_sees_is_the_one_the_cache_key_was_made_from() -> None:
    class Moving:
        """Scores that move on every read (a refresh between the key and the value)."""

        trust_domain = "tether.local"
        reads = 0

        def scores(self, names: tuple[str, ...]) -> tuple[int, ...]:
            self.reads += 1
            return tuple(10 * self.reads for _ in names)

    risk = RiskInput(Moving())  # type: ignore[arg-type]
    helper = (Principal("user", "alice@example.com"), Principal("agent", "helper"))
    assert risk.key(pay(on_behalf_of=ALICE), AT) == (10,)
    assert risk.value(pay(on_behalf_of=ALICE), helper, AT) == 10  # not 20
    assert risk.value(pay("scout"), (Principal("agent", "scout"),), AT) == 20  # read afresh
    assert risk.key(AccessRequest.of(ALICE, "tools/call", "payments/x"), AT) is None
