"""What a Tether access token says: the issued and the verified token, the chain of
identities its ``act`` claims nest (RFC 8693 section 4.1), and the time checks every
token and client assertion passes on Tether's clock."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jwt

from tether.callers import Caller
from tether.policy.decision import AccessRequest

__all__ = [
    "MAX_TIME",
    "SYSTEM",
    "IssuedToken",
    "VerifiedToken",
    "chain_of",
    "check_times",
    "token_endpoint",
]

MAX_TIME = 253402300799  # 9999-12-31: anything later is malformed
SYSTEM = Caller.system("tokens")  # who the token service reads the registry and grants as


def token_endpoint(issuer: str) -> str:
    """Where agents get tokens (the audience of their client assertions)."""
    return f"{issuer}/oauth2/token"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    jti: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    chain: tuple[str, ...]  # human first (if any), the current actor last

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def family(self) -> str:
        """The root of the token's family (its ``tether_family`` claim, see
        :mod:`tether.tokens.issue`); a token signed before that claim existed is the root
        of its own."""
        family = self.claims.get("tether_family")
        return family if isinstance(family, str) and family else self.jti

    @property
    def scope(self) -> tuple[str, ...]:
        return tuple(str(self.claims.get("scope", "")).split())

    @property
    def client_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def groups(self) -> tuple[str, ...]:
        """The person's identity-provider groups the token carries (checked on verify)."""
        return tuple(self.claims.get("groups", ()))

    def request(
        self,
        action: str,
        resource: str,
        context: dict[str, Any] | None = None,
        *,
        args: dict[str, Any] | None = None,
        http: dict[str, Any] | None = None,
    ) -> AccessRequest:
        """The PDP question for doing ``action`` on ``resource`` with this token: its
        acting agent, the person it acts for (with their groups), the agents between,
        and its scope; ``args``, the call's arguments, and ``http``, an API call's request
        (server-computed: the gateway's, the egress proxy's)."""
        people = [c for c in self.chain if c.startswith("user:")]
        agents = [c for c in self.chain if not c.startswith("user:")]
        return AccessRequest.of(
            self.client_id,
            action,
            resource,
            on_behalf_of=people[0] if people else None,
            chain=agents[:-1],
            context=context,
            scope=self.scope,
            groups=self.groups if people else (),
            args=args,
            http=http,
        )


def check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """``exp``, ``nbf`` and ``iat`` against Tether's clock (``now``), with the leeway."""
    for name in ("exp", "nbf", "iat"):
        if name in claims and (
            isinstance(claims[name], bool)
            or not isinstance(claims[name], int | float)
            or not math.isfinite(claims[name])
            or abs(claims[name]) > MAX_TIME
        ):
            raise jwt.InvalidTokenError(f"{name} must be a number")
    if "exp" in claims and claims["exp"] <= now - leeway:
        raise jwt.ExpiredSignatureError("the token has expired")
    if "nbf" in claims and claims["nbf"] > now + leeway:
        raise jwt.ImmatureSignatureError("the token is not yet valid")
    if "iat" in claims and claims["iat"] > now + leeway:
        raise jwt.ImmatureSignatureError("the token was issued in the future")


def chain_of(claims: dict[str, Any]) -> tuple[str, ...]:
    """The token's identities, the person first (if any), the current actor last."""
    actors: list[str] = []
    act = claims.get("act")
    while isinstance(act, dict):
        actors.append(str(act.get("sub")))
        act = act.get("act")
    subject = str(claims["sub"])
    people = [] if subject.startswith("spiffe://") else [f"user:{subject}"]
    # act nests outermost = current actor: reverse to get the earliest agent first.
    agents = list(reversed(actors)) or [str(claims["client_id"])]
    return tuple(people + agents)
