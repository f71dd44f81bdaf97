"""Human identity providers: their JWTs, verified with their JWKS, name people.

Only EdDSA, ES256 and RS256 are accepted, the key type must match the algorithm, and keys
come only from the configured JWKS: ``jku``, ``x5u``, ``jwk`` and ``crit`` headers are
refused, never followed.

A person's groups come from the claim each ``[[idp]]`` names (``groups_claim``, default
``groups``): a list of at most :data:`MAX_GROUPS` strings of at most
:data:`MAX_GROUP_LENGTH` characters. :meth:`IdentityProviders.identify` returns them with
the person; a claim that is not such a list is reported (``Person.groups_error``), never
silently read as "no groups", because guardrails decide on them (fail closed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from tether.callers import Caller
from tether.config import IdpConfig
from tether.errors import InvalidRequest, Unauthenticated
from tether.model import Email, parse_email

__all__ = ["ALLOWED_ALGORITHMS", "MAX_GROUPS", "MAX_GROUP_LENGTH", "IdentityProviders", "Person"]

ALLOWED_ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})
MAX_GROUPS = 200  # what large IdPs put in a token before they switch to an overage claim
MAX_GROUP_LENGTH = 256
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
_JWKS_URL_TTL = 300.0
_LEEWAY = 30


@dataclass(frozen=True, slots=True)
class Person:
    """A person a verified identity-provider token names."""

    email: Email
    groups: tuple[str, ...]  # sorted, unique
    groups_error: str | None  # why the groups claim could not be read (then groups is ())
    claims: dict[str, Any]  # the verified claims
    admin: bool


def _parse_groups(value: Any, claim: str) -> tuple[tuple[str, ...], str | None]:
    """(the groups, None) or ((), why the claim is unusable); an absent claim is no groups."""
    if value is None:
        return (), None
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        return (), f"the {claim!r} claim must be a list of group names"
    if len(value) > MAX_GROUPS:
        return (), f"the {claim!r} claim names {len(value)} groups, more than {MAX_GROUPS}"
    if any(len(g) > MAX_GROUP_LENGTH or "\x00" in g for g in value):
        return (), f"a group in {claim!r} is longer than {MAX_GROUP_LENGTH} or holds NUL"
    return tuple(sorted(set(value))), None


class IdentityProviders:
    """Verifies people's tokens from the ``[[idp]]`` entries of ``tether.toml``."""

    def __init__(self, idps: Sequence[IdpConfig], admin_groups: Sequence[str]) -> None:
        self._by_issuer = {idp.issuer: idp for idp in idps}
        self._admin_groups = frozenset(admin_groups)
        self._jwks: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._by_issuer)

    def authenticate(self, token: str, *, audience: str | None = None) -> Caller:
        """The person a verified IdP token names; raises :class:`Unauthenticated`.

        ``audience`` overrides the provider's configured one: a token a person hands an
        agent for delegation is addressed to Tether's token endpoint, so it can never
        double as a login to the admin API (and a login can never be delegated)."""
        person = self.identify(token, audience=audience)
        return Caller.user(person.email, admin=person.admin)

    def identify(self, token: str, *, audience: str | None = None) -> Person:
        """The person, their groups and the verified claims (see :meth:`authenticate`)."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed bearer token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
        refused = _FORBIDDEN_HEADERS.intersection(header)
        if refused:
            raise Unauthenticated(f"token header {sorted(refused)[0]!r} is not accepted")
        issuer = claims.get("iss")
        idp = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if idp is None:
            raise Unauthenticated("token issuer is not a trusted identity provider")
        key = self._key(idp, header.get("kid"), alg)
        try:
            verified = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audience or idp.audience,
                issuer=idp.issuer,
                leeway=_LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"identity token rejected: {exc}") from exc
        email = verified.get(idp.email_claim)
        if not isinstance(email, str):
            raise Unauthenticated(f"identity token has no {idp.email_claim!r} claim")
        try:
            person = parse_email(email)
        except InvalidRequest as exc:
            raise Unauthenticated(f"identity token email is invalid: {exc}") from exc
        groups, problem = _parse_groups(verified.get(idp.groups_claim), idp.groups_claim)
        is_admin = any(group in self._admin_groups for group in groups)
        return Person(person, groups, problem, verified, is_admin)

    def _key(self, idp: IdpConfig, kid: Any, alg: str) -> PyJWK:
        keys = self._jwks_of(idp).get("keys")
        if not isinstance(keys, list):
            raise Unauthenticated("identity provider JWKS has no keys")
        matches = [k for k in keys if isinstance(k, dict) and (kid is None or k.get("kid") == kid)]
        if len(matches) != 1:
            raise Unauthenticated("no unique identity provider key for this token's kid")
        try:
            key = PyJWK(matches[0], algorithm=alg)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"identity provider key unusable: {exc}") from exc
        declared = matches[0].get("alg")
        if (declared is not None and declared != alg) or key.algorithm_name != alg:
            raise Unauthenticated("token algorithm does not match the identity provider key")
        return key

    def _jwks_of(self, idp: IdpConfig) -> dict[str, Any]:
        with self._lock:
            cached = self._jwks.get(idp.issuer)
            if cached is not None and (idp.jwks_url is None or time.monotonic() < cached[0]):
                return cached[1]
            try:
                if idp.jwks_file is not None:
                    document = json.loads(idp.jwks_file.read_text(encoding="utf-8"))
                else:
                    assert idp.jwks_url is not None
                    response = httpx.get(idp.jwks_url, timeout=5.0)
                    response.raise_for_status()
                    document = response.json()
            except (OSError, ValueError, httpx.HTTPError) as exc:
                raise Unauthenticated(f"cannot load JWKS of {idp.issuer}: {exc}") from exc
            if not isinstance(document, dict):
                raise Unauthenticated(f"JWKS of {idp.issuer} is not a JSON object")
            self._jwks[idp.issuer] = (time.monotonic() + _JWKS_URL_TTL, document)
            return document
