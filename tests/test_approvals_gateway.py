"""Human approval end to end: an agent's call through the gateway to a real MCP server
(a recording upstream over stdio: it writes each call it receives to a file), held for
its owner's approval (a grant with ``approval="owner"``), approved through the CLI as the owner, then executed exactly once
with exactly those arguments; a replay or changed arguments need a new approval, an
expired approval is refused, a denied one stays denied, another owner cannot approve,
and the audit log never holds a secret an argument carried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import Cli, Clock, initialised, spec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.people import IDP_ISSUER, person_token
from jwt.algorithms import OKPAlgorithm

from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.errors import StoreUnavailable
from tether.gateway.enforce import APPROVAL_META, Gateway
from tether.gateway.upstream import UpstreamSession
from tether.grants import GrantSpec
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
RECORDER = Path(__file__).parent / "helpers" / "recording_server.py"
SECRET = "sk-ant-api03-" + "Zq8xW2nR5tY7uI9oP1aS3dF6gH4jK0lM" * 2 + "-AAAAAA"
ROOT = Path(__file__).resolve().parents[1]
ARGS = {"path": "/srv/reports/q1.txt", "body": f"Authorization: Bearer {SECRET}"}


@dataclass
class World:
    cli: Cli
    tether: Tether
    token: str  # the agent's, for /mcp/rec
    record: Path  # what the upstream received, one JSON line per call
    people: dict[str, str]  # email -> a token of the development IdP
    monkeypatch: pytest.MonkeyPatch

    def as_(self, email: str | None) -> Cli:
        """The CLI as this person (None: the admin token of TETHER_HOME)."""
        if email is None:
            self.monkeypatch.delenv("TETHER_TOKEN", raising=False)
        else:
            self.monkeypatch.setenv("TETHER_TOKEN", self.people[email])
        return self.cli

    def fresh_token(self) -> None:
        """A new token for the agent (after the clock moved past the last one's life)."""
        agent = self.tether.registry.get(ADMIN, "helper")
        resource = f"{self.tether.settings.issuer}/mcp/rec"
        issued = self.tether.tokens.client_credentials(agent, resource, None, None)
        self.token = issued.access_token

    def received(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def world(
    cli_env: Path,
    capfd: pytest.CaptureFixture[str],
    cli_clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[World]:
    idp_key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    jwk["kid"] = "idp-1"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    cli_env.mkdir()
    (cli_env / "tether.toml").write_text(
        f'[[idp]]\nissuer = "{IDP_ISSUER}"\naudience = "tether"\njwks_file = "{jwks}"\n'
    )
    cli = initialised(Cli(capfd))
    people = {
        e: person_token(idp_key, e, ttl=7200) for e in ("alice@example.com", "bob@example.com")
    }
    record = tmp_path / "received.jsonl"
    record.touch()
    with Tether.open(Settings.from_env()) as tether:
        tether.upstreams.add(
            ADMIN,
            UpstreamSpec(
                "rec", command=f"{sys.executable} {RECORDER}", env=[f"RECORD_FILE={record}"]
            ),
        )
        tether.registry.register(ADMIN, spec("helper"))  # alice's
        tether.registry.register(ADMIN, spec("bobs", owner="bob@example.com"))
        tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "rec/record", approval="owner"))
        agent = tether.registry.get(ADMIN, "helper")
        resource = f"{tether.settings.issuer}/mcp/rec"
        token = tether.tokens.client_credentials(agent, resource, None, None).access_token
        yield World(cli, tether, token, record, people, monkeypatch)


async def _session(world: World, steps: Any) -> Any:
    """Run ``steps(call)`` with one upstream session; ``call(args)`` is a tools/call of
    ``record`` through the gateway."""
    gate = Gateway(world.tether, "rec")
    async with UpstreamSession(world.tether.upstreams.get("rec")) as upstream:
        await gate.list_tools(world.token, upstream)  # as an agent does: pins the tool

        async def call(args: dict[str, Any]) -> dict[str, Any]:
            return await gate.call_tool(world.token, upstream, "record", args)

        return await steps(call)


def _calls(world: World, *argss: dict[str, Any]) -> list[dict[str, Any]]:
    async def steps(call: Any) -> list[dict[str, Any]]:
        return [await call(args) for args in argss]

    result: list[dict[str, Any]] = anyio.run(_session, world, steps)
    return result


def _held(result: dict[str, Any]) -> str:
    """The pending approval a held answer names (in its text and its _meta)."""
    assert result["isError"] is True
    approval = result["_meta"][APPROVAL_META]
    text = result["content"][0]["text"]
    assert text.startswith(f"held for approval {approval}: ")
    assert "held for approval by the agent's owner: grant g_" in text
    assert text.endswith(f"approve with: tether approvals approve {approval}")
    return str(approval)


def _secret_free(world: World) -> None:
    world.tether.events.flush()
    bodies = "".join(body for _, _, body in world.tether.events.bodies())
    assert SECRET not in bodies


@pytest.mark.slow
def test_a_held_call_approved_by_the_owner_runs_exactly_once(world: World) -> None:
    first, retry = _calls(world, ARGS, ARGS)
    approval = _held(first)
    assert _held(retry) == approval  # a retry asks no second approval
    assert world.received() == []  # nothing reached the upstream

    alice = world.as_("alice@example.com")
    [listed] = alice.json("approvals", "list", "--state", "pending")["approvals"]
    assert listed["id"] == approval and listed["resource"] == "rec/record"
    assert SECRET not in json.dumps(listed)  # the listing shows the redacted form
    shown = alice.json("approvals", "show", approval)
    assert shown["arguments"] == ARGS  # the approver sees the exact arguments
    assert shown["chain"][-1] == world.tether.registry.agent_id("helper")

    bob = world.as_("bob@example.com")
    assert bob.json("approvals", "list")["approvals"] == []
    refused = bob.json("approvals", "approve", approval, expect=1)
    assert refused["error"] == "not_found"

    approved = world.as_("alice@example.com").json(
        "approvals", "approve", approval, "--reason", "quarterly report"
    )
    assert approved["state"] == "approved"

    done, replay, changed = _calls(world, ARGS, ARGS, {**ARGS, "path": "/etc/passwd"})
    assert done.get("isError") is not True and done["content"][0]["text"] == "recorded"
    again, other = _held(replay), _held(changed)
    assert len({approval, again, other}) == 3  # each needs an approval of its own
    assert world.received() == [ARGS]  # exactly once, with exactly those arguments

    tether = world.tether
    tether.events.flush()
    decisions = [e for e in tether.events.list(type="decision") if e.resource == "rec/record"]
    # held, held; held again then allowed with the approval; held, held
    assert [d.decision for d in decisions] == ["deny", "deny", "deny", "allow", "deny", "deny"]
    assert [d.detail.get("approval") for d in decisions] == ["owner"] * 3 + [None] + ["owner"] * 2
    assert decisions[3].reasons[0] == f"allowed with approval {approval}"
    [used] = tether.events.list(type="approval.used")
    assert used.detail["id"] == approval
    [decided] = tether.events.list(type="approval.approved")
    assert decided.actor == "user:alice@example.com"
    bobs = [e for e in tether.events.list(type="approval.refused") if e.subject == approval]
    assert [e.actor for e in bobs] == ["user:bob@example.com"]
    requested = tether.events.list(type="approval.requested")
    assert [e.detail["id"] for e in requested] == [approval, again, other]
    assert all(e.detail["redacted_arguments"]["path"] for e in requested)
    _secret_free(world)


@pytest.mark.slow
def test_an_expired_approval_is_refused(world: World, cli_clock: Clock) -> None:
    [first] = _calls(world, ARGS)
    approval = _held(first)
    alice = world.as_("alice@example.com")
    assert alice.json("approvals", "approve", approval)["state"] == "approved"
    cli_clock.advance(seconds=world.tether.settings.guard.approval_ttl.total_seconds())
    world.fresh_token()  # the same chain: the same call
    [late] = _calls(world, ARGS)
    assert _held(late) != approval  # the approval expired unused: a new one is asked
    assert world.received() == []
    assert alice.json("approvals", "show", approval)["state"] == "expired"
    # a pending approval past its expiry cannot be approved
    cli_clock.advance(seconds=world.tether.settings.guard.approval_ttl.total_seconds())
    code, _, err = alice("approvals", "approve", _held(late))
    assert code == 3 and "is expired" in err
    _secret_free(world)


@pytest.mark.slow
def test_a_denied_approval_stays_denied(world: World) -> None:
    [first] = _calls(world, ARGS)
    approval = _held(first)
    denied = world.as_("alice@example.com").json(
        "approvals", "deny", approval, "--reason", "not this file"
    )
    assert denied["state"] == "denied"
    code, _, err = world.as_(None)("approvals", "approve", approval)
    assert code == 3 and "is denied" in err
    [again] = _calls(world, ARGS)
    assert _held(again) != approval  # still refused; a new approval is asked
    assert world.received() == []
    [event] = world.tether.events.list(type="approval.denied")
    assert event.actor == "user:alice@example.com"


@pytest.mark.slow
def test_a_call_waits_for_its_approval_when_configured(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    tether = world.tether
    guard = tether.settings.guard.model_copy(update={"approval_wait": timedelta(seconds=5)})
    monkeypatch.setattr(tether, "settings", tether.settings.model_copy(update={"guard": guard}))
    looks: list[float] = []
    told: list[tuple[float, float | None, str]] = []

    async def person_approves_on_the_second_look(seconds: float) -> None:
        looks.append(seconds)
        if len(looks) == 2:
            [pending] = tether.approvals.list(ADMIN, state="pending")
            tether.approvals.approve(Caller.user("alice@example.com"), pending.id)  # type: ignore[arg-type]

    async def progress(done: float, total: float | None, message: str) -> None:
        told.append((done, total, message))

    async def run() -> dict[str, Any]:
        gate = Gateway(tether, "rec", sleep=person_approves_on_the_second_look)
        async with UpstreamSession(tether.upstreams.get("rec")) as upstream:
            await gate.list_tools(world.token, upstream)
            return await gate.call_tool(world.token, upstream, "record", ARGS, progress)

    result = anyio.run(run)
    assert result.get("isError") is not True and world.received() == [ARGS]
    assert looks == [0.25, 0.25]
    [(done, total, message)] = told  # one notice while it was still pending
    assert done == 0.25 and total == 5.0 and message.startswith("waiting for approval ap_")
    # nobody approves: the call waits its time out and is answered with the approval
    looks.clear()

    async def nobody(seconds: float) -> None:
        looks.append(seconds)

    async def unanswered() -> dict[str, Any]:
        gate = Gateway(tether, "rec", sleep=nobody)
        async with UpstreamSession(tether.upstreams.get("rec")) as upstream:
            await gate.list_tools(world.token, upstream)
            return await gate.call_tool(world.token, upstream, "record", ARGS)

    _held(anyio.run(unanswered))
    assert len(looks) == 20  # 5 s in looks of 0.25 s
    assert world.received() == [ARGS]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the cluster case
def test_gateways_racing_for_one_approval_let_one_call_through(
    world: World, db_url: str, tmp_path: Path
) -> None:
    """Four gateway processes on one PostgreSQL decide the same approved call at once:
    one is allowed (and the approval used), none of the others runs it."""

    [held] = _calls(world, ARGS)
    approval = _held(held)
    assert world.as_("alice@example.com").json("approvals", "approve", approval)["state"] == (
        "approved"
    )
    [tool] = [p.pinned for p in world.tether.pins.list("rec") if p.name == "record"]
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "helpers" / "approval_racer.py"),
                world.token,
                json.dumps(ARGS),
                json.dumps(tool),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        for _ in range(4)
    ]
    for racer in racers:
        assert racer.stdout is not None
        assert racer.stdout.readline().strip() == "ready", racer.communicate(timeout=60)
    go.touch()
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        outcomes.append(out.strip())
    assert outcomes.count("allowed") == 1, outcomes
    for other in (o for o in outcomes if o != "allowed"):  # too late: used, or a new approval
        used = f"refused: approval {approval} was already used (or expired)"
        assert other == "held" or other.startswith(used), other
    allowed = [
        e
        for e in world.tether.events.list(type="decision")
        if e.resource == "rec/record" and e.decision == "allow"
    ]
    assert len(allowed) == 1 and allowed[0].reasons[0] == f"allowed with approval {approval}"
    assert len(world.tether.events.list(type="approval.used")) == 1


