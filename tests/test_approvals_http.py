"""Held calls over the gateway's HTTP face, on both paths (lean and SDK), with the official
MCP SDK client: a held tool call is an error result whose text and ``_meta`` name the
pending approval; a held read or prompt is the MCP error -32003 with that text; a call
that waits is let through once a person approves it meanwhile, and on the SDK path the
client hears ``notifications/progress`` while it waits (the lean path answers each POST
with one JSON body, so it waits without them). ``/v1/approvals`` with the API's auth:
owners see and decide only their own agents' approvals."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import Cli, spec
from helpers.gateway_paths import make_settings  # noqa: F401  (each test on both paths)
from helpers.people import IDP_ISSUER, person_header
from helpers.uvicorn_thread import serving
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from test_gateway_http import _connect, _served

from tether.approvals import Approval
from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.gateway.enforce import APPROVAL_META
from tether.grants import GrantSpec
from tether.model import Email
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
ALICE = Caller.user(Email("alice@example.com"))
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"


@pytest.fixture
def org(
    make_settings: Callable[..., Settings],  # noqa: F811  (the fixture of both paths)
    tmp_path: Path,
) -> Iterator[tuple[Tether, str, Any]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from fastapi.testclient import TestClient
    from jwt.algorithms import OKPAlgorithm

    from tether.api import create_app

    idp_key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    jwk["kid"] = "idp-1"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    settings = make_settings(
        guard={"approval_wait": "5s"},
        idp=[{"issuer": IDP_ISSUER, "audience": "tether", "jwks_file": str(jwks)}],
    )
    Tether.init(settings)[0].close()
    with Tether.open(settings) as tether:
        tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
        tether.registry.register(ADMIN, spec("helper"))  # alice's
        tether.registry.register(ADMIN, spec("bobs", owner="bob@example.com"))
        for action, resource in (
            ("tools/call", "test/echo"),
            ("resources/read", "test/note:/=/welcome"),
            ("prompts/get", "test/summarise"),
        ):
            tether.grants.add(ADMIN, GrantSpec("helper", action, resource, approval="owner"))
        agent = tether.registry.get(ADMIN, "helper")
        resource = f"{tether.settings.issuer}/mcp/test"
        token = tether.tokens.client_credentials(agent, resource, None, None).access_token
        client = TestClient(create_app(tether), raise_server_exceptions=False)
        try:
            yield tether, token, (client, idp_key)
        finally:
            client.close()


async def _approve_when_asked(
    tether: Tether, args: dict[str, Any], approved: list[str], ready: Callable[[], bool]
) -> None:
    """A person who approves the call with ``args`` once it is pending and ``ready()``."""
    while not (pending := await anyio.to_thread.run_sync(_pending, tether, args)) or not ready():
        await anyio.sleep(0.02)
    await anyio.to_thread.run_sync(tether.approvals.approve, ALICE, pending[0], "ok")
    approved.append(pending[0])


def _pending(tether: Tether, args: dict[str, Any]) -> list[str]:
    return [
        a.id
        for a in tether.approvals.list(ADMIN, state="pending")
        if json.loads(a.arguments) == args
    ]


@pytest.mark.slow
def test_held_answers_name_the_approval(org, monkeypatch: pytest.MonkeyPatch) -> None:
    tether, token, _ = org
    guard = tether.settings.guard.model_copy(update={"approval_wait": timedelta(0)})
    monkeypatch.setattr(tether, "settings", tether.settings.model_copy(update={"guard": guard}))

    async def work(transport: Any) -> None:
        async with _connect(transport, token, "legacy") as c:
            await c.list_tools()
            await c.list_resources()
            held = await c.call_tool("echo", {"text": "hello"})
            assert held.is_error
            approval = held.meta[APPROVAL_META]
            assert held.content[0].text.startswith(f"held for approval {approval}: ")
            assert held.content[0].text.endswith(f"tether approvals approve {approval}")
            with pytest.raises(MCPError, match="held for approval ap_") as read:
                await c.read_resource("note://welcome")
            assert read.value.error.code == -32003
            assert read.value.error.data[APPROVAL_META].startswith("ap_")
            with pytest.raises(MCPError, match="held for approval ap_") as prompt:
                await c.get_prompt("summarise", {"topic": "audits"})
            assert prompt.value.error.code == -32003

    anyio.run(_served, tether, work)
    pending = tether.approvals.list(ADMIN, state="pending")
    assert sorted(a.action for a in pending) == ["prompts/get", "resources/read", "tools/call"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_waiting_call_goes_through_once_approved(org, mode: str) -> None:
    """Over a real socket (an in-memory transport hands the client the whole answer at
    its end, so nothing could be heard while waiting), in both protocol eras: on the lean
    path a per-request-era call that asks for progress is answered by the SDK path."""
    tether, token, _ = org
    sdk = tether.settings.gateway_path == "sdk" or mode == "auto"
    approved: list[str] = []
    heard: list[tuple[float, float | None, str | None]] = []
    result: list[Any] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        heard.append((done, total, message))

    async def work(url: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{url}/mcp/test", http_client=http), mode=mode) as c,
        ):
            await c.list_tools()
            async with anyio.create_task_group() as tasks:
                # on the SDK path the person approves once the client heard that it waits
                ready = (lambda: bool(heard)) if sdk else (lambda: True)
                tasks.start_soon(_approve_when_asked, tether, {"text": "wait"}, approved, ready)
                result.append(
                    await c.call_tool("echo", {"text": "wait"}, progress_callback=progress)
                )

    with serving(tether) as url:
        anyio.run(work, url)
    [said] = result
    assert not said.is_error and said.content[0].text == "wait"
    if sdk:  # told that it waits, while it waits
        assert heard and all(m and m.startswith("waiting for approval ap_") for *_, m in heard)
        assert all(total == 5.0 for _, total, _ in heard)
    else:  # a lean session answers one JSON body per POST: nothing to send progress on
        assert heard == []
    [waited] = approved
    assert tether.approvals.get(ADMIN, waited).state == "used"


def _ask(tether: Tether, args: dict[str, Any], why: str, approver: str) -> Approval:
    """A pending approval of a call of test/echo by helper (as the gateway asks one)."""
    agent = tether.registry.agent_id("helper")
    return tether.approvals.request(
        chain=(agent,),
        agent=agent,
        action="tools/call",
        resource="test/echo",
        args=args,
        reasons=(why,),
        approver=approver,
    )


def test_the_approvals_api_keeps_owners_to_their_own(org) -> None:
    tether, _, (client, idp_key) = org
    approval = _ask(tether, {"text": "hi", "password": "hunter22"}, "needs approval", "owner")
    admin_only = _ask(tether, {"text": "other"}, "needs an admin", "admin")
    alice = person_header(idp_key, "alice@example.com")
    bob = person_header(idp_key, "bob@example.com")
    assert client.get("/v1/approvals").status_code == 401
    listed = client.get("/v1/approvals", headers=alice).json()["approvals"]
    assert {a["id"] for a in listed} == {approval.id, admin_only.id}
    assert all("arguments" not in a for a in listed)
    assert "hunter22" not in str(listed)
    assert client.get("/v1/approvals", headers=bob).json()["approvals"] == []
    shown = client.get(f"/v1/approvals/{approval.id}", headers=alice).json()
    assert shown["arguments"] == {"text": "hi", "password": "hunter22"}
    for method, path in (
        ("GET", f"/v1/approvals/{approval.id}"),
        ("POST", f"/v1/approvals/{approval.id}/approve"),
        ("POST", f"/v1/approvals/{approval.id}/deny"),
    ):
        answer = client.request(method, path, headers=bob, json={"reason": "mine now"})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "not_found"
    forbidden = client.post(f"/v1/approvals/{admin_only.id}/approve", headers=alice)
    assert forbidden.status_code == 403 and "only an admin" in forbidden.json()["error_description"]
    assert client.get("/v1/approvals?state=maybe", headers=alice).status_code == 400
    unknown = client.post(f"/v1/approvals/{approval.id}/maybe", headers=alice)
    assert unknown.status_code == 400  # no such answer: refused, nothing changed
    ok = client.post(f"/v1/approvals/{approval.id}/approve", headers=alice, json={"reason": "fine"})
    assert ok.status_code == 200 and ok.json()["state"] == "approved"
    again = client.post(f"/v1/approvals/{approval.id}/deny", headers=alice)
    assert again.status_code == 409 and "is approved" in again.json()["error_description"]
    tether.refusals.flush()
    refused = tether.events.list(type="approval.refused")
    assert [e.actor for e in refused].count("user:bob@example.com") == 3
    assert [e.actor for e in refused].count("user:alice@example.com") == 1


def test_the_cli_over_http(org, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    tether, _, _ = org
    approval = _ask(tether, {"text": "hi"}, "needs approval", "owner")
    token = tether.settings.admin_token_file.read_text().strip()
    monkeypatch.setenv("TETHER_TOKEN", token)
    with serving(tether) as url:
        monkeypatch.setenv("TETHER_URL", url)
        cli = Cli(capsys)
        [listed] = cli.json("approvals", "list")["approvals"]
        assert listed["id"] == approval.id and listed["state"] == "pending"
        assert cli.json("approvals", "show", approval.id)["arguments"] == {"text": "hi"}
        code, out, _ = cli("approvals", "show", approval.id)
        assert code == 0 and '{"text": "hi"}' in out and "test/echo" in out
        assert cli.json("approvals", "deny", approval.id, "--reason", "no")["state"] == "denied"
        code, _, err = cli("approvals", "approve", approval.id)
        assert code == 3 and "is denied" in err
        code, _, err = cli("approvals", "show", "not-an-id")
        assert code == 1 and "no approval" in err
        code, out, _ = cli("approvals", "list", "--state", "denied")
        assert code == 0 and approval.id in out
