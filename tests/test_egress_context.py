"""``context.http`` as rules see it (:mod:`tether.egress.context`), grant conditions typed
on it (:func:`tether.grants.http_read_type`), and the detector's view of egress traffic
(:mod:`tether.detect.observe`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cedarpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.cedar_schema import schema_text
from tether.config import EgressSettings
from tether.detect.observe import RESULT, SERVER, observe
from tether.egress.context import Undecidable, http_context
from tether.grants import http_read_type
from tether.model import Event

SETTINGS = EgressSettings(body_max_bytes=64)
JSON = [("content-type", "application/json")]


def _context(
    body: bytes = b"", headers: list[tuple[str, str]] | None = None, query: tuple = ()
) -> dict:
    return http_context("POST", "a/b", query, headers or [], body, SETTINGS)


def test_the_record_holds_method_path_query_selected_headers_and_the_json_object() -> None:
    found = _context(
        b'{"amount": 5, "to": {"iban": "x"}}',
        [("Content-Type", "application/json"), ("X-Secret", "s"), ("Accept", "*/*")],
        (("per_page", "10"),),
    )
    assert found == {
        "method": "POST",
        "path": "a/b",
        "query": {"per_page": "10"},
        "headers": {"content-type": "application/json", "accept": "*/*"},
        "body": {"amount": 5, "to": {"iban": "x"}},
    }


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", JSON),  # no body
        (b"[1, 2]", JSON),  # JSON, not an object
        (b"42", []),
        (b"amount=5000", [("content-type", "application/x-www-form-urlencoded")]),
        (b"\xff\xfe binary", []),
        (b"x" * 100, []),  # large, and not JSON-like
    ],
)
def test_a_body_that_is_no_json_object_is_absent(body: bytes, headers: list) -> None:
    assert "body" not in _context(body, headers)


@pytest.mark.parametrize(
    ("body", "headers", "why"),
    [
        (b'{"a": 1, "a": 2}', [], "repeats the member 'a'"),
        (b'{"x": {"a": 1, "a": 2}}', [], "repeats the member 'a'"),
        (b'{"a": NaN}', [], "does not parse"),
        (b'{"a": 1', [], "does not parse"),
        (b"not json", JSON, "does not parse"),
        (b'{"a": "' + b"x" * 100 + b'"}', [], "body_max_bytes"),
        (b"x" * 100, JSON, "body_max_bytes"),
    ],
)
def test_a_body_a_rule_could_read_two_ways_is_undecidable(
    body: bytes, headers: list, why: str
) -> None:
    with pytest.raises(Undecidable, match=why):
        _context(body, headers)


def test_a_body_nested_beyond_the_parser_is_undecidable() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(Undecidable, match="nested too deep"):
        http_context("POST", "", (), [], deep, EgressSettings(body_max_bytes=1_000_000))


def test_a_repeated_query_name_or_selected_header_is_undecidable() -> None:
    with pytest.raises(Undecidable, match="query parameter 'a' is sent more than once"):
        _context(query=(("a", "1"), ("a", "2")))
    with pytest.raises(Undecidable, match="header 'accept'"):
        _context(headers=[("accept", "a"), ("Accept", "b")])
    assert _context(headers=[("x-other", "a"), ("x-other", "b")])["headers"] == {}


@given(st.dictionaries(st.text(max_size=8), st.integers(-(2**53), 2**53), max_size=5))
def test_any_small_json_object_is_the_body(value: dict) -> None:
    text = json.dumps(value).encode()
    if len(text) <= 64:
        assert _context(text, JSON).get("body", {}) == value


@pytest.mark.parametrize(
    ("condition", "valid"),
    [
        ('context.http.query.per_page == "10"', True),
        ('context.http.headers["content-type"] like "*json" && context.http.method == "GET"', True),
        ("context.http has body && context.http.body has n && context.http.body.n < 10", True),
        ('context.http.path like "repos/acme/*"', True),
        ("context.http.body.n < 10", False),  # a body field unguarded is a String
        ("context.http.nope == 1", False),
    ],
)
def test_grant_conditions_on_context_http_are_typed_from_what_they_read(
    condition: str, valid: bool
) -> None:
    text = f"permit (principal, action, resource) when {{ {condition} }};"
    typed = cedarpy.Schema.from_str(schema_text("{}", http_read_type(text)))
    assert cedarpy.validate_policies(text, typed).validation_passed is valid


def _event(kind: str, **fields: object) -> Event:
    agent = "spiffe://tether.local/agent/bot"
    return Event(
        seq=7, at=datetime(2026, 1, 1, tzinfo=UTC), type=kind, actor=agent, subject=agent, **fields
    )  # type: ignore[arg-type]


def test_the_detector_sees_egress_results_and_destinations_like_tool_calls() -> None:
    result = _event("egress.result", resource="github/repos/x", detail={"size": 100, "sent": 5000})
    [seen] = observe(result)
    assert (seen.kind, seen.value, seen.amount) == (RESULT, "github/repos/x", 5100.0)
    allowed = _event("decision", action="POST", resource="github/gists", decision="allow")
    assert (SERVER, "github") in [(o.kind, o.value) for o in observe(allowed)]
    denied = _event("decision", action="POST", resource="github/gists", decision="deny")
    assert SERVER not in [o.kind for o in observe(denied)]
    refused = _event("egress.refused", action="GET", resource="github/*")
    assert [o.amount for o in observe(refused)] == [1.0]
