"""Agent access tokens: one module per protocol behind the :class:`Tokens` facade.

- :mod:`~tether.tokens.client_auth`: RFC 7523 client authentication. An agent proves who
  it is with a client assertion signed by its own registered key (``private_key_jwt``).
- :mod:`~tether.tokens.issue`: RFC 9068 access tokens, a short-lived ``at+jwt`` bound to
  one audience (RFC 8707), whose scope is a subset of the agent's grants.
- :mod:`~tether.tokens.exchange`: RFC 8693 token exchange; every hop is a decision of the
  decision point, recorded, and narrows.
- :mod:`~tether.tokens.verify`: the one verifier (with its cache) and RFC 7662
  introspection; :mod:`~tether.tokens.revocation`: RFC 7009 revocation of a token family.
- :mod:`~tether.tokens.records` (a token on record before it is returned, an ID used
  once before it is accepted, in commits shared by concurrent callers),
  :mod:`~tether.tokens.claims` (what a token says), :mod:`~tether.tokens.scopes` (scope
  containment), :mod:`~tether.tokens.replay` (IDs used once),
  :mod:`~tether.tokens.snapshot` (agents, revocations, grants and servers as of the state
  epoch).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tether.callers import Caller
from tether.grants import Grants
from tether.idp import IdentityProviders
from tether.keys import SigningKeys
from tether.model import Agent
from tether.registry import Registry
from tether.services import Services
from tether.tokens.claims import IssuedToken, VerifiedToken, token_endpoint
from tether.tokens.client_auth import ASSERTION_TYPE, ClientAuthentication
from tether.tokens.exchange import (
    EXCHANGE,
    TOKEN_TYPE_ACCESS,
    TOKEN_TYPE_ID,
    TOKEN_TYPE_JWT,
    Decisions,
    Exchange,
)
from tether.tokens.issue import Issuer
from tether.tokens.records import Records
from tether.tokens.replay import UsedIds
from tether.tokens.revocation import Revocation, token_family
from tether.tokens.snapshot import Snapshots
from tether.tokens.verify import Verifier

__all__ = [
    "ASSERTION_TYPE",
    "EXCHANGE",
    "TOKEN_TYPE_ACCESS",
    "TOKEN_TYPE_ID",
    "TOKEN_TYPE_JWT",
    "Decisions",
    "IssuedToken",
    "Tokens",
    "VerifiedToken",
    "token_family",
]


class Tokens:
    """Tether's token service: each method is one protocol's part (see the modules)."""

    def __init__(
        self,
        services: Services,
        keys: SigningKeys,
        registry: Registry,
        grants: Grants,
        people: IdentityProviders,
        *,
        decisions: Decisions,
    ) -> None:
        self._settings = services.settings
        records = Records(services)
        used = UsedIds(services, records)
        snapshots = Snapshots(services, registry, grants)
        self._used = used
        self._clients = ClientAuthentication(services, registry, used)
        self._verifier = Verifier(services, keys, snapshots)
        self._issuer = Issuer(services, keys, snapshots, records)
        self._exchange = Exchange(
            services,
            people,
            decisions,
            issuer=self._issuer,
            verifier=self._verifier,
            used=used,
            snapshots=snapshots,
        )
        self._revocation = Revocation(services)

    @property
    def issuer(self) -> str:
        return self._settings.issuer

    @property
    def token_endpoint(self) -> str:
        return token_endpoint(self.issuer)

    def authenticate_client(self, assertion_type: str | None, assertion: str | None) -> Agent:
        """The active, owned agent whose registered key signed ``assertion`` (RFC 7523)."""
        return self._clients.authenticate(assertion_type, assertion)

    def purge(self) -> int:
        """Forget used assertion and subject-token IDs once they could no longer be
        replayed (past their exp and the leeway); returns how many."""
        return self._used.purge()

    def client_credentials(
        self, agent: Agent, audience: str | None, scope: str | None, ttl: timedelta | None = None
    ) -> IssuedToken:
        """An access token for ``agent`` itself (no person in the chain)."""
        return self._issuer.client_credentials(agent, audience, scope, ttl)

    def exchange(
        self,
        actor: Agent,
        subject_token: str | None,
        subject_token_type: str | None,
        audience: str | None,
        scope: str | None,
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        """A token for ``actor`` acting in the subject token's chain; every hop narrows
        (RFC 8693)."""
        return self._exchange.exchange(
            actor, subject_token, subject_token_type, audience, scope, ttl
        )

    def verify(self, token: str, audience: str | None) -> VerifiedToken:
        """Verify a Tether access token for ``audience`` (None: any audience, for
        introspection). Raises :class:`InvalidToken` with the reason."""
        return self._verifier.verify(token, audience)

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` for anything that does not verify."""
        return self._verifier.introspect(token)

    def revoke(self, by: Caller, token: str) -> int:
        """Revoke a token and every token exchanged from it; returns how many (RFC 7009)."""
        return self._revocation.revoke(by, token)
