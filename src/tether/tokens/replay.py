"""IDs used once: a client assertion's ``jti`` (RFC 7523 section 3) and a person's
subject token's ``jti`` (exchanged once), each kept until it could no longer be replayed."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from sqlalchemy import delete, insert

from tether.errors import Conflict, InvalidClient
from tether.services import Services
from tether.store import assertion_jtis

__all__ = ["UsedIds"]


class UsedIds:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._settings = services.settings
        self._clock = services.clock

    def use(self, jti: str, client: str, exp: float) -> None:
        """Record a used ID until its exact ``exp`` (rounded *up* to the second: the row
        outlives every instant the token is accepted, exp plus the leeway); a second use
        is :class:`InvalidClient`."""
        expires = datetime.fromtimestamp(math.ceil(exp), UTC)
        key = hashlib.sha256(f"{client}|{jti}".encode()).hexdigest()
        try:
            with self._store.write() as conn:
                conn.execute(
                    insert(assertion_jtis).values(jti=key, client_id=client, expires_at=expires)
                )
        except Conflict:
            raise InvalidClient("client assertion replayed: its jti was used before") from None

    def purge(self) -> int:
        """Forget used assertion and subject-token IDs once they could no longer be
        replayed (past their exp and the leeway); returns how many."""
        horizon = self._clock() - self._settings.token_leeway
        with self._store.write() as conn:
            result = conn.execute(
                delete(assertion_jtis).where(assertion_jtis.c.expires_at < horizon)
            )
        return int(result.rowcount or 0)
