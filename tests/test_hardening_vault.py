"""Issue 13, items 19, 21 and 24: the vault broker against a real OpenBao dev server (and,
for answers OpenBao never gives, a small fake vault on localhost).

19. No agent can mint a ``root`` token, whatever the spelling, and every token the vault
    returns carries exactly the policy asked for (else it is revoked and refused); the
    broker warns when its own token holds ``root``.
21. A kill covers a credential being issued at that moment: the issue is recorded before
    the vault is asked, the kill waits for it, and the agent gets a refusal while the
    token is revoked before ``kill`` returns.
24. Vault answers are checked by type, and the vault's own error text never reaches a
    report, an event or an error.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
from helpers.openbao import OpenBao, openbao
from helpers.vault_broker import broker_for
from helpers.vault_org import vault_tether
from sqlalchemy import insert, select
from test_kill_vault import Org

from tether import AgentSpec, Caller, GrantSpec, Settings, Tether, credentials, generate_key_pair
from tether.config import VaultSettings
from tether.store import vault_issued
from tether.vault import Broker, VaultClient, VaultRef, VaultUnavailable
from tether.vault.client import NewToken

pytestmark = pytest.mark.slow

ADMIN = Caller.admin()
CI_READ = 'path "secret/data/ci/*" { capabilities = ["read"] }'
BROKER_POLICY = """
path "secret/data/*" { capabilities = ["create", "read", "update"] }
path "secret/data/ci/*" { capabilities = ["create", "read", "update"] }
path "auth/token/create-orphan" { capabilities = ["create", "update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    with openbao(tmp_path_factory.mktemp("openbao")) as server:
        root = hvac.Client(url=server.address, token=server.root_token, timeout=5)
        root.sys.create_or_update_policy("ci-read", CI_READ)
        root.sys.create_or_update_policy("tether-broker", BROKER_POLICY)
        yield server


def _root(bao: OpenBao) -> Any:
    return hvac.Client(url=bao.address, token=bao.root_token, timeout=5)


def _broker_token(bao: OpenBao) -> str:
    """A token holding what the broker needs and no more (no root)."""
    made = _root(bao).auth.token.create_orphan(
        policies=["tether-broker", "ci-read"], ttl="1h", display_name="tether-test"
    )
    token: str = made["auth"]["client_token"]
    return token


def _accessors(bao: OpenBao) -> set[str]:
    listed = _root(bao).auth.token.list_accessors()
    return set(listed["data"]["keys"])


def _org(
    bao: OpenBao, make_settings: Callable[..., Settings], tmp_path: Path, token: str
) -> Iterator[Org]:
    key_file = tmp_path / "a.pem"
    with vault_tether(bao, make_settings, key_file, token=token, timeout_ms=2000) as tether:
        yield Org(tether, key_file)


@pytest.fixture
def rooted(bao: OpenBao, make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Org]:
    """A Tether whose broker (wrongly) holds the root token: the worst case."""
    yield from _org(bao, make_settings, tmp_path, bao.root_token)


@pytest.fixture
def org(bao: OpenBao, make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Org]:
    """A Tether whose broker holds only what it needs."""
    yield from _org(bao, make_settings, tmp_path, _broker_token(bao))


def _rows(tether: Tether) -> list[Any]:
    with tether.store.read() as conn:
        return list(conn.execute(select(vault_issued).order_by(vault_issued.c.id)))


class Recording(VaultClient):
    """A real client that remembers every token it made."""

    def __init__(self, settings: VaultSettings) -> None:
        super().__init__(settings)
        self.made: list[NewToken] = []

    def create_token(self, *args: Any, **kwargs: Any) -> NewToken:
        token = super().create_token(*args, **kwargs)
        self.made.append(token)
        return token


def _dead(bao: OpenBao, token: str) -> bool:
    try:
        hvac.Client(url=bao.address, token=token, timeout=5).auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return True
    return False


# ---- 19. no root token, in any spelling ---------------------------------------------------


def test_item_19_no_agent_mints_a_root_token_in_any_spelling(bao: OpenBao, rooted: Org) -> None:
    """Even with a broker that (wrongly) holds root, and a grant on every policy, ROOT, Root
    and ' root' are refused before the vault is asked; CI-Read (which OpenBao reads as
    ci-read) is refused too, so no grant or guardrail is bypassed by case."""
    rooted.tether.grants.add(ADMIN, GrantSpec("a", "credentials/read", "vault-token/**"))
    token = rooted.agent_token()
    before = _accessors(bao)
    for ref, why in (
        ("vault-token:ROOT", "never issues root tokens"),
        ("vault-token:Root", "never issues root tokens"),
        ("vault-token:rOoT", "never issues root tokens"),
        ("vault-token: root", "never issues root tokens"),
        ("vault-token:root\t", "never issues root tokens"),
        ("vault-token:CI-Read", "the vault reads it as 'ci-read'"),
    ):
        answer = rooted.fetch(ref, token)
        assert answer.status_code == 400, (ref, answer.text)
        assert answer.json()["error"] == "invalid_request"
        assert why in answer.json()["error_description"], ref
    assert _accessors(bao) == before  # no token was made at all
    assert _rows(rooted.tether) == []
    assert rooted.tether.events.list(type="credential.issued") == []
    # the canonical name still works, with exactly its policy
    got = rooted.fetch("vault-token:ci-read", token)
    assert got.status_code == 200, got.text
    looked = hvac.Client(url=bao.address, token=got.json()["value"]).auth.token.lookup_self()
    assert sorted(looked["data"]["policies"]) == ["ci-read", "default"]


def test_item_19_a_token_with_other_policies_than_asked_is_revoked_and_refused(
    bao: OpenBao, tether: Tether
) -> None:
    """Past the parser (a reference built by hand), the vault's answer is checked: OpenBao
    lowercases CI-Read to ci-read and ROOT to root; both tokens are revoked and refused."""
    client = Recording(VaultSettings(address=bao.address, token=bao.root_token))
    settings = VaultSettings(address=bao.address, token=bao.root_token)
    broker = broker_for(tether, settings, client)
    who = "spiffe://tether.local/agent/a"
    for policy, why in (("CI-Read", "other policies than CI-Read"), ("ROOT", "the root policy")):
        ref = VaultRef("dynamic", policy, None, f"vault-token:{policy}")
        with pytest.raises(VaultUnavailable) as caught:
            broker.issue(who, ref, 60)
        assert why in caught.value.description and "revoked" in caught.value.description
        made = client.made[-1]
        assert _dead(bao, made.token)  # OpenBao itself no longer knows it
    assert [sorted(m.policies) for m in client.made] == [["ci-read", "default"], ["root"]]
    assert tether.events.list(type="credential.issued") == []


def test_item_19_the_broker_warns_when_its_own_token_holds_root(
    bao: OpenBao,
    tether: Tether,
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broker(token: str) -> Broker:
        settings = VaultSettings(address=bao.address, token=token)
        return broker_for(tether, settings)

    warning = broker(bao.root_token).root_warning()
    assert warning is not None and "holds the root policy" in warning
    assert bao.root_token not in warning
    assert broker(_broker_token(bao)).root_warning() is None

    # tether up prints it and logs it (the server itself is not started here)
    import uvicorn
    from conftest import Cli

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    cli_env.mkdir(parents=True, exist_ok=True)
    (cli_env / "tether.toml").write_text(
        f'[vault]\naddress = "{bao.address}"\ntoken = "{bao.root_token}"\n', encoding="utf-8"
    )
    code, out, err = Cli(capsys)("up", "--port", "18799", "--proxy-port", "0")
    assert code == 0, err
    assert "WARNING: Tether's token for the vault" in out and "root policy" in out
    assert any("root policy" in r.getMessage() for r in caplog.records)
    assert bao.root_token not in out + err


# ---- 21. a kill covers the credential being issued at that moment --------------------------


class Paused(VaultClient):
    """A real client that, once the vault has answered a create or a read, says so
    (``answered``) and waits for ``go`` before handing the answer back."""

    def __init__(self, settings: VaultSettings) -> None:
        super().__init__(settings)
        self.answered = threading.Event()
        self.go = threading.Event()
        self.made: list[NewToken] = []

    def _hold_on(self) -> None:
        self.answered.set()
        assert self.go.wait(30), "the test never let the issue go on"

    def create_token(self, *args: Any, **kwargs: Any) -> NewToken:
        token = super().create_token(*args, **kwargs)
        self.made.append(token)
        self._hold_on()
        return token

    def read_secret(self, path: str, what: str) -> tuple[dict[str, Any], int]:
        read = super().read_secret(path, what)
        self._hold_on()
        return read


def _paused(org: Org) -> Paused:
    """Org's broker, its vault calls pausable (the broker keeps its settings)."""
    broker = org.tether.vault
    assert broker is not None
    client = Paused(org.tether.settings.vault)
    broker._client = client
    return client


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any], threading.Event]:
    result: list[Any] = []
    finished = threading.Event()

    def run() -> None:
        try:
            result.append(call())
        finally:
            finished.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result, finished


def test_item_21_a_kill_waits_for_a_token_being_issued_and_it_is_dead_when_kill_returns(
    bao: OpenBao, org: Org
) -> None:
    """The agent's fetch was decided and the vault has made the token when the kill
    commits, in another Tether sharing the store (as another process would): the kill
    waits for the issue, the issue sees the kill, revokes the token and refuses, and when
    ``kill`` returns OpenBao no longer knows the token."""
    org.tether.grants.add(ADMIN, GrantSpec("a", "credentials/read", "vault-token/ci-read"))
    token = org.agent_token()
    client = _paused(org)
    thread, answers, finished = _in_thread(lambda: org.fetch("vault-token:ci-read", token))
    assert client.answered.wait(30)  # the token exists in OpenBao, not yet handed out
    [made] = client.made

    with Tether.open(org.tether.settings) as other:  # another process's view of the store
        assert other.vault is not None

        def pause(_: float) -> None:  # the kill found the issue in flight: let it go on
            client.go.set()
            finished.wait(30)

        other.vault.pause = pause
        try:
            report = other.killswitch.kill(ADMIN, "a", reason="caught in the act")
        finally:
            client.go.set()  # whatever happened, let the issue end
        assert _dead(bao, made.token)  # as kill returns, the token is gone in OpenBao
    thread.join(30)
    assert report.failures == []
    [answer] = answers
    assert answer.status_code == 403, answer.text  # the agent got a refusal, not the token
    assert made.token not in answer.text
    assert "killed" in answer.json()["error_description"]
    [row] = _rows(org.tether)
    assert row.accessor == made.accessor and row.revoked_at is not None
    assert org.tether.events.list(type="credential.issued") == []


def test_item_21_a_secret_read_before_a_kill_is_not_handed_out_after_it(
    bao: OpenBao, org: Org
) -> None:
    """A static secret read before the kill committed is refused after it (nobody got the
    value, so nothing needs a rotation), and the kill did not wait for it."""
    path = f"ci/race-{secrets.token_hex(4)}"
    _root(bao).secrets.kv.v2.create_or_update_secret(path=path, secret={"token": "raced-4711"})
    org.tether.grants.add(ADMIN, GrantSpec("a", "credentials/read", f"vault/{path}"))
    token = org.agent_token()
    client = _paused(org)
    thread, answers, _ = _in_thread(lambda: org.fetch(f"vault:{path}#token", token))
    assert client.answered.wait(30)  # the value was read, not yet handed out
    try:
        report = org.tether.killswitch.kill(ADMIN, "a", reason="caught in the act")
    finally:
        client.go.set()
    thread.join(30)
    assert report.failures == []
    [answer] = answers
    assert answer.status_code == 403 and "raced-4711" not in answer.text
    assert _rows(org.tether) == []
    assert org.tether.events.list(type="credential.issued") == []


# ---- 24. vault answers checked by type; the vault's words never shown ----------------------


class FakeVault:
    """A vault on localhost that answers what the test says: ``answer(method, path,
    status, body)``; anything else is 404. For answers no real OpenBao gives."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, bytes, str]] = {}
        self.calls: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                fake.calls.append((self.command, path))
                status, body, kind = fake.answers.get(
                    (self.command, path), (404, b'{"errors": []}', "application/json")
                )
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _reply

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, status: int, body: Any, kind: str = "") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[(method, f"/v1/{path}")] = (status, raw, kind or "application/json")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeVault]:
    server = FakeVault()
    try:
        yield server
    finally:
        server.close()


def _fake_broker(fake: FakeVault, tether: Tether) -> Broker:
    settings = VaultSettings(address=fake.address, token="fake-token", cache_ms=0, timeout_ms=2000)
    return broker_for(tether, settings)


def _kv(data: Any, version: Any) -> dict[str, Any]:
    return {"data": {"data": data, "metadata": {"version": version}}}


def _made(**auth: Any) -> dict[str, Any]:
    body = {
        "client_token": "s.fake-" + secrets.token_hex(4),
        "accessor": "acc-" + secrets.token_hex(4),
        "lease_duration": 60,
        "policies": ["ci-read", "default"],
    }
    body.update(auth)
    return {"auth": body}


def test_item_24_vault_answers_of_the_wrong_type_fail_closed(
    fake: FakeVault, tether: Tether
) -> None:
    """A boolean is not a version or a lease, a string not a mapping or a policy list: each
    is an unexpected answer, nothing is handed out or recorded, and a token that was made
    is revoked again."""
    broker = _fake_broker(fake, tether)
    who = "spiffe://tether.local/agent/a"
    fake.answer("POST", "auth/token/revoke-accessor", 204, b"")
    for kv in (
        _kv({"token": "v"}, True),  # a boolean version
        _kv({"token": "v"}, "3"),
        _kv({"token": "v"}, 0),
        _kv("token=v", 1),  # data that is not a mapping
        {"data": ["token", "v"]},
    ):
        fake.answer("GET", "secret/data/x", 200, kv)
        with pytest.raises(VaultUnavailable, match="unexpected answer") as caught:
            broker.issue(who, "vault:x#token", 60)
        assert caught.value.status_code == 503
    for auth in (
        _made(lease_duration=True),  # a boolean lease
        _made(lease_duration="60"),
        _made(lease_duration=60.0),
        _made(policies="ci-read"),  # a policy list that is a string
        _made(policies=None),
        _made(policies=["ci-read", 7]),
        _made(identity_policies="root"),
        _made(accessor=True),
    ):
        fake.answer("POST", "auth/token/create-orphan", 200, auth)
        with pytest.raises(VaultUnavailable, match="unexpected answer"):
            broker.issue(who, "vault-token:ci-read", 60)
    # identity policies count: a token whose entity holds more than asked is refused
    fake.answer("POST", "auth/token/create-orphan", 200, _made(identity_policies=["admin"]))
    with pytest.raises(VaultUnavailable, match="other policies than ci-read"):
        broker.issue(who, "vault-token:ci-read", 60)
    # nothing was handed out; every token made was revoked (its row closed, or never kept)
    assert [r.revoked_at is not None for r in _rows(tether)] == [True]
    revoked = [c for c in fake.calls if c == ("POST", "/v1/auth/token/revoke-accessor")]
    assert len(revoked) == 8  # the 7 answers with a usable accessor, and the wrong policies
    assert tether.events.list(type="credential.issued") == []
    # a good answer goes through (the fake is a faithful vault otherwise)
    fake.answer("GET", "secret/data/x", 200, _kv({"token": "v"}, 2))
    assert broker.issue(who, "vault:x#token", 60).version == 2
    # a rotation whose write answers a boolean version is a failure, not "v2 -> vTrue"
    fake.answer("POST", "secret/data/x", 200, {"data": {"version": True}})
    done = broker.revoke_and_rotate([who], by="admin:alice")
    assert done.secrets_rotated == [] and len(done.failures) == 1
    assert "unexpected answer" in done.failures[0]


def test_item_24_the_vaults_own_error_text_never_reaches_errors_reports_or_events(
    fake: FakeVault, tether: Tether
) -> None:
    marker = "MARKER-" + secrets.token_hex(6)
    broker = _fake_broker(fake, tether)
    tether.killswitch.vault = broker
    pair = generate_key_pair()
    tether.registry.register(
        ADMIN, AgentSpec(name="a", owner="alice@example.com", public_key=pair.public_key)
    )
    who = tether.registry.agent_id("a")
    fake.answer("GET", "secret/data/x", 200, _kv({"token": "v"}, 1))
    fake.answer("POST", "auth/token/create-orphan", 200, _made())
    broker.issue(who, "vault:x#token", 60)
    broker.issue(who, "vault-token:ci-read", 60)

    said = {"errors": [f"{marker} permission check failed for s.secret-token"]}
    seen: list[str] = []
    for status, body, kind, ours in (
        (400, said, "", "answered HTTP 400 (InvalidRequest)"),
        (500, said, "", "answered HTTP 500 (InternalServerError)"),
        (429, said, "", "answered HTTP 429 (RateLimitExceeded)"),
        (418, said, "", "answered an unexpected HTTP status (UnexpectedError)"),
        (503, said, "", "is sealed or down"),
        (400, f"{marker} plain text".encode(), "text/plain", "answered HTTP 400"),
        (200, f"{marker} not json".encode(), "text/html", "unexpected answer"),
    ):
        fake.answer("GET", "secret/data/y", status, body, kind)
        with pytest.raises(VaultUnavailable) as caught:
            broker.issue(who, "vault:y#token", 60)
        seen.append(caught.value.description)
        assert ours in caught.value.description
    assert seen[0].endswith("answered HTTP 400 (InvalidRequest); its own message is not shown")
    assert all(marker not in text and "permission check" not in text for text in seen)

    # the kill: revoking and rotating fail with the vault's words, the report has ours
    fake.answer("POST", "auth/token/revoke-accessor", 400, said)
    fake.answer("GET", "secret/data/x", 500, said)
    report = tether.killswitch.kill(ADMIN, "a", reason="leak")
    assert len(report.failures) == 2
    assert all("HTTP" in f and marker not in f for f in report.failures)
    assert marker not in "".join(body for _, _, body in tether.events.bodies())


def test_item_24_openbao_error_text_is_not_echoed(bao: OpenBao, tether: Tether) -> None:
    """The real thing: OpenBao refuses a policy the broker does not hold ("child policies
    must be subset of parent"); our words say so, OpenBao's do not appear."""
    settings = VaultSettings(address=bao.address, token=_broker_token(bao))
    broker = broker_for(tether, settings)
    with pytest.raises(VaultUnavailable) as caught:
        broker.issue("spiffe://tether.local/agent/a", "vault-token:tether-admin", 60)
    text = caught.value.description
    assert "does not hold that policy" in text
    assert "child policies" not in text and "subset" not in text


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # row locks: PostgreSQL's
def test_item_21_a_cascading_kill_and_an_issue_holding_the_agents_row_do_not_deadlock(
    bao: OpenBao, org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """PostgreSQL: the issue holds the child's row (FOR SHARE) while it records its token;
    a kill of the parent, cascading to the child, waits for that lock (both write their
    audit events as their transaction's last step, so neither holds the log's head while
    waiting for a row). Both finish: the token recorded first is handed out and then
    revoked by the kill, which returns without failures."""
    assert db_url.startswith("postgresql")  # SQLite serialises every write: nothing to race
    pair = generate_key_pair()
    key = tmp_path / "c.pem"
    key.write_bytes(pair.private_pem)
    spec = AgentSpec(
        name="c",
        owner="alice@example.com",
        public_key=pair.public_key,
        parent="a",
        expires_in=timedelta(days=30),
    )
    org.tether.registry.register(ADMIN, spec)
    org.tether.grants.add(ADMIN, GrantSpec("c", "credentials/read", "vault-token/ci-read"))
    child = Org(org.tether, key)
    token = child.agent_token("c")
    holding, go, backend = threading.Event(), threading.Event(), []
    real = credentials._active

    def pausing(tether: Tether, agent_id: str) -> Callable[[Any], None]:
        hold = real(tether, agent_id)
        calls = []

        def paused(conn: Any) -> None:
            hold(conn)
            calls.append(1)
            if len(calls) == 2:  # the second: recording the token the vault made
                backend.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
                holding.set()
                assert go.wait(30)

        return paused

    monkeypatch.setattr(credentials, "_active", pausing)
    thread, answers, _ = _in_thread(lambda: child.fetch("vault-token:ci-read", token))
    assert holding.wait(30)
    killer, reports, killed = _in_thread(
        lambda: org.tether.killswitch.kill(ADMIN, "a", reason="cascade")
    )
    with org.tether.store.read() as conn:  # wait until the kill waits for the child's row
        query = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        # pg_stat_activity is a snapshot taken once per transaction: clear it before each
        # look, or a first look before the kill blocked is all this loop would ever see
        while not (
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            and conn.exec_driver_sql(query, (backend[0],)).scalar()
        ):
            assert not killed.wait(0.01), "the kill did not wait for the child's row"
    go.set()
    thread.join(30)
    killer.join(60)
    [answer] = answers
    assert answer.status_code == 200, answer.text  # recorded before the kill: handed out
    [report] = reports
    assert report.failures == []
    assert sorted(report.agents_killed) == sorted(
        [org.tether.registry.agent_id("a"), org.tether.registry.agent_id("c")]
    )
    assert len(report.leases_revoked) == 1
    assert _dead(bao, answer.json()["value"])


def test_item_21_announced_tokens_that_never_settle_are_reported_not_waited_for(
    fake: FakeVault, tether: Tether
) -> None:
    """A token announced by an issue that died (its process crashed) is not waited for: the
    kill reports it, naming when whatever the vault made dies; one past that time is closed
    quietly. Neither holds the kill up."""
    broker = _fake_broker(fake, tether)
    who = "spiffe://tether.local/agent/a"
    now = tether.clock()
    with tether.store.write() as conn:
        for issued, expires in (
            (now - timedelta(hours=1), now + timedelta(minutes=5)),
            (now - timedelta(hours=2), now - timedelta(minutes=1)),
        ):
            conn.execute(
                insert(vault_issued).values(
                    agent_id=who,
                    ref="vault-token:ci-read",
                    kind="dynamic",
                    path="ci-read",
                    issued_at=issued,
                    expires_at=expires,
                )
            )
    broker.pause = lambda _: pytest.fail("the kill waited for an issue that is gone")
    done = broker.revoke_and_rotate([who], by="admin:alice")
    [failure] = done.failures
    assert "its issue did not finish" in failure and "not handed out" in failure
    assert (now + timedelta(minutes=5)).isoformat() in failure
    stale, expired = _rows(tether)
    assert stale.revoked_at is None and expired.revoked_at == now
    assert fake.calls == []  # nothing to ask the vault
