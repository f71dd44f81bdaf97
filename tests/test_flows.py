"""Issue 17, item 3: the labels the work touched (tether.upstreams.flows) and the token
family they are tracked by (the ``tether_family`` claim).

The service on both stores; atomic across real processes on PostgreSQL (two processes
touching the same scopes keep the latest event; a touch in one is read by the other)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Clock, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exchange import ACCESS, GITHUB, Org, decode, make_org, spiffe, two_hops

from tether.callers import Caller
from tether.core import Tether
from tether.grants import GrantSpec
from tether.store import flow_labels
from tether.upstreams.flows import TRACKED, flow_reads, flow_scopes

ADMIN = Caller.admin()
SRC = Path(__file__).resolve().parents[1] / "src"


# ---- scopes ----------------------------------------------------------------------------


def test_scopes_are_the_family_and_each_agent_with_its_person() -> None:
    a, b = spiffe("a"), spiffe("b")
    assert flow_scopes("root1", ("user:alice@example.com", a, b)) == (
        "family:root1",
        f"pair:{a}|alice@example.com",
        f"pair:{b}|alice@example.com",
        f"agent:{a}",
        f"agent:{b}",
    )
    assert flow_scopes("root2", (a,)) == ("family:root2", f"pair:{a}|", f"agent:{a}")


def test_an_agents_own_token_does_not_launder_what_its_work_for_a_person_touched(
    tether: Tether,
) -> None:
    """Red team: agent a reads sensitive data and takes in untrusted content working for
    alice (a delegated token), then takes its own token (client credentials: no person, a
    new family): the session of that call must still hold both labels. And what a did on
    its own reaches its work for a person; its work for bob does not reach alice's."""
    a = spiffe("a")
    for_alice = ("user:alice@example.com", a)
    tether.flows.touch(flow_scopes("f1", for_alice), {"sensitive"}, 5, "fs/read")
    tether.flows.touch(flow_scopes("f1", for_alice), {"untrusted"}, 6, "web/fetch")
    alone = tether.flows.touched(flow_reads("f2", (a,)))
    assert sorted(alone) == ["sensitive", "untrusted"]
    assert tether.flows.touched(flow_reads("f3", ("user:bob@example.com", a))) == {}
    tether.flows.touch(flow_scopes("f2", (a,)), {"sensitive"}, 9, "fs/own")
    assert tether.flows.touched(flow_reads("f3", ("user:bob@example.com", a))) == {
        "sensitive": {"seq": 9, "resource": "fs/own"}
    }


# ---- the service -----------------------------------------------------------------------


def test_touched_gives_the_latest_event_per_label_of_any_scope(
    tether: Tether, clock: Clock
) -> None:
    flows = tether.flows
    assert flows.touched(["family:x"]) == {}
    flows.touch(["family:x", "pair:a|"], {"sensitive"}, 10, "fs/read_file")
    flows.touch(["pair:a|"], {"untrusted", "egress", "destructive"}, 12, "web/fetch")
    flows.touch(["family:x"], {"sensitive"}, 7, "fs/older")  # an earlier event: kept out
    assert flows.touched(["family:x"]) == {"sensitive": {"seq": 10, "resource": "fs/read_file"}}
    assert flows.touched(["family:y", "pair:a|"]) == {
        "sensitive": {"seq": 10, "resource": "fs/read_file"},
        "untrusted": {"seq": 12, "resource": "web/fetch"},
    }
    flows.touch(["family:z"], {"sensitive"}, 15, "fs/secrets")
    assert flows.touched(["family:x", "family:z"])["sensitive"]["seq"] == 15
    # egress and destructive are properties of a call: never remembered
    with tether.store.read() as conn:
        assert set(conn.execute(sa.select(flow_labels.c.label)).scalars()) <= TRACKED


def test_what_is_older_than_the_window_no_longer_counts_and_is_pruned(
    tether: Tether, clock: Clock
) -> None:
    flows = tether.flows
    flows.touch(["family:x"], {"sensitive"}, 1, "fs/a")
    clock.advance(hours=23)
    flows.touch(["family:x"], {"untrusted"}, 2, "web/b")
    assert set(flows.touched(["family:x"])) == {"sensitive", "untrusted"}
    clock.advance(hours=2)  # 25 h after the first, 2 h after the second
    assert set(flows.touched(["family:x"])) == {"untrusted"}
    assert flows.touched(["family:x"], since=clock() - timedelta(days=2))["sensitive"]["seq"] == 1
    assert flows.prune() == 1
    assert flows.prune() == 0
    assert flows.touched(["family:x"], since=clock() - timedelta(days=2)) == {
        "untrusted": {"seq": 2, "resource": "web/b"}
    }
    # a later touch of a label revives it within the window
    flows.touch(["family:x"], {"sensitive"}, 3, "fs/c")
    assert flows.touched(["family:x"])["sensitive"] == {"seq": 3, "resource": "fs/c"}


def test_nothing_to_record_writes_nothing(tether: Tether) -> None:
    tether.flows.touch(["family:x"], {"egress", "plain"}, 5, "web/post")
    tether.flows.touch([], {"sensitive"}, 5, "fs/read")
    with tether.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(flow_labels)).scalar() == 0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    touches=st.lists(
        st.tuples(
            st.sets(st.sampled_from(["family:r", "pair:a|p", "pair:b|p"]), min_size=1),
            st.sets(st.sampled_from(["sensitive", "untrusted", "egress"]), min_size=1),
            st.integers(1, 1000),
        ),
        max_size=12,
    )
)
def test_the_latest_event_wins_whatever_the_order(
    tether: Tether, touches: list[tuple[set[str], set[str], int]]
) -> None:
    with tether.store.write() as conn:
        conn.execute(sa.delete(flow_labels))
    for scopes, labels, seq in touches:
        tether.flows.touch(scopes, labels, seq, f"s/{seq}")
    for scope in ("family:r", "pair:a|p", "pair:b|p"):
        expected: dict[str, int] = {}
        for scopes, labels, seq in touches:
            for label in labels & TRACKED if scope in scopes else ():
                expected[label] = max(expected.get(label, 0), seq)
        got = tether.flows.touched([scope])
        assert {label: v["seq"] for label, v in got.items()} == expected
        assert all(v["resource"] == f"s/{v['seq']}" for v in got.values())


