"""The kill switch and the vault broker end to end, against a real OpenBao dev server:
an agent fetches a static secret and a dynamic Vault token through ``POST /v1/credentials``
(and ``tether credential get``); killing it rotates the secret and revokes the token, as
OpenBao's own API shows. With OpenBao unreachable, brokering and a gateway call that needs
a vault credential fail closed, and a kill reports what it could not do, which a retry
completes once OpenBao answers again."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import hvac
import hvac.exceptions
import pytest
from fastapi.testclient import TestClient
from helpers.gateway_paths import make_settings  # noqa: F401  (each test on both paths)
from helpers.openbao import OpenBao, openbao
from helpers.vault_org import vault_tether
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tether import Caller, GrantSpec, Tether
from tether.agent_keys import client_assertion, load_private_key
from tether.api import create_app
from tether.tokens import ASSERTION_TYPE
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
ISSUER = "http://127.0.0.1:8700"
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
CI_READ = 'path "secret/data/ci/*" { capabilities = ["read"] }'


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[OpenBao]:
    with openbao(tmp_path / "openbao") as server:
        root = hvac.Client(url=server.address, token=server.root_token, timeout=5)
        root.sys.create_or_update_policy("ci-read", CI_READ)
        yield server


class Org:
    """A Tether using ``bao`` as its vault, served in-process; agent ``a`` with a key."""

    def __init__(self, tether: Tether, key_file: Path) -> None:
        self.tether = tether
        self.client = TestClient(create_app(tether))
        self.key_file = key_file

    def agent_token(self, name: str = "a") -> str:
        agent_id = self.tether.registry.agent_id(name)
        assertion = client_assertion(
            agent_id, f"{ISSUER}/oauth2/token", load_private_key(self.key_file)
        )
        answer = self.client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
                "resource": ISSUER,
            },
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def fetch(self, ref: str, token: str | None = None) -> Any:
        token = token or self.agent_token()
        return self.client.post(
            "/v1/credentials", json={"ref": ref}, headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
def org(bao: OpenBao, make_settings: Any, tmp_path: Path) -> Iterator[Org]:  # noqa: F811
    key_file = tmp_path / "a.pem"
    token = bao.root_token
    with vault_tether(bao, make_settings, key_file, token=token, timeout_ms=1000) as tether:
        yield Org(tether, key_file)


def _secret(bao: OpenBao, path: str) -> tuple[dict[str, Any], int]:
    root = hvac.Client(url=bao.address, token=bao.root_token, timeout=5)
    read = root.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
    return read["data"]["data"], int(read["data"]["metadata"]["version"])


@pytest.mark.slow
def test_a_kill_rotates_the_secret_the_agent_read_and_revokes_its_vault_token(
    bao: OpenBao, org: Org
) -> None:
    path = f"ci/github-{secrets.token_hex(4)}"
    root = hvac.Client(url=bao.address, token=bao.root_token, timeout=5)
    root.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"token": "gh-original-4711", "org": "acme"}
    )
    for resource in (f"vault/{path}", "vault-token/ci-read"):
        org.tether.grants.add(ADMIN, GrantSpec("a", "credentials/read", resource))

    token = org.agent_token()
    static = org.fetch(f"vault:{path}#token", token)
    assert static.status_code == 200, static.text
    assert static.json()["value"] == "gh-original-4711" and static.json()["version"] == 1
    dynamic = org.fetch("vault-token:ci-read", token)
    assert dynamic.status_code == 200, dynamic.text
    vault_token = dynamic.json()["value"]
    left = org.tether.tokens.verify(token, ISSUER).claims["exp"]
    assert 0 < dynamic.json()["lease_seconds"] <= left  # no longer than the agent's token
    looked = hvac.Client(url=bao.address, token=vault_token, timeout=5).auth.token.lookup_self()
    assert "ci-read" in looked["data"]["policies"]
    # no grant, no secret: denied with the reason, and the decision is on record
    denied = org.fetch("vault:ci/other#token", token)
    assert denied.status_code == 403 and "vault/ci/other" in denied.json()["error_description"]

    report = org.client.post(
        "/v1/agents/a/kill", json={"reason": "token leaked"}, headers=_admin(org)
    ).json()
    assert report["failures"] == []
    assert (
        len(report["leases_revoked"]) == 1 and "vault-token/ci-read" in report["leases_revoked"][0]
    )
    assert len(report["secrets_rotated"]) == 1 and path in report["secrets_rotated"][0]

    # seen through OpenBao's own API: a new version with a new value, the rest kept ...
    data, version = _secret(bao, path)
    assert version == 2 and data["token"] != "gh-original-4711" and data["org"] == "acme"
    # ... and the token the agent received no longer works
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=bao.address, token=vault_token, timeout=5).auth.token.lookup_self()
    exported = "".join(body for _, _, body in org.tether.events.bodies())
    for secret_value in ("gh-original-4711", data["token"], vault_token, bao.root_token):
        assert secret_value not in exported
    decisions = [(e.resource, e.decision) for e in org.tether.events.list(type="decision")]
    assert (f"vault/{path}", "allow") in decisions and ("vault/ci/other", "deny") in decisions


@pytest.mark.slow
def test_without_a_reachable_vault_everything_fails_closed_and_kills_are_retried(
    bao: OpenBao, org: Org
) -> None:
    path = f"ci/upstream-{secrets.token_hex(4)}"
    root = hvac.Client(url=bao.address, token=bao.root_token, timeout=5)
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"token": "before-4711"})
    tether = org.tether
    tether.grants.add(ADMIN, GrantSpec("a", "credentials/read", f"vault/{path}"))
    tether.grants.add(ADMIN, GrantSpec("a", "tools/call", "test/env_digest"))
    tether.upstreams.add(
        ADMIN,
        UpstreamSpec(
            "test",
            command=f"{sys.executable} {SERVER}",
            credentials=[f"API_SECRET=vault:{path}#token"],
        ),
    )
    token = org.agent_token()
    assert org.fetch(f"vault:{path}#token", token).json()["value"] == "before-4711"
    agent = tether.registry.get(ADMIN, "a")
    mcp_token = tether.tokens.client_credentials(agent, f"{ISSUER}/mcp/test", None, None)

    os.kill(bao.pid, signal.SIGSTOP)  # OpenBao stops answering
    _until_stopped(bao.pid)
    try:
        refused = org.fetch(f"vault:{path}#token", token)
        assert refused.status_code == 503
        assert refused.json()["error"] == "temporarily_unavailable"
        assert bao.address in refused.json()["error_description"]
        assert bao.root_token not in refused.text
        called = anyio.run(_call_through_gateway, tether, mcp_token.access_token)
        assert called.is_error and "upstream unavailable" in called.content[0].text
        assert "vault" in called.content[0].text and bao.root_token not in called.content[0].text

        report = tether.killswitch.kill(ADMIN, "a", reason="while the vault is down")
        assert report.agents_killed == [agent.id]  # the kill itself is never held up
        assert report.failures and not report.secrets_rotated
    finally:
        os.kill(bao.pid, signal.SIGCONT)
    assert _secret(bao, path)[0]["token"] == "before-4711"  # nothing was rotated yet
    retried = tether.killswitch.retry()
    assert retried is not None and retried.failures == [] and len(retried.secrets_rotated) == 1
    assert _secret(bao, path)[0]["token"] != "before-4711"
    assert tether.killswitch.retry() is None  # done: nothing left
    completed = tether.events.list(type="kill.completed")
    assert [bool(e.detail["failures"]) for e in completed] == [True, False]


def _until_stopped(pid: int) -> None:
    """Return once every thread of ``pid`` is stopped: kill() returns before a thread that
    is on another CPU (of a busy virtual machine) has stopped, and it could still answer."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in "tT" for state in states):
            return
        time.sleep(0.001)  # a poll of the process's state, not a wait for time to pass
    raise AssertionError(f"process {pid} did not stop")


