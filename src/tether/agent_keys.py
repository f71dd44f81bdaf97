"""Agents' Ed25519 key pairs: made by whoever registers, the private half written once.

The registry stores only the public key (raw 32 bytes, base64url without padding). The
private key is written as PKCS#8 PEM to a file with mode 0600 and is never stored,
logged or printed.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tether.errors import Conflict, InvalidRequest

__all__ = [
    "KeyPair",
    "client_assertion",
    "generate_key_pair",
    "load_private_key",
    "parse_public_key",
    "write_private_key",
]


class KeyPair:
    """A fresh key pair: ``public_key`` for the registry, ``private_pem`` for one file."""

    __slots__ = ("private_pem", "public_key")

    def __init__(self, private_pem: bytes, public_key: str) -> None:
        self.private_pem = private_pem
        self.public_key = public_key

    def __repr__(self) -> str:  # never show the private half
        return f"KeyPair(public_key={self.public_key!r})"


def generate_key_pair() -> KeyPair:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(pem, _encode(private.public_key()))


def _encode(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_public_key(text: str) -> str:
    """Accept raw base64url (32 bytes) or a PEM SubjectPublicKeyInfo; return base64url."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("public_key is required: an Ed25519 public key (base64url or PEM)")
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            loaded = serialization.load_pem_public_key(text.encode("ascii"))
            if not isinstance(loaded, Ed25519PublicKey):
                raise InvalidRequest("public_key must be an Ed25519 key")
            return _encode(loaded)
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _encode(Ed25519PublicKey.from_public_bytes(raw))
    except (ValueError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        if isinstance(exc, InvalidRequest):
            raise
        raise InvalidRequest(
            "invalid public_key: expected an Ed25519 public key, 32 bytes base64url or PEM"
        ) from exc


def write_private_key(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``pem``; never overwrite an existing file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise Conflict(f"key file {path} already exists: choose another --key-out") from exc
    except OSError as exc:
        raise InvalidRequest(f"cannot write key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An agent's private key from its file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read the agent's key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidRequest(f"{path} is not an Ed25519 private key")
    return key


def client_assertion(agent_id: str, token_endpoint: str, key: Ed25519PrivateKey) -> str:
    """A fresh RFC 7523 client assertion of the agent, signed with its own key."""
    now = int(time.time())
    claims = {
        "iss": agent_id,
        "sub": agent_id,
        "aud": token_endpoint,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="EdDSA")
