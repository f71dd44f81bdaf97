"""The admin bearer token: made by ``tether init``, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, insert, select

from tether.store import Store, admin_tokens

__all__ = ["TOKEN_PREFIX", "AdminTokens"]

TOKEN_PREFIX = "tta_"  # noqa: S105 - a marker, not a secret


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AdminTokens:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def create(self) -> str:
        """Make a new admin token and store its SHA-256; the token itself is returned once."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._store.write() as conn:
            conn.execute(
                insert(admin_tokens).values(
                    id=secrets.token_hex(8), token_hash=_hash(token), created_at=self._clock()
                )
            )
        return token

    def exist(self) -> bool:
        with self._store.read() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(admin_tokens)
                .where(admin_tokens.c.revoked_at.is_(None))
            ).scalar_one()
        return bool(count)

    def verify(self, token: str) -> bool:
        """True when ``token`` is a live admin token (compared by its hash)."""
        if not token.startswith(TOKEN_PREFIX):
            return False
        with self._store.read() as conn:
            found = conn.execute(
                select(admin_tokens.c.id).where(
                    admin_tokens.c.token_hash == _hash(token),
                    admin_tokens.c.revoked_at.is_(None),
                )
            ).first()
        return found is not None
