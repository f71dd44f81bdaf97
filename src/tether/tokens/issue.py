"""RFC 9068 access tokens: an ``at+jwt`` bound to one audience (RFC 8707), whose scope is
a subset of the agent's grants, signed with Tether's current key and recorded (the
issued-token row and a ``token.issued`` or ``token.exchanged`` event, in one transaction
committed before the token is returned: :mod:`~tether.tokens.records`).

The grants that bound the scope, the agents and the gateway servers come from the
snapshot of the state epoch (:mod:`~tether.tokens.snapshot`): a grant added or revoked,
an agent changed, a server removed moves the epoch, and the next token sees it.

Every token carries the private claim ``tether_family`` (:data:`FAMILY_CLAIM`): the root
of its token family, the ``jti`` of the token the family started from. A token issued to an
agent (client credentials) is a root: its family is its own ``jti``; a token exchanged from
one of Tether's own tokens inherits its subject token's family; one exchanged from a
person's identity-provider token starts a family of its own. The gateway tracks what the
work touched per family (:mod:`tether.upstreams.flows`), across every hop of a delegation.

Audiences are only those Tether knows: its own issuer, a gateway server that exists
(``<issuer>/mcp/NAME``), the egress proxy (``<issuer>/egress``, or
``<issuer>/egress/NAME`` for one destination that exists), a configured
``resource_servers`` entry, or, for a hand-off, a registered, active agent's ID. Anything
else is ``invalid_target``."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import jwt

from tether.audit.record import Entry
from tether.errors import InvalidRequest, InvalidScope, InvalidTarget
from tether.grants import Grant
from tether.keys import SigningKeys
from tether.model import Agent, AgentState
from tether.permissions import HTTP_ACTIONS
from tether.services import Services
from tether.tokens.claims import IssuedToken, chain_of
from tether.tokens.records import Record, Records
from tether.tokens.scopes import (
    destination_of,
    fits_destination,
    fits_server,
    parse_scope,
    server_of,
    within,
)
from tether.tokens.snapshot import Snapshots

__all__ = ["FAMILY_CLAIM", "Issuer"]

FAMILY_CLAIM = "tether_family"  # the jti of the root token of this token's family


class Issuer:
    def __init__(
        self, services: Services, keys: SigningKeys, snapshots: Snapshots, records: Records
    ) -> None:
        self._settings = services.settings
        self._clock = services.clock
        self._keys = keys
        self._snapshots = snapshots
        self._records = records

    def client_credentials(
        self, agent: Agent, audience: str | None, scope: str | None, ttl: timedelta | None = None
    ) -> IssuedToken:
        """An access token for ``agent`` itself (no person in the chain)."""
        target = self.audience(audience)
        grants = self._snapshots.grants_of(agent.id, self._clock())
        granted = self.scope(grants, target, scope)
        claims = {"sub": agent.id, "client_id": agent.id}
        return self.issue(claims, target, granted, ttl, parent=None, ceiling=agent.expires_at)

    def audience(self, audience: str | None) -> str:
        """``audience`` if Tether knows it (see the module docstring); else invalid_target."""
        issuer = self._settings.issuer
        if not audience or not isinstance(audience, str) or len(audience) > 512:
            raise InvalidTarget("name the resource the token is for: resource= or audience=")
        if any(c.isspace() for c in audience):
            raise InvalidTarget("one audience per token, without spaces")
        if audience == issuer or audience in self._settings.resource_servers:
            return audience
        server = server_of(issuer, audience)
        if server is not None:
            if not self._snapshots.has_server(server):
                raise InvalidTarget(f"{audience} names no gateway server (tether gateway list)")
            return audience
        destination = destination_of(issuer, audience)
        if destination is not None:
            if destination and not self._snapshots.has_destination(destination):
                raise InvalidTarget(f"{audience} names no egress destination (tether egress list)")
            return audience
        if audience.startswith("spiffe://"):
            agent = self._snapshots.current().agents.get(audience)
            if agent is None or agent.state is not AgentState.ACTIVE:
                raise InvalidTarget(f"{audience} is not a registered, active agent")
            return audience
        raise InvalidTarget(
            f"unknown audience {audience!r}: tokens are for {issuer}, a gateway server "
            f"({issuer}/mcp/NAME), the egress proxy ({issuer}/egress, or "
            f"{issuer}/egress/NAME for one destination), a configured resource server "
            "(resource_servers in tether.toml) or, for a hand-off, an active agent's ID"
        )

    def scope(self, grants: list[Grant], audience: str, requested: str | None) -> list[str]:
        """The scope of a token for ``audience``: ``requested`` if ``grants`` give all of
        it, or (none requested) every grant that fits the audience."""
        server = server_of(self._settings.issuer, audience)
        destination = destination_of(self._settings.issuer, audience)
        if requested is None or not requested.strip():
            fit = [
                f"{g.action}:{g.resource}"
                for g in grants
                if (
                    fits_destination(g, destination)
                    if destination is not None
                    else fits_server(g, server)
                )
            ]
            if not fit:
                raise InvalidScope(f"the agent holds no grant that fits {audience}")
            return sorted(set(fit))
        wanted = parse_scope(requested)
        for permission in wanted:
            if server is not None and permission.resource.split("/", 1)[0] != server:
                raise InvalidScope(f"{permission} is not for {audience}")
            if destination is not None and (
                permission.action not in HTTP_ACTIONS
                or (destination and permission.resource.split("/", 1)[0] != destination)
            ):
                raise InvalidScope(f"{permission} is not for {audience}")
            if not any(within(permission, g) for g in grants):
                raise InvalidScope(f"{permission} is beyond the agent's grants")
        return sorted({str(p) for p in wanted})

    def issue(
        self,
        claims: dict[str, Any],
        audience: str,
        scope: list[str],
        ttl: timedelta | None,
        parent: str | None,
        ceiling: datetime | None = None,
        family: str | None = None,
    ) -> IssuedToken:
        """Sign and record a token of ``claims`` for ``audience`` with ``scope``, living
        ``ttl`` (the default when None) but never past ``ceiling``; ``parent`` is the jti
        it was exchanged from (None: issued), ``family`` its family's root (None: this
        token starts a family). Returned once it is on record."""
        issued, record = self.sign(claims, audience, scope, ttl, parent, ceiling, family)
        self.record(record)
        return issued

    def record(self, record: Record) -> None:
        """Put a signed token on record; returns once committed (see :meth:`sign`)."""
        self._records.write(record)

    def sign(
        self,
        claims: dict[str, Any],
        audience: str,
        scope: list[str],
        ttl: timedelta | None,
        parent: str | None,
        ceiling: datetime | None = None,
        family: str | None = None,
    ) -> tuple[IssuedToken, Record]:
        """The signed token (see :meth:`issue`) and the record to write before it is
        returned."""
        lifetime = ttl or self._settings.token_ttl_default
        if lifetime > self._settings.token_ttl_max or lifetime <= timedelta(0):
            raise InvalidRequest("token lifetime above the configured maximum")
        now = self._clock()
        expires = now + lifetime
        if ceiling is not None and expires > ceiling:  # never outlive the subject token
            expires = ceiling
            lifetime = expires - now
        jti = secrets.token_urlsafe(16)
        payload = {
            **claims,
            "iss": self._settings.issuer,
            "aud": audience,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": jti,
            "scope": " ".join(scope),
            FAMILY_CLAIM: family or jti,
        }
        kid, key = self._keys.current()
        token = jwt.encode(payload, key, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": kid})
        subject, client = str(payload["sub"]), str(payload["client_id"])
        row = {
            "jti": jti,
            "parent_jti": parent,
            "subject": subject,
            "client_id": client,
            "audience": audience,
            "scope": payload["scope"],
            "issued_at": now,
            "expires_at": expires,
            "revoked_at": None,
        }
        entry = Entry.of(
            "token.issued" if parent is None else "token.exchanged",
            actor=client,
            subject=subject,
            chain=chain_of(payload),
            action="token/issue" if parent is None else "token/exchange",
            resource=audience,
            decision="allow",
            detail={
                "jti": jti,
                "aud": audience,
                "scope": payload["scope"],
                "parent": parent,
                "family": payload[FAMILY_CLAIM],
            },
        )
        issued = IssuedToken(token, int(lifetime.total_seconds()), payload["scope"], jti)
        return issued, Record(row, (entry,))
