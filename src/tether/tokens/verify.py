"""Verifying Tether's access tokens, and RFC 7662 introspection (a verify that answers
``active``).

:meth:`Verifier.verify` is the one verifier: EdDSA only, ``typ`` ``at+jwt``, required
claims, audience, ``exp``/``nbf`` with the configured leeway, keys only from Tether's own
set, revocation, and every identity of the chain active. Verified tokens are cached by
their hash until they expire or the state epoch moves."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import jwt

from tether.errors import InvalidToken, TetherError
from tether.idp import MAX_GROUP_LENGTH, MAX_GROUPS
from tether.jose import read_header
from tether.keys import SigningKeys
from tether.model import AgentState
from tether.services import Services
from tether.tokens.claims import VerifiedToken, chain_of, check_times
from tether.tokens.snapshot import Snapshots

__all__ = ["Verifier"]

_TYP = ("at+jwt", "application/at+jwt")
_REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]
_CACHE_MAX = 100_000  # verified tokens kept at most (then the cache starts again)


class Verifier:
    def __init__(self, services: Services, keys: SigningKeys, snapshots: Snapshots) -> None:
        self._settings = services.settings
        self._epoch = services.epoch
        self._clock = services.clock
        self._keys = keys
        self._snapshots = snapshots
        self._cache: dict[bytes, tuple[VerifiedToken, int, float]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str, audience: str | None) -> VerifiedToken:
        """Verify a Tether access token for ``audience`` (None: any audience, for
        introspection). Raises :class:`InvalidToken` with the reason."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        epoch = self._epoch.current()
        now = self._clock().timestamp()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] == epoch and now < hit[2]:
            verified = hit[0]
        else:
            verified = self._verify_cold(token)
            exp = float(verified.claims["exp"]) + self._settings.token_leeway.total_seconds()
            with self._lock:
                if len(self._cache) > _CACHE_MAX:
                    self._cache.clear()
                self._cache[digest] = (verified, epoch, exp)
        if audience is not None and verified.claims["aud"] != audience:
            raise InvalidToken("token audience is another resource")
        return verified

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` for anything that does not verify."""
        try:
            verified = self.verify(token, None)
        except TetherError:
            return {"active": False}
        return {"active": True, "token_type": "Bearer", **verified.claims}

    def _verify_cold(self, token: str) -> VerifiedToken:
        header = read_header(token)
        if str(header.get("typ", "")).lower() not in _TYP:
            raise InvalidToken("token typ must be at+jwt")
        key = self._keys.verifier(header["kid"])
        if key is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                issuer=self._settings.issuer,
                options={
                    "require": _REQUIRED,
                    "verify_aud": False,  # checked by verify(), per resource
                    "verify_exp": False,  # checked by check_times, on Tether's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            check_times(
                claims, self._clock().timestamp(), self._settings.token_leeway.total_seconds()
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from None
        if not isinstance(claims.get("aud"), str):
            raise InvalidToken("token must name exactly one audience")
        groups = claims.get("groups", [])
        if (
            not isinstance(groups, list)
            or len(groups) > MAX_GROUPS
            or not all(isinstance(g, str) and 0 < len(g) <= MAX_GROUP_LENGTH for g in groups)
        ):
            raise InvalidToken("token groups must be a list of group names")
        snapshot = self._snapshots.current()
        if str(claims["jti"]) in snapshot.revoked:
            raise InvalidToken("token was revoked")
        chain = chain_of(claims)
        now = self._clock()
        for ident in chain:
            if ident.startswith("user:"):
                continue
            agent = snapshot.agents.get(ident)
            if agent is None:
                raise InvalidToken(f"{ident} in the token's chain is unknown")
            if (
                agent.state is not AgentState.ACTIVE
                or agent.owner is None
                or now >= agent.expires_at
            ):
                raise InvalidToken(f"{ident} in the token's chain is not active")
        return VerifiedToken(claims, chain)
