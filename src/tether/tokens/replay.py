"""IDs used once: a client assertion's ``jti`` (RFC 7523 section 3) and a person's
subject token's ``jti`` (exchanged once), each kept until it could no longer be replayed.
A use is committed before the ID is accepted, in a commit shared with the token
service's other writes of the moment (:mod:`~tether.tokens.records`)."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from sqlalchemy import delete

from tether.errors import InvalidClient
from tether.services import Services
from tether.store import assertion_jtis
from tether.tokens.records import Records, UsedId

__all__ = ["UsedIds"]


class UsedIds:
    def __init__(self, services: Services, records: Records) -> None:
        self._store = services.store
        self._records = records
        self._settings = services.settings
        self._clock = services.clock

    def use(self, jti: str, client: str, exp: float) -> None:
        """Record a used ID until its exact ``exp`` (rounded *up* to the second: the row
        outlives every instant the token is accepted, exp plus the leeway); a second use
        is :class:`InvalidClient`."""
        expires = datetime.fromtimestamp(math.ceil(exp), UTC)
        key = hashlib.sha256(f"{client}|{jti}".encode()).hexdigest()
        if not self._records.use(UsedId(key, client, expires)):
            raise InvalidClient("client assertion replayed: its jti was used before")

    def purge(self) -> int:
        """Forget used assertion and subject-token IDs once they could no longer be
        replayed (past their exp and the leeway); returns how many."""
        horizon = self._clock() - self._settings.token_leeway
        with self._store.write() as conn:
            result = conn.execute(
                delete(assertion_jtis).where(assertion_jtis.c.expires_at < horizon)
            )
        return int(result.rowcount or 0)
