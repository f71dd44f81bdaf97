"""A call's arguments against the JSON types its tool's pinned ``inputSchema`` declares
(``tether.cedar_schema.args_mismatch``): the gateway refuses, when a rule reads
``context.args``, arguments an upstream would have to coerce."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.cedar_schema import args_mismatch

SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "fail": {"type": "boolean"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "opts": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
        "either": {"type": ["string", "null"]},
        "loose": {},
    },
}


@pytest.mark.parametrize(
    "args",
    [
        {"path": "/srv/a", "fail": True, "count": 3, "ratio": 0.5},
        {"count": 5.0, "ratio": 2},  # whole numbers are integers however spelled
        {"tags": ["a", "b"], "opts": {"deep": False}, "either": None, "loose": [1, "x"]},
        {"path": None},  # null: absent, as context.args has it
        {"unknown": "anything"},  # not in the schema: not checked here
    ],
)
def test_arguments_of_the_declared_types_pass(args: dict[str, Any]) -> None:
    assert args_mismatch(SCHEMA, args) is None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ({"fail": "true"}, "args.fail is a string, the tool's input schema says boolean"),
        ({"count": "5"}, "args.count is a string, the tool's input schema says integer"),
        ({"count": 1.5}, "args.count is a number, the tool's input schema says integer"),
        ({"path": 7}, "args.path is an integer, the tool's input schema says string"),
        ({"tags": "a"}, "args.tags is a string, the tool's input schema says array"),
        ({"tags": ["a", 1]}, "args.tags[] is an integer, the tool's input schema says string"),
        ({"opts": {"deep": "yes"}}, "args.opts.deep is a string, the tool's input schema says"),
        ({"either": 3}, "args.either is an integer, the tool's input schema says string or null"),
    ],
)
def test_a_value_an_upstream_would_coerce_is_named(args: dict[str, Any], said: str) -> None:
    found = args_mismatch(SCHEMA, args)
    assert found is not None and found.startswith(said)


def test_no_schema_or_an_odd_one_checks_nothing() -> None:
    assert args_mismatch(None, {"x": 1}) is None
    assert args_mismatch({"type": 5, "properties": []}, {"x": 1}) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(sorted(SCHEMA["properties"])), JSON, max_size=6))
def test_any_arguments_are_judged_without_raising(args: dict[str, Any]) -> None:
    found = args_mismatch(SCHEMA, args)
    assert found is None or "the tool's input schema says" in found
