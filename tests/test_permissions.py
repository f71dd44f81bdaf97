"""Permissions without a store: pattern semantics, the validators, and the Cedar form.

The Python matcher (:func:`pattern_matches`) is the reference; the Cedar condition that
grants compile to (:func:`cedar_match`) must agree with it on every resource.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import cedarpy
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tether.errors import InvalidRequest
from tether.grants import Grant
from tether.permissions import (
    ACTIONS,
    Permission,
    cedar_match,
    check_action,
    check_pattern,
    check_resource,
    is_broad,
    pattern_matches,
)
from tether.policy.schema import schema
from tether.principals import Principal

AGENT_ID = "spiffe://tether.local/agent/helper"
PROPERTY = settings(max_examples=400, deadline=None)


def cedar_allows(grant_action: str, pattern: str, action: str, path: str) -> bool:
    """Evaluate the grant's Cedar form for one concrete request, as the PDP builds it."""
    policy = f"permit(principal, action, resource) when {{ {cedar_match(grant_action, pattern)} }};"
    entities: list[dict[str, Any]] = [
        {
            "uid": {"type": "Resource", "id": path},
            "attrs": {"path": path, "depth": path.count("/") + 1},
            "parents": [],
        },
        {
            "uid": {"type": "Agent", "id": "x"},
            "attrs": {"owner": "alice@example.com", "state": "active", "kind": "k", "parent": ""},
            "parents": [],
        },
    ]
    request = {
        "principal": {"type": "Agent", "id": "x"},
        "action": {"type": "Action", "id": action},
        "resource": {"type": "Resource", "id": path},
        "context": {},
    }
    result = cedarpy.is_authorized(request, policy, entities)
    assert result.diagnostics.errors == [], result.diagnostics.errors
    return bool(result.allowed)


# ---- segment semantics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("github/*", "github/create_issue", True),
        ("github/*", "github/a/b", False),
        ("github/*", "gitlab/x", False),
        ("github/*", "github", False),
        ("fs/read_*", "fs/read_file", True),
        ("fs/read_*", "fs/read_", True),
        ("fs/read_*", "fs/write_file", False),
        ("fs/read_*", "fs/read_x/y", False),
        ("fs/docs/**", "fs/docs/a", True),
        ("fs/docs/**", "fs/docs/a/b", True),
        ("fs/docs/**", "fs/docs/a/b/c/d", True),
        ("fs/docs/**", "fs/docs", False),
        ("fs/docsx/**", "fs/docs/a", False),
        ("fs/docs/**", "fs/docsx/a", False),
        ("fs/docs/**", "xfs/docs/a", False),
        ("**", "a", True),
        ("**", "a/b/c", True),
        ("**", AGENT_ID, True),
        ("*", "a", True),
        ("*", "a/b", False),
        ("*/*", "a/b", True),
        ("*/*", "a", False),
        ("*/*", "a/b/c", False),
        ("a*b", "ab", True),
        ("a*b", "axyb", True),
        ("a*b", "ax/yb", False),
        ("github/create_issue", "github/create_issue", True),
        ("github/create_issue", "github/create_issuex", False),
        ("a.b", "axb", False),  # '.' is literal, not a regex wildcard
    ],
)
def test_pattern_matches_segment_semantics(pattern: str, resource: str, expected: bool) -> None:
    assert check_pattern("tools/call", pattern) == pattern
    assert pattern_matches(pattern, resource) is expected
    assert cedar_allows("tools/call", pattern, "tools/call", resource) is expected


@given(st.lists(st.text("abc_-.", min_size=1, max_size=5), min_size=1, max_size=6))
@PROPERTY
def test_star_matches_exactly_one_segment(segments: list[str]) -> None:
    path = "/".join(segments)
    stars = "/".join("*" for _ in segments)
    assert pattern_matches(stars, path)
    assert not pattern_matches(stars + "/*", path)
    if len(segments) > 1:
        assert not pattern_matches("/".join("*" for _ in segments[1:]), path)
    assert pattern_matches("**", path)


