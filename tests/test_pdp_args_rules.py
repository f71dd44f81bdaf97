"""Rules on a call's arguments end to end in the library: grant conditions on
``context.args`` validate (typed from the pinned tool's input schema, or from what the
condition reads), decide each call on its arguments, and listings show a tool when some
call of it could be allowed (Cedar partial evaluation with ``context.args`` unknown)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, spec
from sqlalchemy import insert

from tether import AccessRequest, GrantSpec, InvalidRequest, Settings, Tether
from tether.store import gateway_pins

REPORTS = 'context.args.path like "/srv/reports/*"'
WRITE_FILE = {
    "name": "write_file",
    "inputSchema": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "content": {"type": "string"},
            "mode": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "either": {"type": ["string", "null"]},
        },
        "required": ["path", "content"],
    },
}


@pytest.fixture
def tether(tmp_path: Path) -> Iterator[Tether]:
    settings = Settings.load(tmp_path, db_url=f"sqlite:///{tmp_path / 'tether.db'}")
    first, _ = Tether.init(settings)
    first.close()
    with Tether.open(settings) as opened:
        opened.registry.register(ADMIN, spec("fs-bot"))
        yield opened


def _pin(tether: Tether, definition: dict[str, Any], kind: str = "tool") -> None:
    with tether.store.write() as conn:
        conn.execute(
            insert(gateway_pins).values(
                server="fs",
                kind=kind,
                name=definition["name"],
                status="pinned",
                pinned_hash="0" * 64,
                pinned=definition,
                pinned_at=tether.clock(),
                hash_version=2,
            )
        )


def _grant(tether: Tether, when: str, resource: str = "fs/write_file", **kw: Any):
    return tether.grants.add(
        ADMIN, GrantSpec("fs-bot", "tools/call", resource, condition=when, **kw)
    )


def _call(tether: Tether, args: dict[str, Any] | None, resource: str = "fs/write_file"):
    return tether.pdp.decide(AccessRequest.of("fs-bot", "tools/call", resource, args=args))


def test_the_issues_grant_validates_without_a_pin_and_decides_on_the_path(tether) -> None:
    _grant(tether, REPORTS)
    assert _call(tether, {"path": "/srv/reports/q1.txt", "content": "x"}).allowed
    denied = _call(tether, {"path": "/etc/passwd", "content": "x"})
    assert not denied.allowed and "holds no grant" in denied.reasons[0]
    assert not _call(tether, {"content": "no path"}).allowed  # an error in the condition


def test_a_pinned_tool_types_the_condition(tether) -> None:
    _pin(tether, WRITE_FILE)
    _grant(tether, REPORTS + " && (context.args has mode && context.args.mode < 700)")
    _grant(tether, 'context.args has tags && context.args.tags.contains("public")')
    assert _call(tether, {"path": "/srv/reports/a", "content": "", "mode": 600}).allowed
    assert _call(tether, {"path": "/x", "content": "", "tags": ["public"]}).allowed
    with pytest.raises(InvalidRequest) as wrong:
        _grant(tether, 'context.args.mode like "6*"')
    assert "pinned tool fs/write_file" in str(wrong.value)
    with pytest.raises(InvalidRequest, match=r"args\.nope"):
        _grant(tether, 'context.args.nope == "x"')
    with pytest.raises(InvalidRequest, match="optional attribute"):
        _grant(tether, "context.args.mode == 1")  # optional: needs `has`
    with pytest.raises(InvalidRequest, match="either"):
        _grant(tether, 'context.args.either == "x"')  # a union: not typed, not readable


def test_a_pinned_prompt_types_its_arguments_as_strings(tether) -> None:
    arguments = [{"name": "topic", "required": True}, {"name": "tone"}]
    _pin(tether, {"name": "summary", "arguments": arguments}, kind="prompt")

    def grant(when: str) -> Any:
        spec = GrantSpec("fs-bot", "prompts/get", "fs/summary", condition=when)
        return tether.grants.add(ADMIN, spec)

    grant('context.args.topic like "q*"')
    grant('context.args has tone && context.args.tone == "dry"')
    with pytest.raises(InvalidRequest, match="optional attribute"):
        grant('context.args.tone == "dry"')
    prompt = AccessRequest.of("fs-bot", "prompts/get", "fs/summary", args={"topic": "q1"})
    assert tether.pdp.decide(prompt).allowed


def test_a_pattern_grant_types_what_the_condition_reads_as_strings(tether) -> None:
    _grant(tether, REPORTS, resource="fs/*")
    with pytest.raises(InvalidRequest, match="String"):
        _grant(tether, "context.args.size > 3", resource="fs/*")
    resource = tether.grants.add(
        ADMIN,
        GrantSpec(
            "fs-bot", "resources/read", "docs/*", condition='context.args.uri like "file:///srv/*"'
        ),
    )
    assert resource.condition


def test_a_listing_shows_a_tool_some_call_could_use(tether) -> None:
    _grant(tether, REPORTS)
    tether.grants.add(ADMIN, GrantSpec("fs-bot", "tools/call", "fs/read_file"))
    tether.guardrails.add(
        ADMIN,
        '@id("no-secret") forbid (principal, action, resource) '
        'when { resource.path == "fs/read_secret" || '
        '(context.args has path && resource.path == "fs/move_file") };',
    )
    tools = ["write_file", "read_file", "read_secret", "move_file", "delete_file"]
    shown = tether.visible(tools, lambda t: AccessRequest.of("fs-bot", "tools/call", f"fs/{t}"))
    # write_file: allowed for some paths; read_file: allowed; read_secret: no grant and
    # forbidden whatever the arguments; move_file and delete_file: no grant at all
    assert shown == ["write_file", "read_file"]


def test_without_rules_on_arguments_a_listing_is_the_plain_decision(tether, monkeypatch) -> None:
    tether.grants.add(ADMIN, GrantSpec("fs-bot", "tools/call", "fs/read_file"))
    import cedarpy

    def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("partial evaluation used without a rule on arguments")

    monkeypatch.setattr(cedarpy, "is_authorized_partial", never)
    shown = tether.visible(
        ["read_file", "write_file"], lambda t: AccessRequest.of("fs-bot", "tools/call", f"fs/{t}")
    )
    assert shown == ["read_file"]
