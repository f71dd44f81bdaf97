"""The kill switch (DESIGN §5.4, "kill wins"): one command stops an agent and everything it
spawned, at every enforcement point, before it returns; what it did is on record.

The delegation set-up is the one of ``test_exchange.py``: alice → a → b (b acts for alice
through a), and here also ``a1`` registered with ``--parent a``.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, initialised
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exchange import GITHUB, Org, make_org, spiffe, two_hops

from tether import AgentSpec, Caller, GrantSpec, Tether, generate_key_pair
from tether.errors import Forbidden, IllegalTransition, InvalidRequest, InvalidToken, NotFound
from tether.model import AgentState
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"


def _spawn(
    tether: Tether, name: str, parent: str | None, owner: str = "alice@example.com", days: int = 60
) -> None:
    """Register ``name`` (a spawned agent must not outlive its parent: give it fewer days)."""
    tether.registry.register(
        ADMIN,
        AgentSpec(
            name=name,
            owner=owner,
            public_key=generate_key_pair().public_key,
            parent=parent,
            expires_in=timedelta(days=days),
        ),
    )


@pytest.fixture
def org(make_settings: Any, home: Path) -> Org:
    return make_org(make_settings, home)


def _mcp_call(org: Org, token: str) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    return org.client.post("/mcp/github", json=body, headers=headers)


def test_a_kill_cascades_to_what_a_spawned_not_to_whom_it_delegated(org: Org) -> None:
    tether = org.tether
    tether.upstreams.add(ADMIN, UpstreamSpec("github", command=f"{sys.executable} {SERVER}"))
    _spawn(tether, "a1", parent="a")
    _spawn(tether, "a2", parent="a1", days=50)  # a grandchild: the parent chain leads to a
    hop1, hop2 = two_hops(org)  # alice → a → b
    own_a = org.own_token("a", GITHUB).json()["access_token"]
    own_b = org.own_token("b", GITHUB).json()["access_token"]
    assert all(org.active(t) for t in (hop1, hop2, own_a, own_b))

    answer = org.client.post(
        "/v1/agents/a/kill", json={"reason": "leaking tickets"}, headers=org.admin
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["agents_killed"] == [spiffe("a"), spiffe("a1"), spiffe("a2")]
    assert report["failures"] == [] and report["reason"] == "leaking tickets"
    # a's own token, hop1 (issued to a) and hop2 (exchanged from hop1): one family each
    assert report["tokens_revoked"] == 3 and report["token_families_revoked"] == 2

    states = {a.name: a.state for a in tether.registry.list(ADMIN)}
    assert states == {
        "a": AgentState.KILLED,
        "a1": AgentState.KILLED,
        "a2": AgentState.KILLED,
        "b": AgentState.ACTIVE,  # only delegated to: keeps its identity
    }
    # the token exchanged through a for b is dead, at introspection and at the gateway
    assert not org.active(hop2) and not org.active(hop1) and not org.active(own_a)
    refused = _mcp_call(org, hop2)
    assert (
        refused.status_code == 401 and "resource_metadata=" in refused.headers["www-authenticate"]
    )
    # b's own token, which does not pass through a, still works
    assert org.active(own_b)
    assert tether.tokens.verify(own_b, GITHUB).chain == (spiffe("b"),)
    with pytest.raises(InvalidToken):
        tether.tokens.verify(hop2, GITHUB)


def test_a_killed_agent_cannot_come_back(org: Org) -> None:
    tether = org.tether
    tether.killswitch.kill(ADMIN, "a", reason="compromised")
    with pytest.raises(IllegalTransition, match="killed for good"):
        tether.registry.resume(ADMIN, "a")
    with pytest.raises(InvalidRequest, match="killed"):
        tether.grants.add(ADMIN, GrantSpec("a", "tools/call", "github/list_issues"))
    token = org.own_token("a", GITHUB)
    assert token.status_code in (400, 401) and "access_token" not in token.json()
    with pytest.raises(IllegalTransition, match="already killed"):
        tether.killswitch.kill(ADMIN, "a")
    over_http = org.client.patch("/v1/agents/a", json={"state": "active"}, headers=org.admin)
    assert over_http.status_code == 409


def test_only_an_admin_or_the_owner_kills_and_bulk_kills_are_for_admins(tether: Tether) -> None:
    _spawn(tether, "mine", None, owner="alice@example.com")
    _spawn(tether, "theirs", None, owner="bob@example.com")
    alice = Caller.user("alice@example.com")  # type: ignore[arg-type]
    with pytest.raises(NotFound):  # bob's agent is invisible to alice
        tether.killswitch.kill(alice, "theirs")
    with pytest.raises(Forbidden):
        tether.killswitch.kill_owner(alice, "bob@example.com")
    with pytest.raises(InvalidRequest, match="--confirm"):
        tether.killswitch.kill_all(ADMIN, confirm=False)
    refused = tether.events.list(type="access.refused")
    assert [(e.actor, e.detail["op"]) for e in refused] == [("user:alice@example.com", "kill")] * 2
    assert tether.registry.get(ADMIN, "theirs").state is AgentState.ACTIVE
    report = tether.killswitch.kill(alice, "mine", reason="mine to stop")
    assert report.agents_killed == [tether.registry.agent_id("mine")]


def test_bulk_kills_by_owner_and_the_panic_button(tether: Tether) -> None:
    _spawn(tether, "a", None, owner="alice@example.com")
    _spawn(tether, "a-child", "a", owner="alice@example.com", days=50)
    _spawn(tether, "b", None, owner="bob@example.com")
    _spawn(tether, "c", None, owner="carol@example.com")
    tether.registry.retire(ADMIN, "c")  # retired stays retired
    report = tether.killswitch.kill_owner(ADMIN, "alice@example.com", reason="alice phished")
    assert sorted(report.agents_killed) == sorted(
        tether.registry.agent_id(n) for n in ("a", "a-child")
    )
    assert tether.registry.get(ADMIN, "b").state is AgentState.ACTIVE
    everything = tether.killswitch.kill_all(ADMIN, confirm=True, reason="incident 42")
    assert everything.agents_killed == [tether.registry.agent_id("b")]
    states = {a.name: a.state.value for a in tether.registry.list(ADMIN)}
    assert states == {"a": "killed", "a-child": "killed", "b": "killed", "c": "retired"}


def test_the_cli_kill_its_event_and_explain_show_who_and_why(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = initialised(Cli(capsys))
    cli.json("agent", "register", "rogue", "--owner", "alice@example.com")
    cli.json(
        "agent", "register", "rogue-helper", "--owner", "alice@example.com",
        "--parent", "rogue", "--expires", "30d",
    )  # fmt: skip
    code, out, err = cli("kill")
    assert code == 2 and "exactly one" in (out + err) and "Traceback" not in out + err
    done = cli.json("kill", "rogue", "--reason", "exfiltrating secrets")
    assert [a.rsplit("/", 1)[1] for a in done["agents_killed"]] == ["rogue", "rogue-helper"]
    [completed] = cli.json("audit", "search", "--type", "kill.completed")["events"]
    assert completed["actor"] == "admin" and completed["reasons"] == ["exfiltrating secrets"]
    assert completed["detail"]["agents_killed"] == done["agents_killed"]
    for key in ("tokens_revoked", "leases_revoked", "secrets_rotated", "sessions_closed"):
        assert key in completed["detail"]
    explained = cli.json("audit", "explain", str(completed["seq"]))
    assert [link["principal"] for link in explained["chain"]] == ["admin"]  # who pressed it
    assert explained["reasons"] == ["exfiltrating secrets"]  # and why
    code, out, _ = cli("audit", "explain", str(completed["seq"]))
    assert code == 0 and "admin" in out and "exfiltrating secrets" in out
    killed = cli.json("audit", "search", "--type", "agent.killed")["events"]
    assert [e["detail"].get("cascade_from") for e in killed] == [None, done["agents_killed"][0]]
    code, out, err = cli("agent", "resume", "rogue")
    assert code == 3 and "killed for good" in out + err
    code, out, err = cli("kill", "rogue-helper", "--no-cascade")
    assert code == 3 and "already killed" in out + err


@st.composite
def _forest(draw: st.DrawFn) -> list[int | None]:
    """Parents of agents 0..n-1: each agent's parent is an earlier agent, or none."""
    n = draw(st.integers(min_value=1, max_value=12))
    return [draw(st.none() | st.integers(0, i - 1)) if i else None for i in range(n)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parents=_forest(), data=st.data())
