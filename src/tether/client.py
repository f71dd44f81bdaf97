"""A typed client for Tether's admin API: over the network, or in-process on a local app.

The CLI speaks only this client, so local mode and ``TETHER_URL`` mode share one path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from tether.errors import TetherError, error_for_code

__all__ = ["Client"]

_TIMEOUT = 30.0


class Client:
    """Calls the admin API; an error response is raised as the matching TetherError."""

    def __init__(self, *, base_url: str, token: str | None, app: Any = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._app = app
        self._http = None if app is not None else httpx.Client(timeout=_TIMEOUT)

    @classmethod
    def remote(cls, url: str, token: str | None) -> Client:
        return cls(base_url=url, token=token)

    @classmethod
    def in_process(cls, app: Any, token: str | None) -> Client:
        """Talk to an ASGI ``app`` in this process (local mode)."""
        return cls(base_url="http://tether.local", token=token, app=app)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # ---- the API ----------------------------------------------------------------------

    def list_agents(
        self, *, state: str | None = None, owner: str | None = None, unowned: bool = False
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if state is not None:
            params["state"] = state
        if owner is not None:
            params["owner"] = owner
        if unowned:
            params["unowned"] = "true"
        agents: list[dict[str, Any]] = self._object("GET", "/v1/agents", params=params)["agents"]
        return agents

    def register_agent(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/v1/agents", json=body)

    def get_agent(self, ref: str) -> dict[str, Any]:
        return self._object("GET", _agent_path(ref))

    def change_agent(self, ref: str, **changes: Any) -> dict[str, Any]:
        return self._object("PATCH", _agent_path(ref), json=changes)

    def retire_agent(self, ref: str, reason: str = "") -> dict[str, Any]:
        return self._object("DELETE", _agent_path(ref), params={"reason": reason})

    def rotate_key(self, ref: str, public_key: str, reason: str = "") -> dict[str, Any]:
        body = {"public_key": public_key, "reason": reason}
        return self._object("POST", _agent_path(ref) + "/rotate-key", json=body)

    def kill(self, ref: str, *, cascade: bool = True, reason: str = "") -> dict[str, Any]:
        body = {"cascade": cascade, "reason": reason}
        return self._object("POST", _agent_path(ref) + "/kill", json=body)

    def kill_bulk(self, **body: Any) -> dict[str, Any]:
        return self._object("POST", "/v1/kill", json=body)

    def offboard_owner(self, email: str, reason: str = "") -> dict[str, Any]:
        path = f"/v1/owners/{quote(email, safe='')}/offboard"
        return self._object("POST", path, json={"reason": reason})

    def add_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/v1/grants", json=body)

    def list_grants(self, params: dict[str, str]) -> list[dict[str, Any]]:
        grants: list[dict[str, Any]] = self._object("GET", "/v1/grants", params=params)["grants"]
        return grants

    def revoke_grant(self, grant_id: str, reason: str = "") -> dict[str, Any]:
        path = f"/v1/grants/{quote(grant_id, safe='')}"
        return self._object("DELETE", path, params={"reason": reason})

    def add_policy(self, text: str, source: str = "") -> dict[str, Any]:
        return self._object("POST", "/v1/policies", json={"text": text, "source": source})

    def list_policies(self) -> list[dict[str, Any]]:
        policies: list[dict[str, Any]] = self._object("GET", "/v1/policies")["policies"]
        return policies

    def remove_policy(self, policy_id: str, reason: str = "") -> dict[str, Any]:
        path = f"/v1/policies/{quote(policy_id, safe='')}"
        return self._object("DELETE", path, params={"reason": reason})

    def policy_schema(self) -> str:
        return str(self._object("GET", "/v1/policies/schema")["schema"])

    def review(self, owner: str | None = None) -> list[dict[str, Any]]:
        params = {"owner": owner} if owner else {}
        owners: list[dict[str, Any]] = self._object("GET", "/v1/review", params=params)["owners"]
        return owners

    def evaluate(self, body: dict[str, Any]) -> dict[str, Any]:
        """One AuthZEN evaluation."""
        return self._object("POST", "/access/v1/evaluation", json=body)

    def rotate_signing_key(self) -> dict[str, Any]:
        return self._object("POST", "/v1/keys/rotate")

    def oauth_metadata(self) -> dict[str, Any]:
        return self._object("GET", "/.well-known/oauth-authorization-server")

    def token(self, form: dict[str, str]) -> dict[str, Any]:
        """POST /oauth2/token (the form carries the client assertion, not the admin token)."""
        return self._object("POST", "/oauth2/token", data=form, bearer=False)

    def record_scan(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/v1/discovery/scans", json=body)

    def findings(self, params: dict[str, str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._object("GET", "/v1/discovery/findings", params=params)[
            "findings"
        ]
        return found

    def credential(self, agent_token: str, ref: str) -> dict[str, Any]:
        """POST /v1/credentials as the agent (its access token for the issuer)."""
        return self._object("POST", "/v1/credentials", json={"ref": ref}, bearer=agent_token)

    def introspect(self, token: str) -> dict[str, Any]:
        return self._object("POST", "/oauth2/introspect", data={"token": token})

    def dev_user_token(self, email: str, groups: Sequence[str] = ()) -> dict[str, Any]:
        body: dict[str, Any] = {"email": email, "groups": list(groups)}
        return self._object("POST", "/v1/dev/user-token", json=body)

    def audit_events(self, params: dict[str, str]) -> dict[str, Any]:
        return self._object("GET", "/v1/audit/events", params=params)

    def audit_event(self, seq: int) -> dict[str, Any]:
        return self._object("GET", f"/v1/audit/events/{seq}")

    def audit_explain(self, seq: int) -> dict[str, Any]:
        return self._object("GET", f"/v1/audit/events/{seq}/explain")

    def audit_export(self, params: dict[str, str]) -> str:
        return self.request_text("GET", "/v1/audit/export", params=params)

    def audit_checkpoint(self) -> dict[str, Any]:
        return self._object("POST", "/v1/audit/checkpoint")

    def audit_inclusion(self, seq: int, size: int | None) -> dict[str, Any]:
        params = {"seq": str(seq)} | ({"size": str(size)} if size is not None else {})
        return self._object("GET", "/v1/audit/proofs/inclusion", params=params)

    def audit_consistency(self, size1: int, size2: int) -> dict[str, Any]:
        params = {"size1": str(size1), "size2": str(size2)}
        return self._object("GET", "/v1/audit/proofs/consistency", params=params)

    def audit_verify(self, verifier_keys: list[str], checkpoints: list[str]) -> dict[str, Any]:
        body = {"verifier_keys": verifier_keys, "checkpoints": checkpoints}
        return self._object("POST", "/v1/audit/verify", json=body)

    def audit_latest_checkpoint(self) -> dict[str, Any]:
        return self._object("GET", "/v1/audit/checkpoint")

    def gateway_servers(self) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = self._object("GET", "/v1/gateway/servers")["servers"]
        return servers

    def gateway_add(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/v1/gateway/servers", json=body)

    def gateway_show(self, name: str) -> dict[str, Any]:
        return self._object("GET", "/v1/gateway/servers/" + quote(name, safe=""))

    def gateway_remove(self, name: str, reason: str = "") -> dict[str, Any]:
        path = "/v1/gateway/servers/" + quote(name, safe="")
        return self._object("DELETE", path, params={"reason": reason})

    def gateway_approve(self, server: str, name: str, kind: str) -> dict[str, Any]:
        path = "/v1/gateway/servers/" + quote(server, safe="") + "/approve"
        return self._object("POST", path, json={"name": name, "kind": kind})

    def gateway_labels(self, server: str) -> dict[str, Any]:
        path = "/v1/gateway/servers/" + quote(server, safe="") + "/labels"
        return self._object("GET", path)

    def gateway_label(
        self, server: str, item: str, kind: str, add: list[str], remove: list[str]
    ) -> dict[str, Any]:
        path = "/v1/gateway/servers/" + quote(server, safe="") + "/labels"
        body = {"item": item, "kind": kind, "add": add, "remove": remove}
        return self._object("POST", path, json=body)

    def egress_destinations(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._object("GET", "/v1/egress/destinations")["destinations"]
        return found

    def egress_add(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/v1/egress/destinations", json=body)

    def egress_show(self, name: str) -> dict[str, Any]:
        return self._object("GET", _destination_path(name))

    def egress_remove(self, name: str, reason: str = "") -> dict[str, Any]:
        return self._object("DELETE", _destination_path(name), params={"reason": reason})

    def egress_label(self, name: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        path = _destination_path(name) + "/labels"
        return self._object("POST", path, json={"add": add, "remove": remove})

    # ---- transport --------------------------------------------------------------------

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self.request(method, path, **kwargs)
        if not isinstance(body, dict):
            raise TetherError(f"unexpected answer from Tether for {method} {path}")
        return body

    def request_text(self, method: str, path: str, *, params: dict[str, str]) -> str:
        """A non-JSON answer (exports), as text; errors raised as for :meth:`request`."""
        return str(self.request(method, path, params=params, raw=True))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        bearer: bool | str = True,
        raw: bool = False,
    ) -> Any:
        """``bearer``: True sends the admin token, False nothing, a string that token."""
        url = self._base_url + path
        if isinstance(bearer, str):
            headers = {"Authorization": f"Bearer {bearer}"}
        else:
            headers = self._headers if bearer else {}
        try:
            if self._http is not None:
                response = self._http.request(
                    method, url, json=json, params=params, data=data, headers=headers
                )
            else:
                response = asyncio.run(self._in_process(method, url, json, params, data, headers))
        except httpx.HTTPError as exc:
            raise TetherError(f"cannot reach Tether at {self._base_url}: {exc}") from exc
        if raw and response.is_success:
            return response.text
        return _result(response)

    async def _in_process(
        self,
        method: str,
        url: str,
        json: Any,
        params: dict[str, str] | None,
        data: dict[str, str] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        transport = httpx.ASGITransport(app=self._app)
        async with httpx.AsyncClient(transport=transport, timeout=_TIMEOUT) as client:
            return await client.request(
                method, url, json=json, params=params, data=data, headers=headers
            )


def _agent_path(ref: str) -> str:
    return "/v1/agents/" + quote(ref, safe="")


def _destination_path(name: str) -> str:
    return "/v1/egress/destinations/" + quote(name, safe="")


def _result(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cls = error_for_code(body["error"], response.status_code)
        raise cls(str(body.get("error_description") or body["error"]))
    cls = error_for_code("", response.status_code)
    raise cls(f"HTTP {response.status_code} from Tether")
