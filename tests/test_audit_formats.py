"""The SIEM export formats: OCSF 1.8.0 (validated against the compiled schema in
``tests/vectors/ocsf``) and CEF (escaping, and a round trip through ``parse_cef``)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocsf_validate import validate

from tether.audit.cef import parse_cef, to_cef, visible
from tether.audit.ocsf import summary, to_ocsf
from tether.audit.record import clean, format_time

VERSION = "0.1.0"
ALICE = "user:alice@example.com"
HELPER = "spiffe://tether.local/agent/helper"
SCOUT = "spiffe://tether.local/agent/scout"
WRITER = "spiffe://tether.local/agent/writer"
TIME = "2026-11-28T16:11:39.822897Z"
TIME_MS = 1795882299822  # 2026-11-28T16:11:39.822Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DENY = {
    "action": "tools/call",
    "actor": HELPER,
    "chain": [ALICE, HELPER],
    "decision": "deny",
    "detail": {"cached": False, "epoch": 3, "grants": [], "policies": []},
    "reasons": [f"{HELPER} holds no grant for tools/call on github/create_issue"],
    "request_id": None,
    "resource": "github/create_issue",
    "seq": 42,
    "subject": HELPER,
    "time": TIME,
    "type": "decision",
}
REGISTERED = {
    "action": "agent.registered",
    "actor": "admin",
    "chain": ["admin"],
    "decision": None,
    "detail": {"kind": "assistant", "owner": "alice@example.com", "parent": None},
    "reasons": [],
    "request_id": "r-5f2a",
    "resource": HELPER,
    "seq": 1,
    "subject": HELPER,
    "time": "2026-11-28T16:11:39.823872Z",
    "type": "agent.registered",
}
ODD_DETAIL = {
    "nested": {"list": [1, 2.5, None, True, {"deep": ["ünïcødé 🔐", 'say "hi"', "it's"]}]},
    "pipes|and=equals\\back": "a|b=c\\d\ne\rf",
    "empty": {},
}


ALERT = {
    "alert": "alt_0123456789abcdef",
    "detector": "first_use",
    "severity": "high",
    "summary": "helper called payments/refund for the first time",
    "evidence": [40, 41],
    "owner": "alice@example.com",
    "created_at": "2026-11-28T16:11:39.000000+00:00",
    "state": "open",
}


def body(kind: str, **fields: Any) -> dict[str, Any]:
    """An event body as the log writes it: action = type, resource = subject, chain = actor."""
    actor = fields.pop("actor", "admin")
    subject = fields.pop("subject", HELPER)
    event = {
        "action": kind,
        "actor": actor,
        "chain": [actor],
        "decision": "deny" if kind.endswith(".refused") else None,
        "detail": {},
        "reasons": [],
        "request_id": None,
        "resource": subject,
        "seq": 7,
        "subject": subject,
        "time": TIME,
        "type": kind,
    }
    event.update(fields)
    return event


def decision(
    verdict: str, chain: list[str], action: str, resource: str, **fields: Any
) -> dict[str, Any]:
    return body(
        "decision",
        actor=chain[-1],
        subject=chain[-1],
        chain=chain,
        decision=verdict,
        action=action,
        resource=resource,
        **fields,
    )


# (id, body, class_uid, activity_id, status_id)
CASES: list[tuple[str, dict[str, Any], int, int, int]] = [
    ("decision-deny", DENY, 6003, 1, 2),
    (
        "decision-allow",
        decision("allow", [ALICE, HELPER], "tools/call", "github/list_repos", request_id="r-1"),
        6003,
        2,
        1,
    ),
    (
        "decision-chain-4",
        decision("allow", [ALICE, SCOUT, HELPER, WRITER], "resources/read", "file:///srv/a.txt"),
        6003,
        2,
        1,
    ),
    (
        "decision-system-chain-1",
        decision("deny", ["system:sweeper"], "delegate", HELPER, reasons=["no", "never"]),
        6003,
        99,
        2,
    ),
    (
        "decision-with-policies",
        decision(
            "deny",
            [ALICE, HELPER],
            "tools/call",
            "github/delete_repo",
            detail={"cached": True, "epoch": 9, "grants": ["g-1"], "policies": ["no-deletes"]},
        ),
        6003,
        4,
        2,
    ),
    (
        "tool.call",
        body(
            "tool.call",
            actor=HELPER,
            subject=HELPER,
            chain=[ALICE, HELPER],
            action="tools/call",
            resource="github/create_issue",
            decision="allow",
            request_id="r-9",
        ),
        6003,
        1,
        1,
    ),
    (
        "tool.result",
        body(
            "tool.result",
            actor=HELPER,
            chain=[ALICE, SCOUT, HELPER],
            action="tools/call",
            resource="github/list_repos",
            detail={"outcome": "ok", "size": 1234, "latency_ms": 12.7},
        ),
        6003,
        2,
        1,
    ),
    (
        "tool.result-error",
        body(
            "tool.result",
            actor=HELPER,
            chain=[ALICE, HELPER],
            action="tools/call",
            resource="slack/post_message",
            detail={"outcome": "error", "latency_ms": 3},
        ),
        6003,
        1,
        2,
    ),
    (
        "access.refused",
        body(
            "access.refused",
            actor=ALICE,
            subject="g-17",
            reasons=["only admins revoke grants"],
            detail={"op": "grant.revoke"},
        ),
        6003,
        4,
        2,
    ),
    (
        "token.issued",
        body(
            "token.issued",
            actor=HELPER,
            detail={"jti": "j-1", "aud": "https://api.example.com", "scope": "a b", "parent": None},
        ),
        3002,
        4,
        1,
    ),
    (
        "token.issued-aud-list",
        body("token.issued", actor="cli", subject=ALICE, detail={"jti": "j-2", "aud": ["x", "y"]}),
        3002,
        4,
        1,
    ),
    (
        "token.exchanged",
        body(
            "token.exchanged",
            actor=HELPER,
            subject=ALICE,
            chain=[ALICE, HELPER],
            detail={"jti": "j-3", "aud": "tether", "scope": "tools/call:github/*", "parent": "j-1"},
        ),
        3003,
        1,
        1,
    ),
    (
        "token.refused",
        body(
            "token.refused",
            actor="anonymous",
            subject=None,
            reasons=["unknown client"],
            detail={
                "grant_type": "client_credentials",
                "error": "invalid_client",
                "client_id": "spiffe://tether.local/agent/ghost",
            },
        ),
        3002,
        4,
        2,
    ),
    (
        "token.refused-no-client",
        body(
            "token.refused",
            actor="anonymous",
            subject=None,
            detail={"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange"},
        ),
        3002,
        4,
        2,
    ),
    (
        "token.revoked",
        body("token.revoked", detail={"jti": "j-1", "family": ["j-1", "j-3"]}),
        3002,
        2,
        1,
    ),
    ("agent.registered", REGISTERED, 3001, 1, 1),
    (
        "agent.updated",
        body("agent.updated", detail={"changes": {"description": "ünï"}}),
        3004,
        3,
        1,
    ),
    ("agent.suspended", body("agent.suspended", reasons=["investigating"]), 3001, 5, 1),
    ("agent.resumed", body("agent.resumed", actor=ALICE), 3001, 2, 1),
    ("agent.retired", body("agent.retired"), 3001, 6, 1),
    ("agent.expired", body("agent.expired", actor="system:sweeper"), 3001, 5, 1),
    ("agent.unowned", body("agent.unowned", actor="system:sweeper"), 3004, 3, 1),
    (
        "agent.owner_changed",
        body("agent.owner_changed", detail={"from": "alice@example.com", "to": "bob@example.com"}),
        3004,
        3,
        1,
    ),
    ("agent.key_rotated", body("agent.key_rotated", actor=HELPER), 3001, 99, 1),
    ("agent.killed", body("agent.killed", reasons=["exfiltration"], request_id="r-k"), 3001, 9, 1),
    (
        "grant.added",
        body(
            "grant.added",
            detail={
                "id": "g-1",
                "principal": HELPER,
                "action": "tools/call",
                "resource": "github/*",
                "condition": None,
            },
        ),
        3001,
        7,
        1,
    ),
    ("grant.revoked", body("grant.revoked", detail={"grant": "g-1"}), 3001, 8, 1),
    (
        "policy.added",
        body(
            "policy.added",
            subject="policy:no-prod",
            detail={
                "text": 'forbid(principal, action, resource) when { resource == "prod" };',
                "source": "x.cedar",
            },
        ),
        3004,
        1,
        1,
    ),
    ("policy.removed", body("policy.removed", subject="policy:no-prod"), 3004, 4, 1),
    (
        "keys.rotated",
        body("keys.rotated", actor="system:keys", subject="kid:k2", detail={"kid": "k2"}),
        3004,
        3,
        1,
    ),
    (
        "alert",
        body("alert", actor="system:watch", detail={"severity": "critical", "title": "Tool burst"}),
        2004,
        1,
        1,
    ),
    ("alert-plain", body("alert", actor="system:watch", subject=None, resource=None), 2004, 1, 1),
    ("alert.raised", body("alert.raised", actor="system:detect", detail=ALERT), 2004, 1, 1),
    (
        "alert.acknowledged",
        body("alert.acknowledged", actor=ALICE, detail={**ALERT, "state": "acknowledged"}),
        2004,
        2,
        2,
    ),
    (
        "alert.resolved",
        body("alert.resolved", detail={**ALERT, "state": "resolved"}, reasons=["a new tool"]),
        2004,
        3,
        4,
    ),
    (
        "alert.suppressed",
        body("alert.suppressed", detail={**ALERT, "state": "suppressed"}, reasons=["noise"]),
        2004,
        3,
        3,
    ),
    (
        "unknown-with-action",
        body("session.started", action="sessions/open", resource="s-1"),
        6003,
        99,
        1,
    ),
    ("unknown-bare", body("future.thing", action=None, resource=None, subject=None), 3004, 99, 1),
    ("odd-detail", body("agent.updated", detail=ODD_DETAIL, request_id='r-"1"|='), 3004, 3, 1),
]
BY_ID = {case[0]: case[1] for case in CASES}


@pytest.mark.parametrize(
    ("event", "class_uid", "activity_id", "status_id"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_every_event_type_is_valid_ocsf(event, class_uid, activity_id, status_id):
    out = to_ocsf(copy.deepcopy(event), version=VERSION)
    assert validate(out) == []
    assert (out["class_uid"], out["activity_id"], out["status_id"]) == (
        class_uid,
        activity_id,
        status_id,
    )
    assert out["time"] == (datetime.fromisoformat(event["time"]) - EPOCH) // timedelta(
        milliseconds=1
    )
    assert out["metadata"]["uid"] == str(event["seq"])
    assert out["metadata"]["product"] == {
        "name": "Tether",
        "vendor_name": "Tether",
        "version": VERSION,
    }
    assert out["metadata"].get("correlation_uid") == event["request_id"]
    assert out["unmapped"]["tether"]["chain"] == event["chain"]
    assert out["unmapped"]["tether"]["detail"] == event["detail"]
    assert out["unmapped"]["tether"]["seq"] == event["seq"]
    assert "\n" not in out["message"]
    assert json.loads(json.dumps(out, ensure_ascii=False)) == out


def test_every_listed_type_has_a_case():
    listed = {
        "decision", "token.issued", "token.exchanged", "token.refused", "token.revoked",
        "agent.registered", "agent.updated", "agent.suspended", "agent.resumed", "agent.retired",
        "agent.expired", "agent.unowned", "agent.owner_changed", "agent.key_rotated", "agent.killed",
        "grant.added", "grant.revoked", "policy.added", "policy.removed", "keys.rotated",
        "access.refused", "tool.call", "tool.result", "alert", "alert.raised",
        "alert.acknowledged", "alert.resolved", "alert.suppressed",
    }  # fmt: skip
    assert listed <= {case[1]["type"] for case in CASES}


def test_deny_decision_in_full():
    out = to_ocsf(copy.deepcopy(DENY), version=VERSION)
    assert out["message"] == f"deny tools/call on github/create_issue by {ALICE} → {HELPER}"
    assert out["type_uid"] == 600301
    assert out["severity_id"] == 3
    assert out["api"] == {"operation": "tools/call"}
    assert out["resources"] == [{"uid": "github/create_issue", "role_id": 1, "role": "Target"}]
    assert out["src_endpoint"] == {"uid": HELPER}
    assert (out["status"], out["action"], out["disposition"]) == ("Failure", "Denied", "Blocked")
    assert out["status_detail"] == DENY["reasons"][0]
    assert out["actor"] == {
        "user": {
            "uid": ALICE,
            "name": "alice@example.com",
            "type_id": 1,
            "type": "User",
            "email_addr": "alice@example.com",
        },
        "app_uid": HELPER,
        "app_name": "helper",
        "authorizations": [{"decision": "deny"}],
    }
    assert out["metadata"]["profiles"] == ["host", "security_control"]
    assert "correlation_uid" not in out["metadata"]
    assert out["unmapped"]["tether"]["reasons"] == DENY["reasons"]
    assert out["time"] == TIME_MS


def test_allow_decision_and_policies():
    allow = to_ocsf(BY_ID["decision-allow"], version=VERSION)
    assert (allow["status"], allow["action_id"], allow["disposition_id"]) == ("Success", 1, 1)
    assert allow["severity_id"] == 1
    assert allow["api"]["request"] == {"uid": "r-1"}
    ruled = to_ocsf(BY_ID["decision-with-policies"], version=VERSION)
    assert ruled["actor"]["authorizations"] == [
        {"decision": "deny", "policy": {"uid": "no-deletes"}}
    ]


def test_chain_of_four_names_human_and_acting_agent():
    out = to_ocsf(BY_ID["decision-chain-4"], version=VERSION)
    assert out["actor"]["user"]["uid"] == ALICE
    assert out["actor"]["app_uid"] == WRITER
    assert out["message"].endswith(f"by {ALICE} → {SCOUT} → {HELPER} → {WRITER}")


def test_tokens():
    by_id = BY_ID
    issued = to_ocsf(by_id["token.issued"], version=VERSION)
    assert issued["service"] == {"name": "https://api.example.com"}
    assert issued["session"] == {"uid": "j-1"}
    assert issued["auth_protocol_id"] == 6
    assert issued["user"]["uid"] == HELPER
    assert to_ocsf(by_id["token.issued-aud-list"], version=VERSION)["service"] == {"name": "x y"}
    exchanged = to_ocsf(by_id["token.exchanged"], version=VERSION)
    assert exchanged["privileges"] == ["tools/call:github/*"]
    assert exchanged["user"]["uid"] == ALICE
    refused = to_ocsf(by_id["token.refused"], version=VERSION)
    assert (refused["status"], refused["status_code"]) == ("Failure", "invalid_client")
    assert refused["user"]["uid"] == "spiffe://tether.local/agent/ghost"
    assert refused["disposition_id"] == 2
    assert to_ocsf(by_id["token.refused-no-client"], version=VERSION)["user"]["uid"] == "anonymous"


def test_lifecycle_alert_and_tool_details():
    by_id = BY_ID
    grant = to_ocsf(by_id["grant.added"], version=VERSION)
    assert grant["policies"] == [
        {"uid": "g-1", "type": "Tether grant", "name": "tools/call on github/*"}
    ]
    assert grant["user"] == {"uid": HELPER, "name": "helper", "type_id": 4, "type": "Service"}
    policy = to_ocsf(by_id["policy.added"], version=VERSION)
    assert policy["entity"] == {
        "uid": "policy:no-prod",
        "name": "no-prod",
        "type_id": 5,
        "type": "Policy",
    }
    assert (
        to_ocsf(by_id["agent.key_rotated"], version=VERSION)["activity_name"] == "agent.key_rotated"
    )
    assert to_ocsf(by_id["agent.killed"], version=VERSION)["severity_id"] == 4
    alert = to_ocsf(by_id["alert"], version=VERSION)
    assert (alert["severity_id"], alert["status"], alert["is_alert"]) == (5, "New", True)
    assert alert["finding_info"]["title"] == "Tool burst"
    assert to_ocsf(by_id["alert-plain"], version=VERSION)["severity_id"] == 4
    result = to_ocsf(by_id["tool.result"], version=VERSION)
    assert result["duration"] == 13
    assert result["api"]["service"] == {"name": "github"}
    refused = to_ocsf(by_id["access.refused"], version=VERSION)
    assert refused["api"]["operation"] == "grant.revoke"
    assert refused["actor"] == {
        "user": {
            "uid": ALICE,
            "name": "alice@example.com",
            "type_id": 1,
            "type": "User",
            "email_addr": "alice@example.com",
        },
        "authorizations": [{"decision": "deny"}],
    }
    assert (
        to_ocsf(by_id["unknown-with-action"], version=VERSION)["activity_name"] == "sessions/open"
    )


# ---- the validator catches mistakes --------------------------------------------------


def _deny() -> dict[str, Any]:
    return to_ocsf(copy.deepcopy(DENY), version=VERSION)


def _set(path: str, value: Any):
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            event = event[key]
        event[last] = value

    return change


def _delete(path: str):
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            event = event[key]
        del event[last]

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("bogus", 1), "bogus: not an attribute of api_activity"),
        (_set("actor.user.shoe_size", 44), "actor.user.shoe_size: not an attribute of user"),
        (_set("unmapped.anything", {"goes": [1]}), None),
        (_delete("api.operation"), "api.operation: required by api, missing"),
        (_delete("src_endpoint"), "src_endpoint: required by api_activity, missing"),
        (_delete("metadata.product"), "metadata.product: required by metadata, missing"),
        (_set("severity_id", 7), "severity_id: 7 is not in the enum"),
        (_set("actor.user.type_id", 5), "actor.user.type_id: 5 is not in the enum"),
        (_set("activity_id", 5), "activity_id: 5 is not in the enum"),
        (_set("type_uid", 600302), "type_uid: 600302 is not class_uid * 100 + activity_id"),
        (_set("category_uid", 3), "category_uid: 3 is not in the enum"),
        (_set("time", TIME), "time: '2026-11-28T16:11:39.822897Z' is not a timestamp_t"),
        (_set("severity_id", True), "severity_id: True is not a integer_t"),
        (_set("count", 2**40), "count: 1099511627776 is not a integer_t"),
        (_set("message", None), "message: null"),
        (_set("resources", {"uid": "x"}), "resources: not an array"),
        (_set("actor.user.email_addr", "not an email"), "does not match email_t"),
        (_set("actor.invoked_by", "x"), "actor.invoked_by: deprecated"),
        (_set("actor", {"authorizations": []}), "actor: needs at least one of"),
        (_set("status", "Success"), "status: 'Success' is not 'Failure'"),
        (
            _set("metadata.profiles", ["host"]),
            "disposition_id: not an attribute of api_activity without profile 'security_control'",
        ),
        (
            _set("metadata.profiles", ["host", "security_control", "nope"]),
            "metadata.profiles: no profile 'nope'",
        ),
        (
            _set("metadata.profiles", ["host", "security_control", "cloud"]),
            "cloud: required by api_activity, missing",
        ),
        (
            _set("cloud", {"provider": "x"}),
            "cloud: not an attribute of api_activity without profile 'cloud'",
        ),
        (_set("metadata.version", "1.7.0"), "metadata.version: not 1.8.0"),
        (_set("class_uid", 9999), "class_uid: no class 9999"),
    ],
)
def test_validator_reports(change, expected):
    event = _deny()
    change(event)
    errors = validate(event)
    if expected is None:
        assert errors == []
    else:
        assert any(expected in error for error in errors), errors


# ---- CEF -----------------------------------------------------------------------------


def test_cef_line_for_a_deny():
    line = to_cef(copy.deepcopy(DENY), version=VERSION)
    assert line.startswith(f"CEF:0|Tether|Tether|0.1.0|decision|Access denied|6|rt={TIME_MS} ")
    header, ext = parse_cef(line)
    assert header == ["CEF:0", "Tether", "Tether", "0.1.0", "decision", "Access denied", "6"]
    assert ext == intended_extensions(DENY)
    assert ext["cs2"] == f"{ALICE} > {HELPER}"
    assert "cs3" not in ext


def test_cef_escaping():
    event = body(
        "odd|type\\x\ny",
        actor="a=b",
        subject="back\\slash",
        action="x=y\\z\nw\rv",
        resource="pipe|stays raw",
        reasons=["one = two", "multi\nline"],
        request_id="\\=",
    )
    line = to_cef(event, version="1|2\\3")
    assert "\n" not in line and "\r" not in line
    assert line.startswith("CEF:0|Tether|Tether|1\\|2\\\\3|odd\\|type\\\\x y|Odd\\|type\\\\x y|3|")
    assert " act=x\\=y\\\\z\\nw\\rv " in line
    assert " suid=a\\=b " in line
    assert " duser=back\\\\slash " in line
    assert " cs1=pipe|stays raw " in line
    assert " cs3=\\\\\\= " in line
    assert " reason=one \\= two; multi\\nline " in line
    header, ext = parse_cef(line)
    assert header == ["CEF:0", "Tether", "Tether", "1|2\\3", "odd|type\\x y", "Odd|type\\x y", "3"]
    assert ext == intended_extensions(event)


def test_cef_severities():
    def severity(event: dict[str, Any]) -> str:
        return parse_cef(to_cef(event, version=VERSION))[0][6]

    assert severity(BY_ID["decision-allow"]) == "3"  # allow
    assert severity(DENY) == "6"
    assert severity(body("token.refused", subject=None)) == "6"
    assert severity(body("agent.killed")) == "8"
    assert severity(body("alert", detail={"severity": "high"})) == "8"
    assert severity(body("alert", detail={"severity": "critical"})) == "10"
    assert severity(body("alert", detail={"severity": "low"})) == "4"


def test_parse_cef_edges():
    header, ext = parse_cef(
        "<134>1 2026-11-28T16:11:39Z host tether - x - CEF:0|V|P|1|s|n|5|a= b=x y c=\\=\\n"
    )
    assert header == ["CEF:0", "V", "P", "1", "s", "n", "5"]
    assert ext == {"a": "", "b": "x y", "c": "=\n"}
    assert parse_cef("CEF:0|V|P|1|s|n|5|") == (["CEF:0", "V", "P", "1", "s", "n", "5"], {})
    with pytest.raises(ValueError):
        parse_cef("no cef here")
    with pytest.raises(ValueError):
        parse_cef("CEF:0|V|P|1")


# ---- random bodies -------------------------------------------------------------------

TYPES = [case[1]["type"] for case in CASES]
CHARS = st.one_of(st.sampled_from("|=\\\n\r \t>:/\"'"), st.characters(codec="utf-8"))
TEXT = st.text(CHARS, max_size=12)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
KNOWN_DETAIL = st.fixed_dictionaries(
    {},
    optional={
        "jti": TEXT,
        "aud": TEXT | st.lists(TEXT, max_size=2),
        "scope": TEXT | st.lists(TEXT, max_size=2),
        "client_id": TEXT,
        "error": TEXT,
        "policies": st.lists(TEXT, max_size=2),
        "op": TEXT,
        "severity": st.sampled_from(["low", "High", "critical", "bogus"]) | st.integers(-2, 9),
        "title": TEXT,
        "outcome": st.sampled_from(["ok", "error", "timeout"]) | TEXT,
        "latency_ms": st.integers(-5, 2**70) | st.floats(allow_nan=False),
        "id": TEXT,
        "grant": TEXT,
        "action": TEXT,
        "resource": TEXT,
    },
)
HUMAN = st.sampled_from(["admin", ALICE]) | TEXT.map("user:".__add__) | TEXT.map("system:".__add__)
AGENT = TEXT.map("spiffe://tether.local/agent/".__add__)


@st.composite
def bodies(draw) -> dict[str, Any]:
    chain = [draw(HUMAN | AGENT), *draw(st.lists(AGENT, max_size=3))]
    detail = draw(KNOWN_DETAIL) | draw(st.dictionaries(TEXT, JSON, max_size=3))
    at = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)))
    event = {
        "action": draw(st.none() | TEXT | st.sampled_from(["tools/call", "resources/read"])),
        "actor": draw(st.just(chain[-1]) | TEXT),
        "chain": chain,
        "decision": draw(st.sampled_from([None, "allow", "deny"])),
        "detail": detail,
        "reasons": draw(st.lists(TEXT, max_size=3)),
        "request_id": draw(st.none() | TEXT),
        "resource": draw(st.none() | TEXT),
        "seq": draw(st.integers(1, 2**53 - 1)),
        "subject": draw(st.none() | TEXT | AGENT),
        "time": format_time(at),
        "type": draw(st.sampled_from(TYPES) | TEXT),
    }
    cleaned: dict[str, Any] = clean(event)
    return cleaned


def intended_extensions(event: dict[str, Any]) -> dict[str, str]:
    """What a CEF line must carry for ``event``, restated from the format's definition."""
    chain = event["chain"]
    human = (
        chain[0]
        if chain and (chain[0] == "admin" or chain[0].startswith(("user:", "system:")))
        else None
    )
    pairs = {
        "rt": str(to_ocsf(event, version=VERSION)["time"]),
        "act": event["action"],
        "outcome": event["decision"],
        "suser": human.removeprefix("user:") if human is not None else None,
        "suid": event["actor"],
        "duser": event["subject"],
        "cs1Label": "resource" if event["resource"] is not None else None,
        "cs1": event["resource"],
        "cs2Label": "chain" if chain else None,
        "cs2": " > ".join(chain) if chain else None,
        "cs3Label": "requestId" if event["request_id"] is not None else None,
        "cs3": event["request_id"],
        "cs4Label": "detail" if event["detail"] else None,
        "cs4": json.dumps(
            event["detail"], ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
        if event["detail"]
        else None,
        "reason": "; ".join(event["reasons"]) if event["reasons"] else None,
        "externalId": str(event["seq"]),
        "msg": summary(event),
    }
    return {key: visible(value) for key, value in pairs.items() if value is not None}


def intended_name(event: dict[str, Any]) -> str:
    if event["type"] == "decision" and event["decision"] == "allow":
        return "Access allowed"
    if event["type"] == "decision" and event["decision"] == "deny":
        return "Access denied"
    words = _flat(event["type"].replace(".", " ").replace("_", " ").strip())
    return words[:1].upper() + words[1:] if words else "Event"


def _flat(text: str) -> str:
    return visible(text).replace("\r", " ").replace("\n", " ")


@settings(max_examples=400, deadline=None)
@given(event=bodies(), version=st.sampled_from([VERSION]) | TEXT)
def test_random_bodies_export_validly(event, version):
    out = to_ocsf(copy.deepcopy(event), version=version)
    assert validate(out) == []
    assert out["unmapped"]["tether"]["detail"] == event["detail"]
    text = json.dumps(out, ensure_ascii=False)
    assert "\n" not in text and "\r" not in text
    assert "\n" not in out["message"] and "\r" not in out["message"]

    line = to_cef(copy.deepcopy(event), version=version)
    assert "\n" not in line and "\r" not in line
    header, ext = parse_cef(line)
    assert header[:6] == [
        "CEF:0",
        "Tether",
        "Tether",
        _flat(version),
        _flat(event["type"]),
        intended_name(event),
    ]
    assert 0 <= int(header[6]) <= 10
    assert ext == intended_extensions(event)
    shown = visible(json.dumps(event["detail"], ensure_ascii=False))
    assert json.loads(ext.get("cs4", "{}")) == json.loads(shown)
    assert not any(c in line for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def test_alert_events_are_detection_findings_with_the_alert_and_its_state() -> None:
    raised = to_ocsf(copy.deepcopy(BY_ID["alert.raised"]), version=VERSION)
    assert raised["type_uid"] == 200401 and raised["is_alert"] is True
    assert (raised["severity_id"], raised["severity"]) == (4, "High")
    assert (raised["status_id"], raised["status"]) == (1, "New")
    info = raised["finding_info"]
    assert info["uid"] == "alt_0123456789abcdef"
    assert info["title"] == "helper called payments/refund for the first time"
    assert info["types"] == ["first_use"]
    assert info["analytic"] == {"name": "first_use", "type_id": 2, "type": "Behavioral"}
    assert info["related_events"] == [{"uid": "40"}, {"uid": "41"}]
    assert info["related_events_count"] == 2
    assert info["created_time"] == 1795882299000
    assert "modified_time" not in info
    assert raised["actor"]["user"]["uid"] == "system:detect"
    assert raised["resources"] == [{"uid": HELPER, "role_id": 1, "role": "Target"}]
    resolved = to_ocsf(copy.deepcopy(BY_ID["alert.resolved"]), version=VERSION)
    assert (resolved["activity_name"], resolved["status"]) == ("Close", "Resolved")
    assert resolved["status_detail"] == "a new tool"
    assert resolved["finding_info"]["modified_time"] == TIME_MS
    assert resolved["finding_info"]["uid"] == info["uid"]  # one finding, followed through
    acked = to_ocsf(copy.deepcopy(BY_ID["alert.acknowledged"]), version=VERSION)
    assert (acked["type_uid"], acked["status"]) == (200402, "In Progress")
    suppressed = to_ocsf(copy.deepcopy(BY_ID["alert.suppressed"]), version=VERSION)
    assert (suppressed["type_uid"], suppressed["status"]) == (200403, "Suppressed")
    for severity, expected in (("low", 2), ("medium", 3), ("critical", 5)):
        event = body("alert.raised", detail={**ALERT, "severity": severity})
        assert to_ocsf(event, version=VERSION)["severity_id"] == expected


def test_odd_alert_details_still_validate() -> None:
    for detail in (
        {},
        {"alert": 7, "evidence": "40", "detector": ["x"], "created_at": "yesterday"},
        {"evidence": [True, "1", 2**40], "summary": "", "severity": "catastrophic"},
    ):
        out = to_ocsf(body("alert.raised", detail=detail), version=VERSION)
        assert validate(out) == [], detail
        assert out["finding_info"]["title"] == "Tether alert"
