"""People's tokens from the tests' identity provider (an Ed25519 key published as kid
``idp-1``): for the admin API (audience ``tether``) and for delegation (the token
endpoint as audience, with a ``jti``)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

__all__ = [
    "IDP_ISSUER",
    "delegation_token",
    "idp_config",
    "person_header",
    "person_token",
]

IDP_ISSUER = "https://idp.example.com"


def person_token(
    idp_key: Ed25519PrivateKey,
    email: str,
    /,
    groups: list[str] | None = None,
    *,
    issuer: str = IDP_ISSUER,
    audience: str = "tether",
    ttl: int = 300,
    **claims: Any,
) -> str:
    """A signed token for ``email``; ``claims`` are added, and a claim given as ``None`` is
    left out."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": email,
        "email": email,
        "iat": now,
        "exp": now + ttl,
    }
    if groups is not None:
        payload["groups"] = groups
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, idp_key, algorithm="EdDSA", headers={"kid": "idp-1"})


def person_header(
    idp_key: Ed25519PrivateKey, email: str, /, groups: list[str] | None = None, **claims: Any
) -> dict[str, str]:
    """``person_token`` as an ``Authorization`` header."""
    return {"Authorization": f"Bearer {person_token(idp_key, email, groups, **claims)}"}


def delegation_token(
    idp_key: Ed25519PrivateKey,
    email: str,
    /,
    *,
    issuer: str,
    tether: str,
    ttl: int = 600,
    **claims: Any,
) -> str:
    """A person's token for Tether's token endpoint (``tether`` is Tether's issuer), to
    delegate with: no admin-API login. A fresh ``jti`` unless ``claims`` name one."""
    claims.setdefault("jti", str(uuid.uuid4()))
    audience = f"{tether}/oauth2/token"
    return person_token(idp_key, email, issuer=issuer, audience=audience, ttl=ttl, **claims)


def idp_config(directory: Path) -> tuple[Ed25519PrivateKey, str]:
    """A new key of the tests' identity provider, its JWKS written in ``directory``, and
    the ``[[idp]]`` lines of tether.toml that trust it for the admin API."""
    idp_key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(idp_key.public_key(), as_dict=True)
    jwk["kid"] = "idp-1"
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    return idp_key, f'[[idp]]\nissuer = "{IDP_ISSUER}"\naudience = "tether"\njwks_file = "{jwks}"\n'