# ---- the validators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "github/*",
        "github/create_issue",
        "fs/read_*",
        "fs/docs/**",
        "**",
        "*",
        "*/x",
        "a*b*c/d",
        "A-Z.a_z~0:9@x+y=z,w",
        "a" * 512,
        "/".join(["a"] * 16),
    ],
)
def test_check_pattern_accepts_good_patterns(pattern: str) -> None:
    assert check_pattern("tools/call", pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "bad segment"),
        ("a//b", "bad segment"),
        ("/a", "bad segment"),
        ("a/", "bad segment"),
        ("a/../b", "bad segment"),
        ("..", "bad segment"),
        ("a/./b", "bad segment"),
        ("**/a", "may only be the last segment"),
        ("a/**/b", "may only be the last segment"),
        ("a/**/**", "may only"),
        ("a*/**", "may only follow literal segments"),
        ("*/**", "may only follow literal segments"),
        ("a**b", "must be a whole segment"),
        ("a/b**", "must be a whole segment"),
        ('a"b', "bad segment"),
        ("a'b", "bad segment"),
        ("a\\b", "bad segment"),
        ("a b", "bad segment"),
        ("a\nb", "bad segment"),
        ("a}b", "bad segment"),
        ("é", "bad segment"),
        ("a" * 513, "invalid resource pattern"),
        ("/".join(["a"] * 17), "more than 16 segments"),
    ],
)
def test_check_pattern_refuses_bad_patterns(pattern: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_pattern("tools/call", pattern)


def test_check_pattern_for_delegate_takes_an_agent_id_or_star() -> None:
    assert check_pattern("delegate", "*") == "*"
    assert check_pattern("delegate", AGENT_ID) == AGENT_ID
    assert check_pattern("*", "*") == "*"
    for bad in ("**", "helper", "spiffe://tether.local/agent/*", "github/*"):
        with pytest.raises(InvalidRequest, match="delegate takes an agent ID"):
            check_pattern("delegate", bad)


@pytest.mark.parametrize(
    "resource",
    ["github/create_issue", "a", "A-Z.a_z~0:9@x+y=z,w/x", "a" * 512, "/".join(["a"] * 16)],
)
def test_check_resource_accepts_concrete_paths(resource: str) -> None:
    assert check_resource("tools/call", resource) == resource


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "github/*",
        "**",
        "a//b",
        "/a",
        "a/",
        "..",
        "a/../b",
        ".",
        "a/./b",
        'a"b',
        "a\\b",
        "a b",
        "é",
        "a" * 513,
        "/".join(["a"] * 17),
    ],
)
def test_check_resource_refuses_bad_paths(resource: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid resource"):
        check_resource("tools/call", resource)


def test_check_resource_for_delegate() -> None:
    assert check_resource("delegate", AGENT_ID) == AGENT_ID
    for bad in ("*", "helper", "spiffe://tether.local/agent/", "spiffe://Tether/agent/x"):
        with pytest.raises(InvalidRequest, match="delegate takes an agent ID"):
            check_resource("delegate", bad)


@pytest.mark.parametrize("action", ACTIONS)
def test_check_action_accepts_known_actions(action: str) -> None:
    assert check_action(action) == action


@pytest.mark.parametrize("action", ["", "*", "tools/list", "get", "Tools/call", "tools/call "])
def test_check_action_refuses_unknown_actions(action: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid action"):
        check_action(action)


def test_check_action_star_only_when_allowed() -> None:
    assert check_action("*", allow_any=True) == "*"
    with pytest.raises(InvalidRequest, match="invalid action"):
        check_action("**", allow_any=True)


@given(st.text(alphabet="ab*/.\"'\\ {};\n:-", max_size=20))
@PROPERTY
@example('a"; permit(principal, action, resource); //')
@example("a} || true || {")
def test_any_accepted_pattern_compiles_to_one_valid_cedar_condition(text: str) -> None:
    """Either a clear refusal, or a pattern whose Cedar form parses as one policy that
    validates against Tether's schema (nothing in a pattern can inject Cedar)."""
    try:
        pattern = check_pattern("tools/call", text)
    except InvalidRequest:
        return
    policy = f"permit(principal, action, resource) when {{ {cedar_match('tools/call', pattern)} }};"
    assert len(cedarpy.PolicySet.from_str(policy)) == 1
    assert cedarpy.validate_policies(policy, schema()).validation_passed
    assert not any(ch in pattern for ch in "\"'\\ {};\n")


# ---- breadth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "pattern", "broad"),
    [
        ("*", "github/create_issue", True),
        ("*", "*", True),
        ("tools/call", "*", True),
        ("tools/call", "**", True),
        ("tools/call", "*/create_issue", True),
        ("tools/call", "*/**", True),
        ("delegate", "*", True),
        ("tools/call", "github/*", False),
        ("tools/call", "github/**", False),
        ("tools/call", "github/create_issue", False),
        ("tools/call", "fs/read_*", False),
        ("tools/call", "a*/b", True),  # issue 13 item 9: a wildcard in the server segment
        ("tools/call", "*e*/*", True),
        ("tools/call", "*-*/*", True),
        ("tools/call", "github/*e*", False),
        ("delegate", AGENT_ID, False),
    ],
)
def test_is_broad_truth_table(action: str, pattern: str, broad: bool) -> None:
    assert is_broad(action, pattern) is broad


# ---- the key property: Cedar agrees with the Python reference -------------------------------

WILD_SEGMENT = (
    st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4)
    .map("".join)
    .filter(lambda s: "**" not in s)
)
LITERAL_SEGMENT = st.text("ab", min_size=1, max_size=3)
RESOURCE = st.lists(LITERAL_SEGMENT, min_size=1, max_size=4).map("/".join)
PATTERN = st.one_of(
    st.lists(WILD_SEGMENT, min_size=1, max_size=4).map("/".join),
    st.lists(LITERAL_SEGMENT, min_size=0, max_size=3).map(lambda segs: "/".join([*segs, "**"])),
)


