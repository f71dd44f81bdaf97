"""Properties of the detector's statistics and baselines: median/MAD are the textbook
ones, order-free and robust; series and baselines survive a JSON round trip unchanged;
sets stay bounded."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.config import DetectSettings
from tether.detect.baseline import SET_CAP, Baseline
from tether.detect.engine import Engine
from tether.detect.hours import Hours
from tether.detect.model import AgentFacts
from tether.detect.stats import MIN_WINDOWS, Distinct, Limits, Series, Volume, median_mad
from tether.model import Event

values = st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=1, max_size=60)
LIMITS = Limits(mad_k=8.0, factor=3.0, min_count=30)


@given(values)
def test_median_mad_are_the_textbook_ones(xs: list[float]) -> None:
    med, mad = median_mad(xs)
    assert med == statistics.median(xs)
    assert mad == statistics.median([abs(x - med) for x in xs])


@given(values, st.randoms())
def test_median_mad_ignore_order(xs: list[float], rnd: object) -> None:
    shuffled = list(xs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert median_mad(shuffled) == median_mad(xs)


@given(st.lists(st.integers(1, 100), min_size=9, max_size=60), st.integers(10**6, 10**12))
def test_an_outlier_cannot_drag_the_median_out_of_the_data(xs: list[int], huge: int) -> None:
    """Breakdown: one window of any size moves the median at most to a neighbouring order
    statistic of the others, where an EWMA would follow it."""
    med, _ = median_mad([*xs, huge])
    assert min(xs) <= med <= max(xs)


def _fill(series: Series, windows: list[float], start: int = 0) -> None:
    for i, amount in enumerate(windows):
        series.add((start + i) * series.window + 1.0, amount, i + 1)


@given(st.lists(st.integers(1, 50), min_size=MIN_WINDOWS + 1, max_size=40))
def test_a_series_spikes_once_a_window_and_only_above_its_threshold(windows: list[int]) -> None:
    series = Series(300, 288, LIMITS)
    _fill(series, [float(w) for w in windows])
    series.add(len(windows) * 300 + 1.0, 0.0, 999)  # close the last window
    threshold = series.threshold
    assert threshold >= max(30, 3 * series.median)
    assert not series.spiking
    series.add(len(windows) * 300 + 2.0, threshold - 1, 1000)
    assert not series.spiking
    series.add(len(windows) * 300 + 3.0, 2.0, 1001)
    assert series.spiking


def test_a_series_judges_nothing_before_enough_windows_unless_cold() -> None:
    warm, cold = Series(60, 288, LIMITS), Series(60, 288, LIMITS, cold=True)
    for s in (warm, cold):
        s.add(1.0, 1000.0, 1)
    assert not warm.spiking and cold.spiking


@settings(max_examples=50)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.floats(0, 1e7, allow_nan=False)), max_size=80),
    st.sampled_from([Series, Volume]),
)
def test_a_series_round_trips_through_json(adds: list[tuple[int, float]], cls: type) -> None:
    series = cls(300, 16, LIMITS)
    t = 0.0
    for step, (gap, amount) in enumerate(adds):
        t += gap * 37.0
        series.add(t, amount, step + 1)
    data = json.loads(json.dumps(series.to_dict()))
    again = cls.from_dict(data, 300, 16, LIMITS)
    assert again.to_dict() == series.to_dict()
    assert (again.floor, again.above, again.spiking) == (series.floor, series.above, series.spiking)
    assert cls.from_dict(data, 600, 16, LIMITS).history == type(series.history)()  # new window


def test_a_volume_forgives_one_plausible_large_result_not_a_dump() -> None:
    volume = Volume(300, 288, Limits(8.0, 3.0, 1_000_000))
    for i in range(40):  # 40 windows of ten 10 kB..19 kB results
        for j in range(10):
            volume.add(i * 300 + j, 10_000 + 1000 * j, i * 10 + j)
    base = 40 * 300
    volume.add(base + 1, 1_100_000, 1)  # one result 70 times its usual size
    assert volume.spiking and 0 < volume.plausible < 1_100_000  # far outside its tail
    tail = Volume(300, 288, Limits(8.0, 3.0, 1_000_000))
    for i in range(40):  # results spread over two orders of magnitude (1 kB .. 100 kB)
        for j in range(10):
            tail.add(i * 300 + j, 10 ** (3 + ((i * 10 + j) % 5) / 2), i * 10 + j)
    tail.add(base + 1, 1_100_000, 1)
    assert tail.value >= tail.threshold  # it would spike, were it not one of its own kind
    assert not tail.spiking and tail.plausible > 1_100_000  # one of its own kind: forgiven
    for k in range(2, 11):
        tail.add(base + k, 1_100_000, k)
    assert tail.spiking  # ten of them in a window: not one outlier


def test_distinct_counts_each_item_once_and_is_capped() -> None:
    distinct = Distinct(600, 288, minimum=15, factor=3.0, cap=5)
    assert [distinct.add(1.0, item, n) for n, item in enumerate("aabcdefg")] == [
        True, False, True, True, True, True, False, False,
    ]  # fmt: skip
    assert len(distinct.items) == 5 and list(distinct.evidence) == [0, 2, 3, 4, 5]


def test_hours_halve_past_their_cap() -> None:
    hours = Hours(cap=10)
    for _ in range(11):
        hours.add(3)
    assert hours.total == 5.5 and hours.share(3, 0) == 1.0


_AT = datetime(2026, 1, 5, 9, tzinfo=UTC)
_AGENT = "spiffe://tether.local/agent/prop"


class _Facts:
    def agent(self, agent_id: str) -> AgentFacts | None:
        return AgentFacts(agent_id, "worker", "o@example.com", "active")


actions = st.lists(
    st.tuples(
        st.integers(0, 3_600),  # seconds since the previous event
        st.sampled_from(["tools/call", "resources/read", "delegate", "credentials/read"]),
        st.sampled_from(["s/a", "s/b/c", "t/x", "spiffe://tether.local/agent/other"]),
        st.booleans(),
        st.integers(0, 10**7),
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(actions)
def test_a_baseline_round_trips_through_json(steps: list[tuple[int, str, str, bool, int]]) -> None:
    engine = Engine(DetectSettings(learning=timedelta(hours=1)), _Facts(), lambda a: None)
    at, seq = _AT, 0
    events = []
    for gap, action, resource, allowed, size in steps:
        at += timedelta(seconds=gap)
        seq += 1
        events.append(Event(seq, at, "decision", _AGENT, _AGENT, (_AGENT,), action, resource,
                            "allow" if allowed else "deny"))  # fmt: skip
        seq += 1
        events.append(Event(seq, at, "tool.result", _AGENT, _AGENT, (_AGENT,), action, resource,
                            detail={"size": size}))  # fmt: skip
    engine.feed(events)
    for data in engine.dirty().values():
        again = Baseline.from_dict(json.loads(json.dumps(data)), engine.settings)
        assert again.to_dict() == data


def test_a_baseline_set_is_capped_and_marked_saturated() -> None:
    baseline = Baseline(_AGENT, DetectSettings())
    assert all(baseline.learn("tool", f"s/t{i}") for i in range(SET_CAP))
    assert not baseline.learn("tool", "s/one-too-many")
    assert len(baseline.sets["tool"]) == SET_CAP and baseline.saturated == {"tool"}
    assert baseline.to_dict()["saturated"] == ["tool"]


def test_an_unknown_baseline_version_is_refused() -> None:
    data = Baseline(_AGENT, DetectSettings()).to_dict()
    try:
        Baseline.from_dict({**data, "version": 99}, DetectSettings())
    except ValueError as exc:
        assert "version 99" in str(exc)
    else:
        raise AssertionError("version 99 accepted")
