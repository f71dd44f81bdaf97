"""The small part of JOSE Tether needs, with strict rules: EdDSA (Ed25519) only.

Signing goes through PyJWT; before any verification, the header is read and checked here:
exactly ``EdDSA``, a ``kid``, and no ``jku``, ``x5u``, ``x5c``, ``jwk`` or ``crit`` (keys
come only from Tether's own key set, never from the token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.api_jws import PyJWS

from tether.errors import InvalidToken

__all__ = [
    "ALGORITHM",
    "b64url_decode",
    "b64url_encode",
    "public_jwk",
    "raw_public",
    "read_header",
    "sign",
    "thumbprint",
    "verify_ed25519",
]

ALGORITHM = "EdDSA"
_REFUSED = ("jku", "x5u", "x5c", "jwk", "crit")
_MAX_TOKEN = 16_384


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint(raw: bytes) -> str:
    """RFC 7638 JWK thumbprint of an Ed25519 public key: Tether's ``kid``."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}, separators=(",", ":")
    )
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def public_jwk(raw: bytes, kid: str) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def sign(payload: bytes, key: Ed25519PrivateKey, headers: dict[str, Any]) -> str:
    """A compact JWS over ``payload`` (headers are serialised with sorted keys; a
    ``typ`` of None leaves ``typ`` out)."""
    return PyJWS().encode(payload, key, algorithm=ALGORITHM, headers=headers)


def verify_ed25519(raw_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`InvalidToken` unless ``signature`` is a valid Ed25519 signature."""
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise InvalidToken("signature does not verify") from exc


def read_header(token: str, *, require_kid: bool = True) -> dict[str, Any]:
    """The protected header of a compact JWS, checked against Tether's rules."""
    if (
        not isinstance(token, str)
        or len(token) > _MAX_TOKEN
        or not token.isascii()
        or token.count(".") != 2
    ):
        raise InvalidToken("not a compact JWS")
    try:
        header = json.loads(b64url_decode(token.split(".", 1)[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidToken("unreadable token header") from exc
    if not isinstance(header, dict):
        raise InvalidToken("unreadable token header")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"token algorithm {header.get('alg')!r} is not accepted (EdDSA only)")
    refused = [name for name in _REFUSED if name in header]
    if refused:
        raise InvalidToken(f"token header {refused[0]!r} is not accepted")
    if require_kid and not isinstance(header.get("kid"), str):
        raise InvalidToken("token header has no kid")
    return header
