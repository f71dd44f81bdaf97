"""A call's arguments as Cedar values (``tether.policy.args``): the mapping round-trips
what it accepts and refuses the rest with a reason, exactly as its rules say; and no
argument value makes the decision point raise or allow by error."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, spec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tether import AccessRequest, GrantSpec, Settings, Tether
from tether.policy.args import ESCAPES, Bounds, Undecidable, from_cedar, to_cedar
from tether.policy.decision import canonical

LONG = 2**63
DECIMAL_MAX = Decimal("922337203685477.5807")
ROOMY = Bounds(max_bytes=16_777_216, max_depth=64, max_values=1_000_000)

# ---- an independent statement of the rules --------------------------------------------


def _acceptable(value: Any, depth: int = 1) -> bool:
    """What the documented rules accept (``depth``: the containers around ``value``)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -LONG <= value < LONG
    if isinstance(value, float):
        if not math.isfinite(value):
            return False
        number = Decimal(repr(value))
        if _whole(number):
            return True
        fraction = -number.as_tuple().exponent  # type: ignore[operator]
        return fraction <= 4 and -DECIMAL_MAX - Decimal("0.0001") <= number <= DECIMAL_MAX
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return all(item is not None and _acceptable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return not ESCAPES.intersection(value) and all(
            _text(key) and (item is None or _acceptable(item, depth + 1))
            for key, item in value.items()
        )
    return False


def _whole(number: Decimal) -> bool:
    """A whole number within a Long, however it is written: mapped to a Long."""
    return -LONG <= number < LONG and number == number.to_integral_value()


def _text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _same(value: Any) -> Any:
    """A comparable form of a JSON value under the rules: sets for lists, members that are
    null dropped, numbers tagged apart from booleans."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("long", value)
    if isinstance(value, (float, Decimal)):
        number = Decimal(repr(value) if isinstance(value, float) else value)
        return ("long", int(number)) if _whole(number) else ("decimal", number)
    if isinstance(value, list):
        return frozenset(_same(item) for item in value)
    if isinstance(value, dict):
        return frozenset((k, _same(v)) for k, v in value.items() if v is not None)
    return ("string", value)


keys = st.one_of(st.text(max_size=8), st.sampled_from(sorted(ESCAPES)))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(places=4, allow_nan=False, allow_infinity=False).map(float),
    st.text(max_size=12),
    st.sampled_from(["..", "../etc/passwd", "a\x00b", "\ud800", "/srv/reports/x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
objects = st.dictionaries(keys, values, max_size=5)


@settings(max_examples=400, deadline=None)
@given(objects)
@example({"x": {"__entity": {"type": "Agent", "id": "helper"}}})
@example({"x": {"__extn": {"fn": "unknown", "arg": "args"}}})
@example({"x": [1, None]})
@example({"x": 0.00001, "y": 1.5})
def test_the_mapping_round_trips_what_it_accepts_and_refuses_the_rest(value: Any) -> None:
    try:
        mapped = to_cedar(canonical(value), ROOMY)
    except Undecidable as refused:
        assert not _acceptable(value), value
        assert str(refused)  # a reason, always
        return
    assert _acceptable(value), value
    assert _same(from_cedar(mapped)) == _same(value)
    json.dumps(mapped)  # Cedar's JSON form


def test_a_refusal_never_carries_a_value_nor_a_long_key() -> None:
    """Red team: a refusal's reason (kept in the audit log) quoted the number refused and
    every key on the way, whatever its length: ``{"pin": 4711.12345}`` put the PIN code in
    the log, and a megabyte key made a megabyte event."""
    for args, secret in (
        ({"pin": 4711.12345}, "4711"),
        ({"pin": 9e30}, "9"),
        ({"x" * 100_000: "\x00"}, "x" * 65),
        ({"a": {"sk-proj-" + "k" * 50: None, "Bearer tok": [None]}}, "Bearer tok"),
    ):
        with pytest.raises(Undecidable) as refused:
            to_cedar(canonical(args), ROOMY)
        why = str(refused.value)
        assert secret not in why.replace("args", "") and len(why) < 200, why


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": {"__entity": {"type": "Agent", "id": "x"}}}, "args.a: key '__entity' is a Cedar"),
        ({"__extn": {"fn": "unknown", "arg": "x"}}, "args: key '__extn'"),
        ({"a": [{"__expr": "1"}]}, "args.a[0]: key '__expr'"),
        ({"a": [None]}, "args.a[0]: null outside an object member"),
        ({"a": 2**63}, "args.a: integer outside Cedar's 64-bit range"),
        ({"a": 0.00001}, "args.a: a number with more than 4 fractional digits"),
        ({"a": 1e300}, "too large for a Cedar decimal"),
        ({"a": 1e19}, "outside a Cedar decimal's range"),
        ({"a": float("nan")}, "not JSON Cedar can hold: NaN"),
        ({"a": "x\x00y"}, "args.a: a string holds NUL"),
        ({"a": "\ud800"}, "args.a: a string holds a lone surrogate"),
    ],
)
def test_each_refusal_says_where_and_why(value: Any, why: str) -> None:
    with pytest.raises(Undecidable, match=None) as refused:
        to_cedar(canonical(value))
    assert why in str(refused.value)


def test_members_that_are_null_are_absent_and_numbers_are_typed() -> None:
    assert to_cedar(canonical({"a": None, "b": 1, "c": 1.5, "d": True, "e": ["x", "x"]})) == {
        "b": 1,
        "c": {"__extn": {"fn": "decimal", "arg": "1.5000"}},
        "d": True,
        "e": ["x", "x"],
    }
    assert to_cedar(None) == {}


@pytest.mark.parametrize("spelled", ["5", "5.0", "5.0000", "5E+0", "0.5e1", "50e-1", "5.00000"])
def test_a_whole_number_is_a_long_however_it_is_spelled(lab: Tether, spelled: str) -> None:
    """Red team: ``5.0`` was a Cedar ``decimal``, never equal to the ``Long`` 5, so a
    guardrail ``context.args.n == 5`` let ``{"n": 5.0}`` through (the same number to any
    upstream)."""
    assert to_cedar(f'{{"n":{spelled}}}') == {"n": 5}
    request = replace(
        AccessRequest.of("helper", "tools/call", "fs/pay"), args=f'{{"amount":{spelled}}}'
    )
    decision = lab.pdp.decide(request)
    assert not decision.allowed and "forbidden by policy no-five" in decision.reasons[0]


def test_the_bounds_make_arguments_undecidable() -> None:
    bounds = Bounds(max_bytes=1024, max_depth=3, max_values=10)
    with pytest.raises(Undecidable, match="more than the 1024 allowed"):
        to_cedar(canonical({"a": "x" * 1100}), bounds)
    assert to_cedar(canonical({"a": {"b": 1}}), bounds) == {"a": {"b": 1}}
    with pytest.raises(Undecidable, match="deeper than 3"):
        to_cedar(canonical({"a": {"b": {"c": [1]}}}), bounds)
    with pytest.raises(Undecidable, match="more than 10 values"):
        to_cedar(canonical({"a": list(range(11))}), bounds)
    with pytest.raises(Undecidable, match="not a JSON object"):
        to_cedar("[1]", bounds)
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(Undecidable):
        to_cedar(f'{{"a":{deep}}}', ROOMY)


# ---- the decision point never raises nor allows by error -------------------------------

DOTDOT = (
    '@id("no-dotdot") forbid (principal, action, resource) '
    'when { context.args has path && context.args.path like "*..*" };'
)


NO_FIVE = (
    '@id("no-five") forbid (principal, action, resource == Resource::"fs/pay") '
    "when { context.args has amount && context.args.amount == 5 };"
)


@pytest.fixture(scope="module")
def lab() -> Iterator[Tether]:
    with tempfile.TemporaryDirectory() as tmp:
        tether, _ = Tether.init(Settings.load(Path(tmp)))
        tether.registry.register(ADMIN, spec("helper"))
        tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "fs/*"))
        tether.guardrails.add(ADMIN, DOTDOT)
        tether.guardrails.add(ADMIN, NO_FIVE)
        yield tether
        tether.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(objects, st.sampled_from(["../etc/passwd", "/srv/../etc", "a/..", ".."]))
def test_a_hostile_value_never_slips_past_a_forbid(lab: Tether, extra: Any, path: str) -> None:
    request = AccessRequest.of(
        "helper", "tools/call", "fs/write_file", args={**extra, "path": path}
    )
    decision = lab.pdp.decide(request)
    assert not decision.allowed, decision.reasons


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(objects)
def test_no_argument_value_makes_the_decision_raise_or_allow_by_error(
    lab: Tether, value: Any
) -> None:
    decision = lab.pdp.decide(AccessRequest.of("helper", "tools/call", "fs/write_file", args=value))
    path = value.get("path")
    dotted = isinstance(path, str) and ".." in path
    if decision.allowed:
        assert _acceptable(value) and not dotted, (value, decision.reasons)
    elif not dotted:
        assert not _acceptable(value), decision.reasons
        assert decision.reasons[0].startswith("the call's arguments cannot be decided on: ")