def test_a_kill_reaches_exactly_the_descendants(
    make_settings: Any, parents: list[int | None], data: st.DataObject
) -> None:
    """Whatever the spawn forest: killing agent k kills k and every agent whose parent chain
    leads to k (with --no-cascade: k only), and nothing else changes."""
    target = data.draw(st.integers(0, len(parents) - 1))
    cascade = data.draw(st.booleans())
    tether, _ = Tether.init(make_settings())  # idempotent: the same home every example
    with tether:
        tag = len(tether.registry.list(ADMIN))  # fresh names: earlier examples' agents stay
        names = [f"n{tag}-{i}" for i in range(len(parents))]
        for i, parent in enumerate(parents):
            _spawn(tether, names[i], names[parent] if parent is not None else None, days=80 - i)
        report = tether.killswitch.kill(ADMIN, names[target], cascade=cascade)

        def leads_to_target(i: int | None) -> bool:
            while i is not None:
                if i == target:
                    return True
                i = parents[i]
            return False

        expected = {
            names[i] for i in range(len(parents)) if i == target or (cascade and leads_to_target(i))
        }
        killed = {a.rsplit("/", 1)[1] for a in report.agents_killed}
        assert killed == expected
        for i, name in enumerate(names):
            state = tether.registry.get(ADMIN, name).state
            assert (state is AgentState.KILLED) == (name in expected), (i, state)
            assert state in (AgentState.KILLED, AgentState.ACTIVE)
