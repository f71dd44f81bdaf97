"""RFC 7523 client authentication (``private_key_jwt``): an agent proves who it is with
a client assertion signed by its own registered key, ``iss`` = ``sub`` = its SPIFFE ID,
``aud`` = the token endpoint, an ``exp`` within minutes and a ``jti`` accepted once."""

from __future__ import annotations

import jwt

from tether.errors import InvalidClient, InvalidRequest, InvalidToken, NotFound, UnauthorizedClient
from tether.jose import read_header
from tether.model import Agent, AgentState
from tether.registry import Registry
from tether.services import Services
from tether.tokens.claims import SYSTEM, check_times, token_endpoint
from tether.tokens.replay import UsedIds

__all__ = ["ASSERTION_TYPE", "ClientAuthentication"]

# The protocol identifier (RFC 7523), not a secret.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ClientAuthentication:
    def __init__(self, services: Services, registry: Registry, used: UsedIds) -> None:
        self._settings = services.settings
        self._clock = services.clock
        self._registry = registry
        self._used = used

    def authenticate(self, assertion_type: str | None, assertion: str | None) -> Agent:
        """The active, owned agent whose registered key signed ``assertion``."""
        if assertion_type != ASSERTION_TYPE or not assertion:
            raise InvalidClient(
                f"client authentication needs client_assertion_type={ASSERTION_TYPE} "
                "and a client_assertion signed with the agent's key"
            )
        try:
            read_header(assertion, require_kid=False)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except (InvalidToken, jwt.PyJWTError) as exc:
            raise InvalidClient(f"client assertion rejected: {exc}") from None
        client = unverified.get("iss")
        if not isinstance(client, str) or unverified.get("sub") != client:
            raise InvalidClient("client assertion needs iss = sub = the agent's ID")
        try:
            agent = self._registry.get(SYSTEM, client)
        except (NotFound, InvalidRequest):
            raise InvalidClient("unknown client") from None
        leeway = self._settings.token_leeway
        try:
            claims = jwt.decode(
                assertion,
                jwt.PyJWK(
                    {"kty": "OKP", "crv": "Ed25519", "x": agent.public_key}, algorithm="EdDSA"
                ),
                algorithms=["EdDSA"],
                audience=[token_endpoint(self._settings.issuer), self._settings.issuer],
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,  # checked by check_times, on Tether's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            check_times(claims, self._clock().timestamp(), leeway.total_seconds())
        except jwt.PyJWTError as exc:
            raise InvalidClient(f"client assertion rejected: {exc}") from None
        now = self._clock()
        latest = now + self._settings.assertion_ttl_max + leeway
        if claims["exp"] > latest.timestamp():
            raise InvalidClient("client assertion lives too long: exp must be within minutes")
        self._used.use(str(claims["jti"]), agent.id, claims["exp"])
        if agent.state is not AgentState.ACTIVE:
            raise UnauthorizedClient(f"agent {agent.name} is {agent.state.value}", agent.id)
        if agent.owner is None:
            raise UnauthorizedClient(f"agent {agent.name} has no owner", agent.id)
        return agent
