"""The vault broker against a real OpenBao dev server (one per module, on a free port).

The broker runs with a token of its own that holds only what the broker needs (the
``tether-broker`` policy below, plus ``ci-read``, the policy it hands out); the root
token sets things up and checks results through OpenBao's own API.
"""

from __future__ import annotations

import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
from conftest import Clock
from helpers.openbao import OpenBao, free_port, openbao
from helpers.vault_broker import broker_for
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tether.config import VaultSettings
from tether.core import Tether
from tether.errors import InvalidRequest, StoreUnavailable, TetherError
from tether.store import vault_issued
from tether.vault import Broker, VaultClient, VaultRef, VaultUnavailable, parse_ref
from tether.vault.client import NewToken
from tether.vault.rotation import RotationFailed, new_value

pytestmark = pytest.mark.slow

# The ci/* rule is needed: OpenBao takes the most specific path of all a token's policies,
# so ci-read's read-only "secret/data/ci/*" would otherwise shadow "secret/data/*".
BROKER_POLICY = """
path "secret/data/*" { capabilities = ["create", "read", "update"] }
path "secret/data/ci/*" { capabilities = ["create", "read", "update"] }
path "auth/token/create-orphan" { capabilities = ["create", "update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""
CI_READ = 'path "secret/data/ci/*" { capabilities = ["read"] }'


@dataclass
class Vault:
    """The module's OpenBao, set up: root access, a broker token, an AppRole."""

    server: OpenBao
    root: Any  # hvac.Client with the root token
    broker_token: str
    role_id: str
    secret_id: str

    @property
    def address(self) -> str:
        return self.server.address

    def client(self, token: str) -> Any:
        return hvac.Client(url=self.address, token=token, timeout=5)

    def put(self, path: str, **data: str) -> int:
        answer = self.root.secrets.kv.v2.create_or_update_secret(
            path, secret=data, mount_point="secret"
        )
        version: int = answer["data"]["version"]
        return version

    def get(self, path: str) -> tuple[dict[str, str], int]:
        answer = self.root.secrets.kv.v2.read_secret_version(
            path, mount_point="secret", raise_on_deleted_version=True
        )
        return answer["data"]["data"], answer["data"]["metadata"]["version"]


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    with openbao(tmp_path_factory.mktemp("openbao")) as server:
        root = hvac.Client(url=server.address, token=server.root_token, timeout=5)
        mounts = root.sys.list_mounted_secrets_engines()["data"]
        assert mounts["secret/"]["type"] == "kv"
        assert mounts["secret/"]["options"]["version"] == "2"
        root.sys.create_or_update_policy("tether-broker", BROKER_POLICY)
        root.sys.create_or_update_policy("ci-read", CI_READ)
        broker = root.auth.token.create_orphan(
            policies=["tether-broker", "ci-read"], ttl="1h", display_name="tether-test"
        )
        root.sys.enable_auth_method("approle")
        root.auth.approle.create_or_update_approle(
            "tether", token_policies=["tether-broker", "ci-read"], token_ttl="20m"
        )
        role_id = root.auth.approle.read_role_id("tether")["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id("tether")["data"]["secret_id"]
        yield Vault(server, root, broker["auth"]["client_token"], role_id, secret_id)


@pytest.fixture
def path() -> str:
    """A KV path of this test alone (the server is shared)."""
    return f"ci/t{secrets.token_hex(6)}"


@pytest.fixture
def make_broker(vault: Vault, tether: Tether) -> Callable[..., Broker]:
    def make(client: VaultClient | None = None, **overrides: Any) -> Broker:
        fields: dict[str, Any] = {"address": vault.address, "token": vault.broker_token}
        fields.update(overrides)
        settings = VaultSettings(**fields)
        return broker_for(tether, settings, client)

    return make


def rows(tether: Tether, agent: str | None = None) -> list[Any]:
    query = select(vault_issued).order_by(vault_issued.c.id)
    if agent is not None:
        query = query.where(vault_issued.c.agent_id == agent)
    with tether.store.read() as conn:
        return list(conn.execute(query))


def all_events(tether: Tether) -> str:
    return "\n".join(body for _, _, body in tether.events.bodies())


def agent(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


# ---- 1. references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "where", "name", "resource"),
    [
        ("vault:github#token", "static", "github", "token", "vault/github"),
        ("vault:team/ci#api_key", "static", "team/ci", "api_key", "vault/team/ci"),
        ("vault:a.b/c-d_e/f#x.y-z", "static", "a.b/c-d_e/f", "x.y-z", "vault/a.b/c-d_e/f"),
        ("vault-token:ci-read", "dynamic", "ci-read", None, "vault-token/ci-read"),
        ("vault-token:deploy_2", "dynamic", "deploy_2", None, "vault-token/deploy_2"),
    ],
)
def test_parse_ref_accepts_the_documented_forms(
    text: str, kind: str, where: str, name: str | None, resource: str
) -> None:
    ref = parse_ref(text)
    assert ref == VaultRef(kind, where, name, text)  # type: ignore[arg-type]
    assert ref.resource == resource
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a vault reference"),
        ("env:X", "not a vault reference"),
        ("vault", "not a vault reference"),
        ("Vault:github#token", "not a vault reference"),
        ("vault:github", "names no field"),
        ("vault:#token", "invalid path"),
        ("vault:github#", "invalid field"),
        ("vault:/github#token", "invalid path"),
        ("vault:github/#token", "invalid path"),
        ("vault:a//b#token", "invalid path"),
        ("vault:../github#token", "'..'"),
        ("vault:a/../b#token", "'..'"),
        ("vault:a/./b#token", "'..'"),
        ("vault:a..b#token", "'..'"),
        ("vault:git hub#token", "invalid path"),
        ("vault:github#to ken", "invalid field"),
        ("vault:github#a#b", "invalid field"),
        ("vault:github#token\n", "invalid field"),
        ("vault:gïthub#token", "invalid path"),
        ("vault:github#" + "f" * 256, "invalid field"),
        ("vault:" + "p" * 510 + "#f", "at most 512"),
        ("vault-token:", "invalid policy"),
        ("vault-token:ci.read", "invalid policy"),
        ("vault-token:a/b", "invalid policy"),
        ("vault-token:root", "never issues root"),
        ("vault-token:Deploy_2", "the vault reads it as 'deploy_2'"),
    ],
)
def test_parse_ref_refuses_bad_references_clearly(text: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_ref(text)
    assert why in caught.value.description


def test_parse_ref_refuses_what_is_not_text() -> None:
    with pytest.raises(InvalidRequest, match="is text"):
        parse_ref(42)  # type: ignore[arg-type]


@given(st.text(max_size=600) | st.from_regex(r"vault(-token)?:[A-Za-z0-9_./#-]{0,40}"))
def test_parse_ref_never_raises_anything_but_invalid_request(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InvalidRequest as exc:
        assert exc.description
        return
    assert ref.text == text
    assert len(text) <= 512
    assert re.fullmatch(r"vault(-token)?/[A-Za-z0-9_./-]+", ref.resource)
    assert ".." not in ref.path and "//" not in ref.path


@given(
    st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=5),
    st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
)
def test_parse_ref_round_trips_every_well_formed_kv_reference(
    segments: list[str], name: str
) -> None:
    text = f"vault:{'/'.join(segments)}#{name}"
    ref = parse_ref(text)
    assert (ref.kind, ref.path, ref.field, ref.resource) == (
        "static",
        "/".join(segments),
        name,
        f"vault/{'/'.join(segments)}",
    )


# ---- 2. issuing a static secret -----------------------------------------------------------


def test_issue_static_records_the_version_and_never_the_value(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    secret = "ghp_" + secrets.token_hex(16)
    vault.put(path, token="old")
    vault.put(path, token=secret, other="kept")
    broker = make_broker()
    who = agent("builder")

    got = broker.issue(who, f"vault:{path}#token", 300)

    assert (got.value, got.kind, got.version) == (secret, "static", 2)
    assert got.to_dict() == {
        "ref": f"vault:{path}#token",
        "kind": "static",
        "value": secret,
        "version": 2,
    }
    assert secret not in repr(got)
    [row] = rows(tether, who)
    assert (row.kind, row.path, row.field, row.version) == ("static", path, "token", 2)
    assert (row.accessor, row.revoked_at, row.rotated_at) == (None, None, None)
    assert row.issued_at == tether.clock()
    [event] = tether.events.list(type="credential.issued")
    assert (event.actor, event.subject, event.resource) == (who, who, f"vault/{path}")
    assert event.detail == {"ref": f"vault:{path}#token", "kind": "static", "version": 2}
    assert secret not in all_events(tether)


def test_issue_fails_closed_naming_the_reference(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    vault.put(path, token="value-1", number="")
    broker = make_broker()
    weak = vault.root.auth.token.create_orphan(policies=["ci-read"], ttl="5m")["auth"]
    cases = [
        (broker, f"vault:{path}-missing#token", "not found"),
        (broker, f"vault:{path}#nope", "has no field 'nope'"),
        (broker, f"vault:{path}#number", "not a non-empty string"),
        (make_broker(token=weak["client_token"]), "vault:elsewhere#token", "permission denied"),
    ]
    for using, ref, why in cases:
        with pytest.raises(VaultUnavailable) as caught:
            using.issue(agent("a"), ref, 60)
        assert caught.value.status_code == 503
        assert ref in caught.value.description and why in caught.value.description
        assert "value-1" not in caught.value.description
    with pytest.raises(VaultUnavailable, match="token does not hold that policy") as refused:
        broker.issue(agent("a"), "vault-token:tether-admin", 60)
    assert "child policies" not in refused.value.description  # never the vault's own words
    with pytest.raises(InvalidRequest, match="at least 1"):
        broker.issue(agent("a"), "vault-token:ci-read", 0)
    assert rows(tether) == []
    assert tether.events.list(type="credential.issued") == []


# ---- 3. dynamic tokens, and the kill switch -----------------------------------------------


def test_issue_dynamic_then_revoke_and_rotate(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    vault.put(path, token="ghp_first", url="https://ci.example")
    broker = make_broker(dynamic_ttl_max="15m")
    who = agent("deployer")

    static = broker.issue(who, f"vault:{path}#token", 300)
    dynamic = broker.issue(who, "vault-token:ci-read", 120)

    # the token works, with the one policy (and default), for at most the TTL asked for
    assert dynamic.kind == "dynamic" and dynamic.lease_seconds == 120
    assert dynamic.expires_at == tether.clock() + timedelta(seconds=120)
    mine = vault.client(dynamic.value)
    looked = mine.auth.token.lookup_self()["data"]
    assert sorted(looked["policies"]) == ["ci-read", "default"]
    assert 0 < looked["ttl"] <= 120 and looked["explicit_max_ttl"] == 120
    assert looked["renewable"] is False and looked["orphan"] is True
    assert looked["meta"]["tether_agent"] == who
    assert looked["display_name"].startswith("token-tether-spiffe")
    assert looked["display_name"].endswith("agent-deployer")
    assert (
        mine.secrets.kv.v2.read_secret_version(
            path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["token"]
        == "ghp_first"
    )
    assert dynamic.accessor is not None and static.version is not None
    body = dynamic.to_dict()
    assert set(body) == {"ref", "kind", "value", "lease_seconds", "expires_at"}
    assert dynamic.value not in repr(dynamic) and dynamic.accessor not in repr(dynamic)
    dyn_row = next(r for r in rows(tether, who) if r.kind == "dynamic")
    assert dyn_row.accessor == dynamic.accessor and dyn_row.path == "ci-read"
    assert dyn_row.expires_at == dynamic.expires_at

    assert broker.read(f"vault:{path}#token") == "ghp_first"  # now cached for the gateway

    done = broker.revoke_and_rotate([who], by="admin:alice")

    assert done.failures == []
    assert done.leases_revoked == [
        f"vault-token/ci-read (accessor …{dynamic.accessor[-4:]}) of {who}"
    ]
    assert done.secrets_rotated == [f"vault/{path}#token v1 -> v2"]
    # revoked, as OpenBao itself sees it
    with pytest.raises(hvac.exceptions.Forbidden):
        mine.auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid accessor"):
        vault.root.auth.token.lookup_accessor(dynamic.accessor)
    # rotated: a new version with a new value for the field, the other field kept
    data, version = vault.get(path)
    assert version > static.version
    assert data["token"] != static.value and data["token"].startswith("tether_")
    assert data["url"] == "https://ci.example"
    marked = {r.kind: r for r in rows(tether, who)}
    assert marked["dynamic"].revoked_at == tether.clock()
    assert marked["static"].rotated_at == tether.clock()
    [rotated] = tether.events.list(type="credential.rotated")
    assert rotated.actor == "admin:alice" and rotated.resource == f"vault/{path}"
    assert rotated.detail["old_version"] == 1 and rotated.detail["new_version"] == 2
    assert rotated.detail["compromised_versions"] == [1]
    assert rotated.detail["agents"] == [who] and rotated.detail["also_held_by"] == []
    [revoked] = tether.events.list(type="credential.revoked")
    assert (revoked.subject, revoked.resource) == (who, "vault-token/ci-read")
    text = all_events(tether)
    for secret in (static.value, data["token"], dynamic.value, dynamic.accessor):
        assert secret not in text
    # the gateway's cached old value is dropped (the clock has not moved)
    assert broker.read(f"vault:{path}#token") == data["token"]

    again = broker.revoke_and_rotate([who], by="admin:alice")
    assert again.to_dict() == {"leases_revoked": [], "secrets_rotated": [], "failures": []}
    assert vault.get(path)[1] == version


def test_a_token_lives_no_longer_than_dynamic_ttl_max(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker(dynamic_ttl_max="90s")
    got = broker.issue(agent("a"), "vault-token:ci-read", 86_400)
    assert got.lease_seconds == 90
    looked = vault.client(got.value).auth.token.lookup_self()["data"]
    assert looked["explicit_max_ttl"] == 90 and looked["ttl"] <= 90


def test_an_expired_or_foreign_revoked_token_counts_as_revoked(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker()
    who = agent("gone")
    got = broker.issue(who, "vault-token:ci-read", 60)
    assert got.accessor is not None
    vault.root.auth.token.revoke_accessor(got.accessor)  # someone else got there first
    done = broker.revoke_and_rotate([who], by="admin:alice")
    assert done.failures == []
    assert done.leases_revoked == [
        f"vault-token/ci-read (accessor …{got.accessor[-4:]}) of {who}, gone already"
    ]
    assert rows(tether, who)[0].revoked_at is not None


class _Recording(VaultClient):
    made: list[NewToken]

    def create_token(self, *args: Any, **kwargs: Any) -> NewToken:
        token = super().create_token(*args, **kwargs)
        self.made.append(token)
        return token


def test_a_token_that_cannot_be_recorded_is_revoked(
    vault: Vault,
    tether: Tether,
    make_broker: Callable[..., Broker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _Recording(VaultSettings(address=vault.address, token=vault.broker_token))
    client.made = []
    broker = make_broker(client=client)

    def broken(*_: Any, **__: Any) -> None:
        raise StoreUnavailable("the store is down")

    monkeypatch.setattr(tether.events, "append", broken)
    with pytest.raises(StoreUnavailable):
        broker.issue(agent("a"), "vault-token:ci-read", 60)
    [made] = client.made
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.client(made.token).auth.token.lookup_self()
    # announced before the vault was asked, closed as revoked: nothing left for a kill
    [row] = rows(tether)
    assert row.accessor == made.accessor and row.revoked_at is not None


# ---- 4. several holders of one secret ------------------------------------------------------


def test_a_secret_held_by_several_agents_is_rotated_once_for_all(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    vault.put(path, token="shared-1")
    broker = make_broker()
    a, b, c = agent("a"), agent("b"), agent("c")
    for who in (a, b, c):
        assert broker.issue(who, f"vault:{path}#token", 60).value == "shared-1"
    broker.issue(a, f"vault:{path}#token", 60)  # twice: still one rotation

    done = broker.revoke_and_rotate([a, b], by="admin:alice")

    assert done.secrets_rotated == [f"vault/{path}#token v1 -> v2"]
    assert done.failures == [] and done.leases_revoked == []
    assert vault.get(path)[1] == 2
    # the old value is dead for everybody: c's row is marked too
    assert all(r.rotated_at is not None for r in rows(tether))
    [rotated] = tether.events.list(type="credential.rotated")
    assert rotated.detail["agents"] == [a, b] and rotated.detail["also_held_by"] == [c]
    assert broker.revoke_and_rotate([c], by="admin:alice").secrets_rotated == []

    # who reads the new value holds something new: killing them rotates again
    d = agent("d")
    assert broker.issue(d, f"vault:{path}#token", 60).version == 2
    assert broker.revoke_and_rotate([d], by="admin:alice").secrets_rotated == [
        f"vault/{path}#token v2 -> v3"
    ]


def test_each_field_read_is_rotated_and_a_vanished_field_is_a_failure(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    vault.put(path, user="u1", password="p1", gone="g1", note="kept")
    broker = make_broker()
    who = agent("a")
    for name in ("user", "password", "gone"):
        broker.issue(who, f"vault:{path}#{name}", 60)
    vault.put(path, user="u1", password="p1", note="kept")  # v2: "gone" was removed

    done = broker.revoke_and_rotate([who], by="admin:alice")

    assert done.secrets_rotated == [
        f"vault/{path}#user v2 -> v3",
        f"vault/{path}#password v3 -> v4",
    ]
    assert done.failures == [
        f"vault/{path}#gone: the secret in the vault at {vault.address} has no field 'gone' "
        "any more (version 4)"
    ]
    data, version = vault.get(path)
    assert version == 4 and data["note"] == "kept"
    assert data["user"] != "u1" and data["password"] != "p1" and data["user"] != data["password"]
    assert [r.rotated_at is not None for r in rows(tether, who)] == [True, True, False]


# ---- 5. the rotation command ---------------------------------------------------------------


def _script(tmp_path: Path, name: str, body: str) -> str:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_the_rotation_command_gives_the_new_value(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str, tmp_path: Path
) -> None:
    vault.put(path, token="before", other="same")
    failing = _script(tmp_path, "fail.sh", "echo 'leaked-output'; echo oops >&2; exit 3")
    works = _script(tmp_path, "rotate.sh", 'printf "  rotated:%s:%s\\n\\n" "$1" "$2"')
    who = agent("a")
    make_broker().issue(who, f"vault:{path}#token", 60)

    done = make_broker(rotation_command=[failing]).revoke_and_rotate([who], by="admin:alice")

    assert done.secrets_rotated == []
    [failure] = done.failures
    assert failure == f"vault/{path}#token: the rotation command {failing} exited with code 3"
    assert vault.get(path) == ({"token": "before", "other": "same"}, 1)
    assert rows(tether, who)[0].rotated_at is None
    assert tether.events.list(type="credential.rotated") == []

    done = make_broker(rotation_command=[works]).revoke_and_rotate([who], by="admin:alice")

    assert done.failures == []
    assert done.secrets_rotated == [f"vault/{path}#token v1 -> v2"]
    assert vault.get(path) == ({"token": f"rotated:{path}:token", "other": "same"}, 2)


def test_rotation_command_failures_are_reported_without_output(tmp_path: Path) -> None:
    assert re.fullmatch(r"tether_[A-Za-z0-9_-]{43}", new_value((), "p", "f"))
    assert new_value((), "p", "f") != new_value((), "p", "f")
    cases = [
        (_script(tmp_path, "empty.sh", "echo '   '"), "printed no value"),
        (_script(tmp_path, "big.sh", "head -c 9000 /dev/zero | tr '\\0' x"), "more than 8192"),
        (_script(tmp_path, "slow.sh", "echo secret-ish; exec sleep 30"), "timed out after 0.5 s"),
        (str(tmp_path / "missing"), "could not run: FileNotFoundError"),
    ]
    for command, why in cases:
        with pytest.raises(RotationFailed) as caught:
            new_value((command,), "p", "f", timeout=0.5)
        assert why in str(caught.value)
        assert "secret-ish" not in str(caught.value)


# ---- 6. an unreachable vault ---------------------------------------------------------------


def test_an_unreachable_vault_fails_closed_and_leaves_work_for_a_retry(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    vault.put(path, token="v1")
    live = make_broker()
    who = agent("a")
    live.issue(who, f"vault:{path}#token", 60)
    lease = live.issue(who, "vault-token:ci-read", 60)
    closed = f"http://127.0.0.1:{free_port()}"
    token = "s.never-shown-" + secrets.token_hex(8)
    down = make_broker(address=closed, token=token, timeout_ms=500)

    for call in (
        lambda: down.read(f"vault:{path}#token"),
        lambda: down.issue(who, f"vault:{path}#token", 60),
        lambda: down.issue(who, "vault-token:ci-read", 60),
    ):
        with pytest.raises(TetherError) as caught:
            call()
        assert caught.value.status_code == 503
        assert caught.value.description == f"the vault at {closed} is unreachable: ConnectionError"
        assert token not in str(caught.value)

    done = down.revoke_and_rotate([who], by="admin:alice")

    assert done.leases_revoked == [] and done.secrets_rotated == []
    assert len(done.failures) == 2
    assert done.failures[0].endswith(f"the vault at {closed} is unreachable: ConnectionError")
    assert "not tried" in done.failures[1]
    assert all(token not in f for f in done.failures)
    assert all(r.revoked_at is None and r.rotated_at is None for r in rows(tether, who))
    assert len(rows(tether, who)) == 2  # nothing was issued while the vault was down

    retry = live.revoke_and_rotate([who], by="system:sweeper")
    assert retry.failures == []
    assert len(retry.leases_revoked) == 1 and len(retry.secrets_rotated) == 1
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.client(lease.value).auth.token.lookup_self()


def test_a_stopped_server_is_unreachable(tmp_path: Path, tether: Tether) -> None:
    with openbao(tmp_path / "bao") as server:
        settings = VaultSettings(address=server.address, token=server.root_token, cache_ms=0)
        broker = broker_for(tether, settings)
        hvac.Client(
            url=server.address, token=server.root_token
        ).secrets.kv.v2.create_or_update_secret("x", secret={"f": "v"}, mount_point="secret")
        assert broker.read("vault:x#f") == "v"
        server.stop()
        assert not server.alive()
        with pytest.raises(VaultUnavailable, match="is unreachable") as caught:
            broker.read("vault:x#f")
        assert server.root_token not in caught.value.description


# ---- 7. the upstream cache -----------------------------------------------------------------


def test_read_caches_for_cache_ms(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str, clock: Clock
) -> None:
    ref = f"vault:{path}#token"
    vault.put(path, token="one")
    cached = make_broker(cache_ms=60_000)
    fresh = make_broker(cache_ms=0)
    assert cached.read(ref) == fresh.read(ref) == "one"

    vault.put(path, token="two")
    assert vault.get(path) == ({"token": "two"}, 2)
    assert fresh.read(ref) == "two"  # no cache: every read asks the vault
    assert cached.read(ref) == "one"  # within cache_ms: the cached value
    clock.advance(seconds=59)
    assert cached.read(ref) == "one"
    clock.advance(seconds=2)
    assert cached.read(ref) == "two"  # cache_ms passed: read again

    # reads are not per agent: nothing recorded
    assert rows(tether) == []
    assert tether.events.list(type="credential.issued") == []
    with pytest.raises(InvalidRequest, match="only vault:"):
        cached.read("vault-token:ci-read")
    with pytest.raises(VaultUnavailable, match=re.escape(f"vault:{path}#nope")):
        fresh.read(f"vault:{path}#nope")


# ---- 8. AppRole ----------------------------------------------------------------------------


def test_approle_login(
    vault: Vault, tether: Tether, make_broker: Callable[..., Broker], path: str
) -> None:
    vault.put(path, token="by-approle")
    broker = make_broker(token=None, role_id=vault.role_id, secret_id=vault.secret_id)
    who = agent("a")
    assert broker.issue(who, f"vault:{path}#token", 60).value == "by-approle"
    lease = broker.issue(who, "vault-token:ci-read", 60)
    assert "ci-read" in vault.client(lease.value).auth.token.lookup_self()["data"]["policies"]
    done = broker.revoke_and_rotate([who], by="admin:alice")
    assert done.failures == [] and len(done.leases_revoked) == len(done.secrets_rotated) == 1

    # a refused AppRole token (here: used up) means a fresh login, not a failure
    vault.root.auth.approle.create_or_update_approle(
        "tether-brief", token_policies=["tether-broker"], token_num_uses=2
    )
    brief = make_broker(
        token=None,
        role_id=vault.root.auth.approle.read_role_id("tether-brief")["data"]["role_id"],
        secret_id=vault.root.auth.approle.generate_secret_id("tether-brief")["data"]["secret_id"],
        cache_ms=0,
    )
    vault.put(path, token="fresh")
    assert [brief.read(f"vault:{path}#token") for _ in range(5)] == ["fresh"] * 5

    wrong = "not-" + secrets.token_hex(8)
    refused = make_broker(token=None, role_id=vault.role_id, secret_id=wrong)
    with pytest.raises(VaultUnavailable, match="refused Tether's AppRole login") as caught:
        refused.read(f"vault:{path}#token")
    assert wrong not in caught.value.description
