"""RFC 7009 revocation: a token and every token exchanged from it (its family), by its
client or an admin, recorded and moving the state epoch so every verifier refuses them."""

from __future__ import annotations

from collections.abc import Sequence

import jwt
from sqlalchemy import Connection, select, update

from tether.audit.record import Entry
from tether.callers import Caller
from tether.errors import InvalidClient
from tether.services import Services
from tether.store import issued_tokens

__all__ = ["Revocation", "token_family"]


class Revocation:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._log = services.events
        self._epoch = services.epoch
        self._clock = services.clock

    def revoke(self, by: Caller, token: str) -> int:
        """Revoke a token and every token exchanged from it; returns how many."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return 0  # RFC 7009: an invalid token is not an error
        jti = str(claims.get("jti", ""))
        now = self._clock()
        with self._store.write() as conn:
            row = conn.execute(select(issued_tokens).where(issued_tokens.c.jti == jti)).first()
            if row is None:
                return 0
            if not by.is_admin and by.subject not in (row.client_id, f"agent:{row.client_id}"):
                raise InvalidClient("a token can be revoked only by its client or an admin")
            family = token_family(conn, [jti])
            conn.execute(
                update(issued_tokens)
                .where(issued_tokens.c.jti.in_(family), issued_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            self._log.append(
                conn,
                Entry.of(
                    "token.revoked",
                    actor=by.subject,
                    subject=row.subject,
                    detail={"jti": jti, "family": family},
                ),
            )
            self._epoch.bump(conn)
        return len(family)


def token_family(conn: Connection, roots: Sequence[str]) -> list[str]:
    """``roots`` and every token exchanged from them, at any depth (one query a level)."""
    family = list(dict.fromkeys(roots))
    seen = set(family)
    level = family
    while level:
        children = conn.execute(
            select(issued_tokens.c.jti).where(issued_tokens.c.parent_jti.in_(level))
        ).scalars()
        level = [jti for jti in children if jti not in seen]
        seen.update(level)
        family.extend(level)
    return family
