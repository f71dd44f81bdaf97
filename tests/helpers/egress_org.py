"""An organisation behind the egress proxy, for the engine's tests: a Tether (real clock,
trusting one test identity provider) served over real HTTP (uvicorn in a thread), the API
stand-in registered as destination ``github`` (its credential injected from the
environment), and agents with their tokens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, spec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.api_standin import StandIn, standin
from helpers.people import IDP_ISSUER, delegation_token
from helpers.uvicorn_thread import serving
from jwt.algorithms import OKPAlgorithm

from tether import Settings, Tether
from tether.grants import GrantSpec
from tether.upstreams.destinations import DestinationSpec

__all__ = ["SECRET", "EgressOrg", "api", "egress", "egress_org"]

SECRET = "ghp_standin0credential0value0000000000"  # what Tether injects (env:EGRESS_GH)
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@dataclass
class EgressOrg:
    tether: Tether
    api: StandIn
    url: str  # Tether's base URL
    idp_key: Ed25519PrivateKey

    @property
    def issuer(self) -> str:
        return self.tether.settings.issuer

    def agent(self, name: str, *grants: tuple[str, str], **grant: Any) -> str:
        """Register agent ``name`` with ``grants`` (action, resource); its ID."""
        self.tether.registry.register(ADMIN, spec(name))
        for action, resource in grants:
            self.tether.grants.add(ADMIN, GrantSpec(name, action, resource, **grant))
        return self.tether.registry.get(ADMIN, name).id

    def token(self, name: str, destination: str | None = "github") -> str:
        """A client-credentials token of agent ``name`` for ``<issuer>/egress/NAME`` (the
        whole proxy when ``destination`` is None)."""
        agent = self.tether.registry.get(ADMIN, name)
        audience = f"{self.issuer}/egress" + (f"/{destination}" if destination else "")
        return self.tether.tokens.client_credentials(agent, audience, None, None).access_token

    def person(self, email: str) -> str:
        return delegation_token(self.idp_key, email, issuer=IDP_ISSUER, tether=self.issuer)

    def exchanged(self, actor: str, subject: str, audience: str, *, access: bool) -> str:
        agent = self.tether.registry.get(ADMIN, actor)
        kind = ACCESS if access else JWT_TYPE
        issued = self.tether.tokens.exchange(agent, subject, kind, audience, None)
        return issued.access_token

    def call(self, token: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        """``method`` ``/egress/<path>`` with ``token`` as a bearer."""
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.request(method, f"/egress/{path}", headers=headers, **kw)

    @contextmanager
    def in_flight(self, token: str, path: str) -> Iterator[dict[str, httpx.Response]]:
        """``GET /egress/<path>`` sent from another thread; inside, the API has received
        it and the agent has no answer yet; after, the answer is at ``["answer"]``."""
        seen: dict[str, httpx.Response] = {}
        before = len(self.api.received)

        def send() -> None:
            seen["answer"] = self.call(token, "GET", path)

        caller = threading.Thread(target=send)
        caller.start()
        deadline = time.monotonic() + 20
        while len(self.api.received) == before:
            assert time.monotonic() < deadline, "the API never received the request"
            time.sleep(0.005)
        yield seen
        caller.join(30)
        assert "answer" in seen, "no answer"

    def events(self, kind: str) -> list[Any]:
        self.tether.events.flush()
        return list(self.tether.events.list(type=kind))


@contextmanager
def egress_org(home: Path, db_url: str, api: StandIn, **settings: Any) -> Iterator[EgressOrg]:
    """The organisation, served; destination ``github`` is the stand-in (``internal``:
    it listens on loopback), with ``Authorization: Bearer {env:EGRESS_GH}``."""
    idp_key = Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(idp_key.public_key()))
    jwk["kid"] = "idp-1"
    (home / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = Settings.load(
        home,
        db_url=db_url,
        idp=[{"issuer": IDP_ISSUER, "audience": "tether", "jwks_file": str(home / "jwks.json")}],
        **settings,
    )
    first, _ = Tether.init(config)
    first.close()
    with Tether.open(config) as tether:
        tether.destinations.add(
            ADMIN,
            DestinationSpec(
                "github",
                base=api.url,
                credentials=["Authorization=Bearer {env:EGRESS_GH}"],
                internal=True,
            ),
        )
        with serving(tether) as url:
            yield EgressOrg(tether, api, url, idp_key)


@pytest.fixture
def api() -> Iterator[StandIn]:
    """The API stand-in, on a free loopback port."""
    with standin() as served:
        yield served


@pytest.fixture
def egress(
    home: Path, db_url: str, api: StandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EgressOrg]:
    """The organisation on the parametrised store, its credential in the environment."""
    monkeypatch.setenv("EGRESS_GH", SECRET)
    with egress_org(home, db_url, api) as made:
        yield made
