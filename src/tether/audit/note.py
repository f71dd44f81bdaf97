"""C2SP signed notes (Ed25519) and tlog-checkpoint bodies.

A checkpoint is the text ``<origin>\\n<size>\\n<base64 root>\\n``, a blank line, and one
signature line per key: ``— <key name> base64(key ID || signature)``. The key ID is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``; a verifier key is written
``<name>+<hex key ID>+base64(0x01 || public key)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tether.errors import VerificationFailed
from tether.jose import raw_public

__all__ = ["Checkpoint", "Verifier", "sign_checkpoint", "verifier_key"]

_ED25519 = b"\x01"
_DASH = "\u2014 "


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name) or not name.isprintable():
        raise ValueError(f"invalid note key name {name!r}")


def verifier_key(name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The C2SP verifier-key string of ``key`` under ``name``."""
    _check_name(name)
    public = raw_public(key.public_key() if isinstance(key, Ed25519PrivateKey) else key)
    encoded = base64.b64encode(_ED25519 + public).decode()
    return f"{name}+{_key_id(name, public).hex()}+{encoded}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def sign_checkpoint(checkpoint: Checkpoint, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note of ``checkpoint``."""
    _check_name(name)
    text = checkpoint.text()
    signature = key.sign(text.encode())
    key_id = _key_id(name, raw_public(key.public_key()))
    return f"{text}\n{_DASH}{name} {base64.b64encode(key_id + signature).decode()}\n"


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted verifier key, parsed."""

    name: str
    key_id: bytes
    public: Ed25519PublicKey
    text: str

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise VerificationFailed("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, encoded = parts
        try:
            _check_name(name)
            key_id = bytes.fromhex(hex_id)
            data = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise VerificationFailed(f"invalid verifier key: {exc}") from None
        if len(key_id) != 4 or len(data) != 33 or data[:1] != _ED25519:
            raise VerificationFailed("invalid verifier key: not an Ed25519 note key")
        if _key_id(name, data[1:]) != key_id:
            raise VerificationFailed("invalid verifier key: its key ID does not match the key")
        return cls(name, key_id, Ed25519PublicKey.from_public_bytes(data[1:]), text.strip())

    def open(self, note: str) -> Checkpoint:
        """The checkpoint in ``note`` once this key's signature on it verifies; raises
        :class:`VerificationFailed` otherwise."""
        text, signatures = _split(note)
        verified = False
        for name, blob in signatures:
            if name != self.name or blob[:4] != self.key_id:
                continue  # another key's signature: ignored, as C2SP says
            try:
                self.public.verify(blob[4:], text.encode())
            except InvalidSignature:
                raise VerificationFailed(f"bad signature by {self.name} on the note") from None
            verified = True
        if not verified:
            raise VerificationFailed(f"the note carries no signature by {self.name}")
        return _parse_checkpoint(text)


def _split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    if any(c < " " and c != "\n" for c in note):
        raise VerificationFailed("a signed note must not hold control characters")
    text, sep, tail = note.partition("\n\n")
    if not sep or not tail.endswith("\n"):
        raise VerificationFailed("malformed signed note")
    text += "\n"
    signatures: list[tuple[str, bytes]] = []
    for line in tail[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise VerificationFailed("malformed signature line in the note")
        name, _, encoded = line[len(_DASH) :].partition(" ")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            raise VerificationFailed("malformed signature in the note") from None
        if len(blob) < 5:
            raise VerificationFailed("malformed signature in the note")
        signatures.append((name, blob))
    return text, signatures


def _parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or not lines[0]:
        raise VerificationFailed("a checkpoint needs an origin, a size and a root")
    origin, size, root = lines[0], lines[1], lines[2]
    if re.fullmatch(r"0|[1-9][0-9]{0,18}", size) is None:
        raise VerificationFailed(f"invalid checkpoint size {size!r}")
    try:
        digest = base64.b64decode(root, validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        raise VerificationFailed("invalid checkpoint root") from None
    if len(digest) != 32:
        raise VerificationFailed("invalid checkpoint root")
    return Checkpoint(origin, int(size), digest)
