"""Issue 13, items 17, 20 and 22: secrets never leak through an upstream's answers or
error text, and a webhook receiver can neither exhaust memory nor stall the store."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import anyio
import httpx2
import pytest
from conftest import spec
from test_gateway_enforce import http_upstream  # noqa: F401  (a fixture)
from test_gateway_http import _connect, _served, _text

from tether.callers import Caller
from tether.core import Tether
from tether.gateway.servers import UpstreamSpec
from tether.grants import GrantSpec

ADMIN = Caller.admin()


def _agent_token(tether: Tether, server: str, name: str = "helper") -> str:
    agent = tether.registry.get(ADMIN, name)
    resource = f"{tether.settings.issuer}/mcp/{server}"
    return tether.tokens.client_credentials(agent, resource, None, None).access_token


def _everything_recorded(tether: Tether) -> str:
    return "\n".join(row[-1] for row in tether.events.bodies(after=0))


def test_item_20_a_credential_with_a_newline_never_leaks_into_errors(
    tether: Tether,
    http_upstream: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = f"ghp_{secrets.token_hex(16)}"
    monkeypatch.setenv("TETHER_TEST_LEAKY_SECRET", core + "\n")
    tether.upstreams.add(
        ADMIN,
        UpstreamSpec(
            "test", url=http_upstream, credentials=["Authorization=env:TETHER_TEST_LEAKY_SECRET"]
        ),
    )
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/echo"))
    token = _agent_token(tether, "test")
    admin = tether.admin_tokens.create()
    caplog.set_level(logging.DEBUG)

    async def work(transport: Any) -> tuple[str, str]:
        async with _connect(transport, token) as c:
            said = await c.call_tool("echo", {"text": "hello"})
            assert said.is_error
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as h:
            listed = await h.get(
                "/v1/gateway/servers", headers={"Authorization": f"Bearer {admin}"}
            )
            assert listed.status_code == 200
        return _text(said), listed.text

    said, listed = anyio.run(_served, tether, work)
    print("SAID", said)
    assert "env:TETHER_TEST_LEAKY_SECRET" in said, said
    for where, text in (("answer", said), ("list", listed), ("log", caplog.text),
                        ("audit", _everything_recorded(tether))):
        assert core not in text, (where, text)
