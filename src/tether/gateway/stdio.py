"""``tether gateway stdio NAME``: the gateway as a stdio MCP server a desktop MCP client
can launch. It authenticates the agent from ``TETHER_AGENT_TOKEN`` (a token for
``<issuer>/mcp/NAME``), or from ``TETHER_AGENT_KEY`` (the agent's key file): it then signs
its own client assertions and gets and renews short-lived tokens itself. Every request is
enforced exactly as at ``/mcp/NAME``, on the store of ``TETHER_HOME``/``TETHER_DB``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from mcp.server.stdio import stdio_server

from tether.agent_keys import client_assertion, load_private_key
from tether.callers import Caller
from tether.core import Tether
from tether.errors import Unauthenticated
from tether.gateway.enforce import Gateway
from tether.gateway.handlers import build_server
from tether.gateway.supervisor import Supervisor
from tether.gateway.upstream import UpstreamSession
from tether.jose import b64url_encode, raw_public
from tether.tokens import ASSERTION_TYPE

__all__ = ["AgentTokens", "serve_stdio"]

_RENEW_BEFORE = 30.0  # seconds of life left when a token is renewed


class AgentTokens:
    """The bearer token of the agent this face speaks for."""

    def __init__(self, tether: Tether, resource: str, environ: Mapping[str, str]) -> None:
        self._tether = tether
        self._resource = resource
        self._lock = threading.Lock()
        self._static = environ.get("TETHER_AGENT_TOKEN") or None
        key_file = environ.get("TETHER_AGENT_KEY") or None
        if self._static is None and key_file is None:
            raise Unauthenticated("set TETHER_AGENT_TOKEN or TETHER_AGENT_KEY for the agent")
        self._key = load_private_key(Path(key_file)) if key_file and self._static is None else None
        self._agent_id = self._find_agent() if self._key is not None else None
        self._token = ""
        self._expires = 0.0

    def _find_agent(self) -> str:
        assert self._key is not None
        public = b64url_encode(raw_public(self._key.public_key()))
        for agent in self._tether.registry.list(Caller.system("gateway")):
            if agent.public_key == public:
                return str(agent.id)
        raise Unauthenticated("TETHER_AGENT_KEY is not the key of a registered agent")

    def bearer(self) -> str:
        if self._static is not None:
            return self._static
        with self._lock:
            if time.time() > self._expires - _RENEW_BEFORE:
                self._token, self._expires = self._issue()
            return self._token

    def _issue(self) -> tuple[str, float]:
        assert self._key is not None
        assert self._agent_id is not None
        assertion = client_assertion(self._agent_id, self._tether.tokens.token_endpoint, self._key)
        agent = self._tether.tokens.authenticate_client(ASSERTION_TYPE, assertion)
        issued = self._tether.tokens.client_credentials(agent, self._resource, None, None)
        return issued.access_token, time.time() + issued.expires_in


async def serve_stdio(tether: Tether, name: str, environ: Mapping[str, str]) -> None:
    """Serve upstream ``name`` on this process's stdin/stdout until the client leaves."""
    upstream_spec = await anyio.to_thread.run_sync(tether.upstreams.get, name)
    gate = Gateway(tether, upstream_spec.name)
    tokens = AgentTokens(tether, gate.resource, environ)
    await anyio.to_thread.run_sync(tokens.bearer)  # fail now, not at the first request
    async with Supervisor(tether).running() as upstreams:
        await upstreams.get(upstream_spec.name)  # start it now: a broken command fails here

        async def resolve(_: Any) -> tuple[Gateway, str, UpstreamSession]:
            bearer = await anyio.to_thread.run_sync(tokens.bearer)
            return gate, bearer, await upstreams.get(upstream_spec.name)

        server = build_server(resolve, version=tether.version)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
