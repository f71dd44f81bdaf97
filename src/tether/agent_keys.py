"""Agents' Ed25519 key pairs: made by whoever registers, the private half written once.

The registry stores only the public key (raw 32 bytes, base64url without padding). The
private key is written as PKCS#8 PEM to a file with mode 0600 and is never stored,
logged or printed. Once the agent is registered its key file also names it: a line
``Agent: <SPIFFE ID>`` before the PEM block (RFC 7468 explanatory text, which PEM readers
skip), so a process given only the key file (the stdio bridge) knows whom it speaks for.
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

_AGENT_LINE = b"Agent: "
_PEM_BEGIN = b"-----BEGIN"

__all__ = [
    "KeyPair",
    "client_assertion",
    "generate_key_pair",
    "key_file_agent",
    "label_key_file",
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


def label_key_file(path: Path, agent_id: str) -> None:
    """Name the agent in its key file (``Agent: <agent_id>`` before the PEM block),
    replacing the file atomically; its mode stays 0600."""
    pem = _read(path)
    staged = path.with_name(f".{path.name}.label")
    staged.unlink(missing_ok=True)
    write_private_key(staged, _AGENT_LINE + agent_id.encode("ascii") + b"\n" + _pem_block(pem))
    os.replace(staged, path)


def key_file_agent(path: Path) -> str | None:
    """The agent a key file names (its ``Agent:`` line), or None when it names none."""
    head, _, _ = _read(path).partition(_PEM_BEGIN)
    for line in head.splitlines():
        if line.startswith(_AGENT_LINE):
            return line[len(_AGENT_LINE) :].strip().decode("ascii", "replace") or None
    return None


def _pem_block(data: bytes) -> bytes:
    at = data.find(_PEM_BEGIN)
    return data[at:] if at >= 0 else data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the agent's key {path}: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An agent's private key from its file."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, None)
    except ValueError as exc:
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
