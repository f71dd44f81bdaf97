"""The lean path's strict frame parser: one meaning or refused, and the JSON-RPC shape."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.gateway.frames import (
    INVALID_REQUEST,
    MAX_BODY,
    MAX_DEPTH,
    MAX_INT,
    PARSE_ERROR,
    FrameError,
    envelope,
    parse,
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_INT, MAX_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_sound_json_parses_to_what_the_standard_library_reads(value) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert parse(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b"[NaN]",
        b"[Infinity]",
        b"[-Infinity]",
        b"[1e400]",
        b"[9007199254740992]",
        b"[-9007199254740992]",
        b"[" + b"9" * 5000 + b"]",
        b'["\\ud800"]',
        b'["a\\udfffb"]',
        b'{"\\ud800":1}',
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * 100_000,
        b'"\xff"',
        b"",
        b"{} {}",
        b'{"a":1,}',
    ],
)
def test_a_body_with_more_than_one_meaning_or_none_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(FrameError) as refused:
        parse(body)
    assert refused.value.code == PARSE_ERROR


def test_the_limits_themselves_are_allowed() -> None:
    assert parse(f"[{MAX_INT},{-MAX_INT}]".encode()) == [MAX_INT, -MAX_INT]
    assert parse(b'["\\ud83d\\ude00"]') == ["\U0001f600"]  # a surrogate pair is text
    deepest = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse(deepest) is not None


def test_a_body_over_the_cap_is_refused_unread() -> None:
    with pytest.raises(FrameError, match="larger than"):
        parse(b" " * (MAX_BODY + 1))


@pytest.mark.parametrize(
    "value",
    [
        [],
        "x",
        {"id": 1, "method": "ping"},
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": True, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
        {"jsonrpc": "2.0", "id": None, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]},
    ],
)
def test_anything_but_one_json_rpc_message_is_an_invalid_request(value) -> None:
    with pytest.raises(FrameError) as refused:
        envelope(value)
    assert refused.value.code == INVALID_REQUEST


def test_requests_notifications_and_answers_are_told_apart() -> None:
    request = envelope({"jsonrpc": "2.0", "id": "a", "method": "tools/list"})
    assert (request.method, request.id, request.params, request.notification) == (
        "tools/list",
        "a",
        {},
        False,
    )
    assert envelope({"jsonrpc": "2.0", "method": "notifications/initialized"}).notification
    answer = envelope({"jsonrpc": "2.0", "id": 3, "result": {}})
    assert answer.method is None and answer.notification
