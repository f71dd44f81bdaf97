"""A development identity provider, clearly labelled and off by default.

With ``tether up --demo`` or ``dev_idp = true`` in ``tether.toml``, Tether trusts an IdP of
its own (issuer ``<issuer>/dev-idp``) whose key lives in ``TETHER_HOME/dev-idp.pem``, so
people's tokens can be minted for trying delegation: ``tether dev user-token EMAIL``.
Never enable it where real people log in: anyone holding the admin token can then speak
for anyone.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from tether.agent_keys import write_private_key
from tether.config import IdpConfig, Settings
from tether.errors import Conflict, Forbidden, InvalidRequest
from tether.idp import MAX_GROUP_LENGTH, MAX_GROUPS
from tether.model import parse_email

__all__ = ["DevIdp"]

_AUDIENCE = "tether"
_TTL = 3600


class DevIdp:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.issuer = f"{settings.issuer}/dev-idp"
        self._key_file: Path = settings.home / "dev-idp.pem"
        self._jwks_file: Path = settings.home / "dev-idp-jwks.json"

    def config(self) -> IdpConfig:
        """Make the key on first use; the IdP entry Tether then trusts."""
        key = self._key()
        jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
        jwk["kid"] = "dev-idp"
        self._jwks_file.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
        return IdpConfig(issuer=self.issuer, audience=_AUDIENCE, jwks_file=self._jwks_file)

    def _key(self) -> Ed25519PrivateKey:
        if not self._key_file.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            with contextlib.suppress(Conflict):  # another process made it first
                write_private_key(self._key_file, pem)
        loaded = serialization.load_pem_private_key(self._key_file.read_bytes(), None)
        assert isinstance(loaded, Ed25519PrivateKey)
        return loaded

    def user_token(self, email: str, *, is_admin_caller: bool, groups: Sequence[str] = ()) -> str:
        """A person's token from the development IdP (admins only), addressed to the token
        endpoint: it starts a delegation and is no login to the admin API. ``groups``
        become its ``groups`` claim, as a real IdP's would."""
        if not is_admin_caller:
            raise Forbidden("only an admin can mint development user tokens")
        person = parse_email(email)
        if len(groups) > MAX_GROUPS or not all(
            isinstance(g, str) and 0 < len(g) <= MAX_GROUP_LENGTH for g in groups
        ):
            raise InvalidRequest(f"groups: at most {MAX_GROUPS} names of 1-256 characters")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": f"{self._settings.issuer}/oauth2/token",  # for delegation only
            "sub": person,
            "email": person,
            "iat": now,
            "exp": now + _TTL,
            "jti": str(uuid.uuid4()),
            "tether_dev_idp": True,
        }
        if groups:
            claims["groups"] = sorted(set(groups))
        return jwt.encode(claims, self._key(), algorithm="EdDSA", headers={"kid": "dev-idp"})
