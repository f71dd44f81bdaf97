"""Tether's token-signing keys: Ed25519, rotated, published as a JWKS.

The private half of each key lives in ``TETHER_HOME/signing/<kid>.pem`` (mode 0600);
public halves are in the store, so every process sharing it verifies every token. After
``rotate`` the previous key stays in the JWKS until every token it signed has expired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, update

from tether.agent_keys import write_private_key
from tether.audit.record import Entry
from tether.callers import Caller
from tether.errors import Forbidden, StoreUnavailable
from tether.jose import b64url_decode, b64url_encode, public_jwk, raw_public, thumbprint
from tether.services import Services
from tether.store import signing_keys

__all__ = ["SigningKeys"]

_REFRESH_SECONDS = 1.0


class SigningKeys:
    """The signing keys of one store. ``monotonic`` times the once-a-second re-reads
    (tests replace it to step past a refresh instead of sleeping through it)."""

    def __init__(self, services: Services, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = services.store
        self._settings = services.settings
        self._log = services.events
        self._clock = services.clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._current: tuple[str, Ed25519PrivateKey] | None = None
        self._current_at = float("-inf")
        self._public: dict[str, bytes] = {}
        self._verifiers: dict[str, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")

    @property
    def _dir(self) -> Path:
        return self._settings.home / "signing"

    def ensure(self) -> str:
        """Make the first key if there is none; returns the current kid."""
        with self._store.read() as conn:
            row = conn.execute(
                select(signing_keys.c.kid)
                .where(signing_keys.c.retired_at.is_(None))
                .order_by(signing_keys.c.created_at.desc())
            ).first()
        return str(row.kid) if row is not None else self._create(None)

    def rotate(self, by: Caller) -> str:
        if not by.is_admin:
            self._log.record(
                Entry.of(
                    "access.refused",
                    actor=by.subject,
                    subject=None,
                    reason="only admins rotate signing keys",
                    detail={"op": "keys.rotate"},
                )
            )
            raise Forbidden("only an admin can rotate signing keys")
        return self._create(by)

    def _create(self, by: Caller | None) -> str:
        private = Ed25519PrivateKey.generate()
        raw = raw_public(private.public_key())
        kid = thumbprint(raw)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_key(self._dir / f"{kid}.pem", pem)
        now = self._clock()
        with self._store.write() as conn:
            conn.execute(
                update(signing_keys)
                .where(signing_keys.c.retired_at.is_(None))
                .values(retired_at=now)
            )
            conn.execute(
                insert(signing_keys).values(
                    kid=kid, public_key=b64url_encode(raw), created_at=now, retired_at=None
                )
            )
            self._log.append(
                conn,
                Entry.of(
                    "keys.rotated",
                    actor=(by or Caller.system("keys")).subject,
                    subject=f"kid:{kid}",
                    detail={"kid": kid},
                ),
            )
        with self._lock:
            self._current = None
            self._loaded_at = float("-inf")
        return kid

    def current(self) -> tuple[str, Ed25519PrivateKey]:
        """The kid and private key new tokens are signed with."""
        current = self._current
        if current is not None and self.monotonic() - self._current_at < _REFRESH_SECONDS:
            return current
        kid = self.ensure()  # another process may have rotated
        if current is not None and current[0] == kid:
            self._current_at = self.monotonic()
            return current
        path = self._dir / f"{kid}.pem"
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(f"the current signing key {kid} is not in {self._dir}") from exc
        assert isinstance(loaded, Ed25519PrivateKey)
        with self._lock:
            self._current = (kid, loaded)
            self._current_at = self.monotonic()
        return kid, loaded

    def public(self, kid: str) -> bytes | None:
        """The raw public key for ``kid`` if it is published; re-read at most once a second."""
        if self.monotonic() - self._loaded_at >= _REFRESH_SECONDS:
            self._reload()  # also drops keys retired for longer than a token can live
        return self._public.get(kid)

    def verifier(self, kid: str) -> jwt.PyJWK | None:
        """The published key ``kid`` as PyJWT wants it (built once per key)."""
        found = self._verifiers.get(kid)
        if found is not None and self.monotonic() - self._loaded_at < _REFRESH_SECONDS:
            return found
        raw = self.public(kid)
        if raw is None:
            return None
        key = jwt.PyJWK(
            {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}, algorithm="EdDSA"
        )
        with self._lock:
            self._verifiers[kid] = key
        return key

    def _reload(self) -> None:
        keep_after = self._clock() - self._settings.token_ttl_max - self._settings.token_leeway
        with self._store.read() as conn:
            rows = conn.execute(select(signing_keys)).all()
        published = {
            row.kid: b64url_decode(row.public_key)
            for row in rows
            if row.retired_at is None or row.retired_at > keep_after
        }
        with self._lock:
            self._public = published
            self._verifiers = {k: v for k, v in self._verifiers.items() if k in published}
            self._loaded_at = self.monotonic()

    def jwks(self) -> dict[str, Any]:
        self._reload()
        return {"keys": [public_jwk(raw, kid) for kid, raw in sorted(self._public.items())]}
