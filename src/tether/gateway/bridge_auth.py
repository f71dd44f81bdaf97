"""The stdio bridge's credentials: what it is given (``TETHER_URL``, the agent's key file
or token, nothing from ``TETHER_HOME``) and the agent's own short-lived tokens for
``<issuer>/mcp/NAME``, got and renewed from the running Tether (see
:mod:`tether.gateway.stdio`). Imports nothing of the core or the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx2

from tether.agent_keys import client_assertion, key_file_agent, load_private_key
from tether.errors import InvalidRequest, TetherError, error_for_code

__all__ = ["AgentTokens", "BridgeConfig", "json_object", "json_value"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 §2.2
RENEW_BEFORE = 30.0  # seconds of life left when a token is renewed


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """What the bridge is given: the server, the upstream's name and the agent's credential."""

    url: str
    name: str
    key_file: Path | None = None
    agent_id: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str]) -> BridgeConfig:
        """Read ``TETHER_URL``, ``TETHER_AGENT_KEY`` / ``TETHER_AGENT_TOKEN`` and
        ``TETHER_AGENT_ID`` (only these: ``TETHER_HOME`` is never looked at)."""
        url = (environ.get("TETHER_URL") or "").strip().rstrip("/")
        if not url:
            raise InvalidRequest(
                "TETHER_URL is not set: the stdio bridge is a client of a running Tether "
                "(e.g. TETHER_URL=http://127.0.0.1:8700)"
            )
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise InvalidRequest(f"TETHER_URL must be an http(s) URL, not {url!r}")
        if not name or "/" in name:
            raise InvalidRequest(f"invalid MCP server name {name!r}")
        token = (environ.get("TETHER_AGENT_TOKEN") or "").strip() or None
        key = (environ.get("TETHER_AGENT_KEY") or "").strip() or None
        if token is None and key is None:
            raise InvalidRequest(
                "the agent's credential is missing: set TETHER_AGENT_KEY (its key file) "
                "or TETHER_AGENT_TOKEN"
            )
        agent_id = (environ.get("TETHER_AGENT_ID") or "").strip() or None
        key_file = Path(key) if key is not None and token is None else None
        return cls(url, name, key_file, agent_id, token)


class AgentTokens:
    """The agent's bearer tokens for ``<issuer>/mcp/NAME``, got and renewed from the server."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        config: BridgeConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._config = config
        self._clock = clock
        self._lock = anyio.Lock()
        self._token = config.token or ""
        self._expires = float("inf") if config.token else 0.0
        self._agent_id = ""
        self._key: Any = None
        self.resource = ""
        self._token_path = ""
        self._audience = ""

    @property
    def renewable(self) -> bool:
        return self._config.token is None

    async def discover(self) -> None:
        """Read the key and learn the resource, the issuer and the token endpoint."""
        config = self._config
        if config.key_file is not None:
            self._key = load_private_key(config.key_file)
            agent_id = config.agent_id or key_file_agent(config.key_file)
            if agent_id is None:
                raise InvalidRequest(
                    f"{config.key_file} does not name its agent: set TETHER_AGENT_ID to the "
                    "agent's SPIFFE ID (key files written by `tether agent register` name it)"
                )
            self._agent_id = agent_id
        name = quote(config.name, safe="")
        resource = await self._document(f"/.well-known/oauth-protected-resource/mcp/{name}")
        if resource is None:
            raise InvalidRequest(f"Tether at {config.url} has no MCP server {config.name!r}")
        self.resource = str(resource.get("resource") or "")
        issuers = resource.get("authorization_servers") or [""]
        server = await self._document("/.well-known/oauth-authorization-server") or {}
        if not self.resource or server.get("issuer") != issuers[0]:
            raise TetherError(f"{config.url} does not describe /mcp/{config.name} as Tether does")
        self._audience = str(server.get("token_endpoint") or "")
        self._token_path = urlsplit(self._audience).path or "/oauth2/token"

    async def _document(self, path: str) -> dict[str, Any] | None:
        """The JSON document at ``path`` (None when there is none: 404)."""
        url = self._config.url
        try:
            response = await self._http.get(url + path)
        except httpx2.HTTPError as exc:
            raise TetherError(f"cannot reach Tether at {url}: {exc}") from None
        body = json_object(response.content)
        if response.status_code == 404:
            return None
        if response.status_code != 200 or body is None:
            raise TetherError(f"unexpected answer (HTTP {response.status_code}) from {url}{path}")
        return body

    async def bearer(self, *, renew: str | None = None) -> str:
        """A token with at least 30 s to live; ``renew``: a token the server refused, to
        be replaced (once, however many requests met the refusal at the same time)."""
        if not self.renewable:
            return self._token
        async with self._lock:
            if renew == self._token or self._clock() > self._expires - RENEW_BEFORE:
                self._token, lifetime = await self._issue()
                self._expires = self._clock() + lifetime
            return self._token

    async def _issue(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self._agent_id, self._audience, self._key),
            "resource": self.resource,
        }
        try:
            response = await self._http.post(self._config.url + self._token_path, data=form)
        except httpx2.HTTPError as exc:
            raise TetherError(f"cannot reach Tether at {self._config.url}: {exc}") from None
        body = json_object(response.content) or {}
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200 or not isinstance(token, str):
            code = str(body.get("error") or "")
            why = body.get("error_description") or code or f"HTTP {response.status_code}"
            refused = error_for_code(code, response.status_code)
            raise refused(f"Tether refused the agent a token: {why}")
        return token, float(lifetime) if isinstance(lifetime, int | float) else 60.0


def json_value(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def json_object(data: bytes) -> dict[str, Any] | None:
    value = json_value(data)
    return value if isinstance(value, dict) else None