@st.composite
def pattern_and_resource(draw: st.DrawFn) -> tuple[str, str, bool | None]:
    """A pattern, and a resource that is either arbitrary or built to be inside it
    (then the third value is True: the reference must agree that it matches)."""
    pattern = draw(PATTERN)
    if not draw(st.booleans()):
        return pattern, draw(RESOURCE), None
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(draw(st.lists(LITERAL_SEGMENT, min_size=1, max_size=3).map("/".join)))
        else:
            fill = [draw(st.text("ab", max_size=2)) for _ in segment]
            built = "".join(f if ch == "*" else ch for ch, f in zip(segment, fill, strict=True))
            parts.append(built or draw(LITERAL_SEGMENT))
    return pattern, "/".join(parts), True


@given(pattern_and_resource())
@PROPERTY
@example(("a/**", "a", None))
@example(("a/**", "ab/b", None))
@example(("*", "a/b", None))
@example(("a*", "a/b", None))
@example(("*a", "b/a", None))
@example(("a*/b", "a/a/b", None))
@example(("*/*", "a/b/b", None))
@example(("**", "a/b/a/b", True))
def test_cedar_form_agrees_with_python_reference(case: tuple[str, str, bool | None]) -> None:
    pattern, resource, built_inside = case
    assert check_pattern("tools/call", pattern) == pattern
    assert check_resource("tools/call", resource) == resource
    expected = pattern_matches(pattern, resource)
    if built_inside:
        assert expected, f"{resource!r} was built from {pattern!r} but does not match"
    assert cedar_allows("tools/call", pattern, "tools/call", resource) == expected