def test_concurrent_touches_in_one_process_keep_the_latest_event(tether: Tether) -> None:
    """Threads touching the same rows at once (their touches batched into shared
    transactions): every scope ends with the highest sequence number of all."""
    scopes = ["family:t", "pair:a|p"]

    def worker(first: int) -> None:
        for seq in range(first, 400, 8):
            tether.flows.touch(scopes, ["sensitive", "untrusted"], seq, f"s/{seq}")

    threads = [threading.Thread(target=worker, args=(first,)) for first in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for scope in scopes:
        assert tether.flows.touched([scope]) == {
            "sensitive": {"seq": 399, "resource": "s/399"},
            "untrusted": {"seq": 399, "resource": "s/399"},
        }


# ---- across processes (PostgreSQL) -----------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tether.config import Settings
    from tether.core import Tether

    home, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    with Tether.open(Settings.load(Path(home), db_url=url)) as tether:
        if mode == "read":
            print(sorted((k, v["seq"]) for k, v in tether.flows.touched(["family:f"]).items()))
        else:
            first = int(mode)
            for seq in range(first, first + 400, 2):
                tether.flows.touch(["family:f", "pair:a|p", "pair:b|p"], ["sensitive"], seq, "x")
    """
)


def _child(home: Path, url: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(home), url, mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_flows_are_shared_and_atomic_across_processes_on_postgresql(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    from tether.config import Settings

    home = tmp_path / "home"
    home.mkdir()
    settings = Settings.load(home, db_url=postgres_schema_url)
    with Tether.open(settings) as tether:
        tether.flows.touch(["family:f"], ["untrusted"], 3, "web/fetch")
        # a touch made here is read by another process
        assert _done(_child(home, postgres_schema_url, "read")).strip() == "[('untrusted', 3)]"
        # two processes racing on the same rows: the latest event is kept, in every scope
        racers = [_child(home, postgres_schema_url, first) for first in ("1", "2")]
        for racer in racers:
            _done(racer)
        for scope in ("family:f", "pair:a|p", "pair:b|p"):
            assert tether.flows.touched([scope])["sensitive"]["seq"] == 400
        # and what the other processes wrote is read here
        assert tether.flows.touched(["family:f"])["untrusted"]["seq"] == 3


# ---- the token family ------------------------------------------------------------------


@pytest.fixture
def org(make_settings: Any, home: Path) -> Org:
    return make_org(make_settings, home)


def test_every_token_names_its_family_root(org: Org) -> None:
    # an agent's own token is the root of its family
    own = org.own_token("a", GITHUB)
    assert own.status_code == 200, own.text
    claims = decode(own.json()["access_token"])
    assert claims["tether_family"] == claims["jti"]
    # a person's token starts a family at the first Tether token; every hop keeps it
    hop1, hop2 = two_hops(org)
    first, second = decode(hop1), decode(hop2)
    assert first["tether_family"] == first["jti"]
    assert second["tether_family"] == first["jti"] != second["jti"]
    assert org.tether.tokens.verify(hop2, GITHUB).family == first["jti"]
    introspected = org.client.post(
        "/oauth2/introspect", data={"token": hop2}, headers=org.admin
    ).json()
    assert introspected["active"] is True
    assert introspected["tether_family"] == first["jti"]
    [exchanged] = [
        e
        for e in org.tether.events.list(type="token.exchanged")
        if e.detail["jti"] == second["jti"]
    ]
    assert exchanged.detail["family"] == first["jti"]


def test_an_agents_token_handed_on_keeps_its_family(tether: Tether) -> None:
    for name in ("a", "b"):
        tether.registry.register(ADMIN, spec(name))
    tether.grants.add(ADMIN, GrantSpec("a", "delegate", spiffe("b")))
    tether.grants.add(ADMIN, GrantSpec("a", "tools/call", "x/*"))
    tether.grants.add(ADMIN, GrantSpec("b", "tools/call", "x/*"))
    a = tether.registry.get(ADMIN, "a")
    b = tether.registry.get(ADMIN, "b")
    handoff = tether.tokens.client_credentials(a, spiffe("b"), None)
    root = decode(handoff.access_token)["jti"]
    issuer = tether.settings.issuer
    tether.upstreams.add(ADMIN, _server("x"))
    exchanged = tether.tokens.exchange(b, handoff.access_token, ACCESS, f"{issuer}/mcp/x", None)
    verified = tether.tokens.verify(exchanged.access_token, f"{issuer}/mcp/x")
    assert verified.family == root
    assert verified.chain == (spiffe("a"), spiffe("b"))
    assert flow_scopes(verified.family, verified.chain) == (
        f"family:{root}",
        f"pair:{spiffe('a')}|",
        f"pair:{spiffe('b')}|",
        f"agent:{spiffe('a')}",
        f"agent:{spiffe('b')}",
    )


def _server(name: str) -> Any:
    from tether.upstreams.servers import UpstreamSpec

    return UpstreamSpec(name, url=f"https://{name}.example/mcp")