async def _call_through_gateway(tether: Tether, token: str) -> Any:
    app = create_app(tether)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(transport=transport, base_url=ISSUER, headers=headers) as http,
            Client(streamable_http_client(f"{ISSUER}/mcp/test", http_client=http)) as c,
        ):
            return await c.call_tool("env_digest", {"name": "API_SECRET"})


def _admin(org: Org) -> dict[str, str]:
    token = org.tether.settings.admin_token_file.read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_an_agent_fetches_its_credential_with_the_cli(
    bao: OpenBao,
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tether credential get REF`` as the agent (TETHER_AGENT_KEY): the secret alone on
    stdout; without a grant, exit 3 with the reason; a bad reference, exit 2."""
    from conftest import Cli, initialised

    cli_env.mkdir(parents=True, exist_ok=True)
    (cli_env / "tether.toml").write_text(
        f'[vault]\naddress = "{bao.address}"\ntoken = "{bao.root_token}"\n', encoding="utf-8"
    )
    cli = initialised(Cli(capsys))
    path = f"ci/cli-{secrets.token_hex(4)}"
    hvac.Client(url=bao.address, token=bao.root_token).secrets.kv.v2.create_or_update_secret(
        path=path, secret={"key": "cli-secret-4711"}
    )
    key = cli_env / "worker.pem"
    cli.json("agent", "register", "worker", "--owner", "alice@example.com", "--key-out", str(key))
    monkeypatch.setenv("TETHER_AGENT_KEY", str(key))
    code, out, err = cli("credential", "get", f"vault:{path}#key")  # no grant at all
    assert code == 3 and "no grant" in out + err and "cli-secret" not in out + err
    cli.json("grant", "add", "worker", "--action", "tools/call", "--resource", "github/*")
    code, out, err = cli("credential", "get", f"vault:{path}#key")  # not this one
    assert code == 3 and f"credentials/read on vault/{path}" in out + err
    assert "cli-secret" not in out + err
    grant = ("--action", "credentials/read", "--resource", f"vault/{path}")
    cli.json("grant", "add", "worker", *grant)
    code, out, err = cli("credential", "get", f"vault:{path}#key")
    assert (code, out.strip()) == (0, "cli-secret-4711"), err
    got = cli.json("credential", "get", f"vault:{path}#key")
    assert got["kind"] == "static" and got["version"] == 1
    code, out, err = cli("credential", "get", "vault:../etc#x")
    assert code == 2 and "Traceback" not in out + err