@pytest.mark.slow
def test_failures_on_the_way_to_an_approval_are_refusals_on_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    tether = world.tether

    def down(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("the store is down")

    with monkeypatch.context() as patch:  # nobody can be asked: refused, not held
        patch.setattr(tether.approvals, "request", down)
        [first] = _calls(world, ARGS)
    text = first["content"][0]["text"]
    assert first["isError"] and "_meta" not in first
    assert "no approval could be asked: the store is down" in text
    approval = _held(_calls(world, ARGS)[0])
    world.as_("alice@example.com").json("approvals", "approve", approval)
    with monkeypatch.context() as patch:  # the approval cannot be looked up: refused
        patch.setattr(tether.approvals, "granted", down)
        [blind] = _calls(world, ARGS)
    assert "_meta" not in blind and "no approval could be looked up" in blind["content"][0]["text"]
    with monkeypatch.context() as patch:  # the approval cannot be used: refused
        patch.setattr(tether.approvals, "consume", down)
        [unused] = _calls(world, ARGS)
    assert "decision record could not be written" in unused["content"][0]["text"]
    assert world.received() == []
    [done] = _calls(world, ARGS)  # the approval survived the failures, and is used now
    assert done["content"][0]["text"] == "recorded" and world.received() == [ARGS]
    tether.refusals.flush()
    refused = [e.reasons[0] for e in tether.events.list(type="tool.refused")]
    assert any("no approval could be asked" in r for r in refused)
    assert any("no approval could be looked up" in r for r in refused)
    denied = [e.reasons[0] for e in tether.events.list(type="decision") if e.decision == "deny"]
    assert any("decision record could not be written" in r for r in denied)


@pytest.mark.slow
def test_an_owners_approval_does_not_lift_a_hold_that_needs_an_admin(world: World) -> None:
    """Red team: alice approves her agent's held call; before it runs, the same call comes
    to need an admin's approval (a guardrail ``@approval("admin")``; a session that an
    admin-held rule reads). The approval alice gave is not an admin's: the call must stay
    held, not run on it."""
    [first] = _calls(world, ARGS)
    approval = _held(first)
    world.as_("alice@example.com").json("approvals", "approve", approval)
    world.tether.guardrails.add(
        ADMIN,
        '@id("admin-only") @approval("admin") forbid (principal, action, '
        'resource == Resource::"rec/record");',
    )
    [second] = _calls(world, ARGS)
    assert second["isError"] is True, second
    assert second["_meta"][APPROVAL_META] != approval  # a new approval, asked of an admin
    assert "held for approval by an admin" in second["content"][0]["text"]
    assert world.received() == []
    assert world.tether.approvals.state(approval) == "approved"  # not spent on it