@given(PATTERN, RESOURCE, st.sampled_from(["tools/call", "resources/read"]))
@PROPERTY
def test_grant_cedar_allows_only_its_principal_action_and_resources(
    pattern: str, resource: str, action: str
) -> None:
    """A whole grant as the PDP compiles it (:meth:`Grant.to_cedar`): its principal, its
    action, and exactly the resources inside its pattern; nothing else."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    grant = Grant(
        id="g_0123456789abcdef",
        principal=Principal("agent", "helper"),
        action="tools/call",
        resource=pattern,
        condition=None,
        broad=False,
        granted_by="admin",
        reason="",
        created_at=now,
        expires_at=now + timedelta(days=1),
        revoked_at=None,
        revoked_by=None,
    )
    policies = cedarpy.PolicySet.from_str(grant.to_cedar())
    assert len(policies) == 1
    entities = json.dumps(
        [
            {
                "uid": {"type": "Resource", "id": resource},
                "attrs": {"path": resource, "depth": resource.count("/") + 1},
                "parents": [],
            }
        ]
    )

    def allowed(principal: str) -> bool:
        request = {
            "principal": {"type": "Agent", "id": principal},
            "action": {"type": "Action", "id": action},
            "resource": {"type": "Resource", "id": resource},
            "context": {},
        }
        result = cedarpy.is_authorized(request, policies, entities)
        assert result.diagnostics.errors == []
        if result.allowed:
            ids = [
                result.diagnostics.id_annotations_by_reason[r] for r in result.diagnostics.reasons
            ]
            assert ids == [f"grant:{grant.id}"]
        return bool(result.allowed)

    expected = action == "tools/call" and pattern_matches(pattern, resource)
    assert allowed("helper") == expected
    assert not allowed("other")


def test_delegate_cedar_form() -> None:
    assert cedar_allows("delegate", AGENT_ID, "delegate", AGENT_ID)
    assert not cedar_allows("delegate", AGENT_ID, "delegate", AGENT_ID + "x")
    assert cedar_allows("delegate", "*", "delegate", AGENT_ID)
    assert cedar_match("delegate", "*") == "true"


# ---- Permission ----------------------------------------------------------------------------


def test_permission_parse_and_covers() -> None:
    perm = Permission.parse("tools/call:github/*")
    assert (perm.action, perm.resource) == ("tools/call", "github/*")
    assert str(perm) == "tools/call:github/*"
    assert perm.covers("tools/call", "github/create_issue")
    assert not perm.covers("tools/call", "github/a/b")
    assert not perm.covers("tools/call", "gitlab/create_issue")
    assert not perm.covers("resources/read", "github/create_issue")


def test_permission_with_any_action() -> None:
    perm = Permission.parse("*:github/*")
    for action in ("tools/call", "resources/read", "GET"):
        assert perm.covers(action, "github/x")
    assert not perm.covers("tools/call", "gitlab/x")
    assert not perm.covers("delegate", AGENT_ID)
    everything = Permission.parse("*:**")
    assert everything.covers("tools/call", "a/b/c")
    assert everything.covers("delegate", AGENT_ID)


def test_permission_delegate() -> None:
    anyone = Permission.parse("delegate:*")
    assert anyone.covers("delegate", AGENT_ID)
    assert anyone.covers("delegate", "spiffe://tether.local/agent/other")
    assert not anyone.covers("tools/call", "github")
    one = Permission.parse(f"delegate:{AGENT_ID}")
    assert one.resource == AGENT_ID
    assert one.covers("delegate", AGENT_ID)
    assert not one.covers("delegate", "spiffe://tether.local/agent/other")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tools/call",
        ":github/*",
        "tools/call:",
        "nope:github/*",
        "tools/call:github//x",
        "tools/call:**/x",
        "tools/call:a**",
        "delegate:helper",
        "delegate:**",
        "**:github/x",
        'tools/call:a"b',
    ],
)
def test_bad_permission_strings(text: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid"):
        Permission.parse(text)


@pytest.mark.parametrize(
    "text",
    ["tools/call:github/*", "*:github/*", "delegate:*", f"delegate:{AGENT_ID}", "GET:api/**"],
)
def test_permission_round_trips(text: str) -> None:
    assert str(Permission.parse(text)) == text
    assert Permission.parse(str(Permission.parse(text))) == Permission.parse(text)


def test_star_star_scope_agrees_with_star_star_grant() -> None:
    resource = "github/create_issue"
    assert Permission.parse("*:*").covers("tools/call", resource) == cedar_allows(
        "*", "*", "tools/call", resource
    )
