"""Validators at the boundary: names, IDs, emails, labels, durations, public keys."""

from __future__ import annotations

import base64
import re
import string
from datetime import timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tether.agent_keys import generate_key_pair, parse_public_key
from tether.durations import MAX_DURATION, format_duration, parse_duration
from tether.errors import InvalidRequest
from tether.model import parse_agent_ref, parse_email, parse_labels, parse_name

NAME_RULE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
name_chars = st.sampled_from(string.ascii_lowercase + string.digits + "._-")


@given(st.text(max_size=80))
def test_any_text_is_a_valid_name_or_a_clear_error(text: str) -> None:
    valid = NAME_RULE.fullmatch(text) is not None and ".." not in text
    if valid:
        assert parse_name(text) == text
    else:
        with pytest.raises(InvalidRequest, match="invalid agent name"):
            parse_name(text)


@given(st.text(name_chars, min_size=1, max_size=63))
def test_valid_names_round_trip_through_spiffe_ids(text: str) -> None:
    assume(text[0].isalnum() and ".." not in text)
    assert parse_name(text) == text
    assert parse_agent_ref(f"spiffe://tether.local/agent/{text}", "tether.local") == text


@given(st.text(max_size=40))
def test_accepted_names_are_safe_path_segments(text: str) -> None:
    try:
        name = parse_name(text)
    except InvalidRequest:
        return
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    assert not name.startswith((".", "-", "_")) and "\x00" not in name


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "..", "a..b", ".hidden", "-x", "UPPER", "x" * 64, "a b", "é", "a\x00b", "../etc"],
)
def test_bad_names(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_name(bad)


@pytest.mark.parametrize(
    "ref",
    [
        "spiffe://other.domain/agent/x",
        "spiffe://tether.local/agent/x/y",
        "spiffe://tether.local/workload/x",
        "spiffe://tether.local/agent/..",
        "spiffe://tether.local/agent/",
    ],
)
def test_bad_agent_refs(ref: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_agent_ref(ref, "tether.local")


@given(st.integers(min_value=1, max_value=999_999_999), st.sampled_from("smhd"))
def test_durations_parse_and_format(n: int, unit: str) -> None:
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    text = f"{n}{unit}"
    if seconds > MAX_DURATION.total_seconds():
        with pytest.raises(InvalidRequest, match="longer than"):
            parse_duration(text)
        return
    value = parse_duration(text)
    assert value == timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=20))
def test_any_text_is_a_duration_or_a_clear_error(text: str) -> None:
    if re.fullmatch(r"[0-9]{1,9}[smhd]", text) is None:
        with pytest.raises(InvalidRequest, match="invalid duration"):
            parse_duration(text)


@pytest.mark.parametrize(
    "bad", ["banana", "", "0s", "-5m", "1.5h", "5", "5 m", "5M", "10y", "3651d", "1e3s", "٣s"]
)
def test_bad_durations(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid duration"):
        parse_duration(bad)


def test_emails() -> None:
    assert parse_email(" Alice@Example.COM ") == "alice@example.com"
    for bad in [
        "",
        "alice",
        "alice@",
        "@example.com",
        "a@b",
        "a b@example.com",
        "a@" + "x" * 260 + ".com",
    ]:
        with pytest.raises(InvalidRequest, match="invalid email"):
            parse_email(bad)


@given(st.text(max_size=60))
def test_any_text_is_an_email_or_a_clear_error(text: str) -> None:
    try:
        email = parse_email(text)
    except InvalidRequest as exc:
        assert "invalid email" in str(exc)
        return
    assert email == email.lower().strip() and email.count("@") == 1


def test_labels() -> None:
    assert parse_labels({"b": "2", "a": "1"}) == {"a": "1", "b": "2"}
    with pytest.raises(InvalidRequest, match="too many"):
        parse_labels({f"k{i}": "v" for i in range(33)})
    with pytest.raises(InvalidRequest, match="label value"):
        parse_labels({"k": "v" * 257})


def test_public_keys() -> None:
    pair = generate_key_pair()
    assert parse_public_key(pair.public_key) == pair.public_key
    assert "PRIVATE" not in repr(pair)
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(pair.private_pem, None)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(pem.decode()) == pair.public_key


@given(st.text(max_size=100))
def test_any_text_is_a_public_key_or_a_clear_error(text: str) -> None:
    try:
        key = parse_public_key(text)
    except InvalidRequest as exc:
        assert "public_key" in str(exc)
        return
    assert len(base64.urlsafe_b64decode(key + "=")) == 32
