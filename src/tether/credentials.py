"""Agents fetch their own credentials from the vault broker: ``POST /v1/credentials``.

The caller is an agent, authenticated by an access token whose audience is Tether itself
(the issuer URL). ``credentials/read`` on ``vault/<path>`` (or ``vault-token/<policy>``) is
decided by the PDP for the token's whole chain and scope, and recorded, before the vault is
asked. A static secret comes back as it is; a dynamic token comes with a lease no longer
than the agent's token has left to live. The broker records who received what, so a kill
knows what to revoke and what to rotate.

A kill may commit between the decision and the vault's answer. Every transaction of the
issue locks the agent's row (``FOR SHARE`` on PostgreSQL, the write lock on SQLite) and
checks that the agent is still active, so across processes sharing the store a kill is
either ordered before it (the agent gets a refusal, and a token already made is revoked
before the answer) or after it (the kill finds the record; for a token, it waits for the
record announced before the vault was asked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from tether.errors import Denied, InvalidToken, TetherError
from tether.model import AgentState
from tether.store import agents
from tether.vault import VaultUnavailable, parse_ref
from tether.vault.broker import Hold

if TYPE_CHECKING:
    from tether.core import Tether

__all__ = ["ACTION", "fetch"]

ACTION = "credentials/read"


def fetch(tether: Tether, bearer: str, ref: str) -> dict[str, Any]:
    """The credential ``ref`` for the agent of ``bearer``. Raises InvalidToken (401),
    InvalidRequest (400, a malformed reference), Denied (403, with the reasons; recorded)
    or VaultUnavailable (503: no vault configured, or it cannot serve now)."""
    try:
        token = tether.tokens.verify(bearer, tether.settings.issuer)
    except TetherError as exc:
        tether.refused("anonymous", exc.description, "credentials")
        raise InvalidToken(exc.description) from None
    parsed = parse_ref(ref)
    [decision] = tether.decide_all([token.request(ACTION, parsed.resource)])
    if not decision.allowed:
        reasons = tuple(decision.reasons)
        raise Denied(f"{ACTION} on {parsed.resource} denied: {'; '.join(reasons)}", reasons)
    if tether.vault is None:
        raise VaultUnavailable("no vault is configured: set [vault] in tether.toml")
    left = int(float(token.claims["exp"]) - tether.clock().timestamp())
    if left < 1:
        raise InvalidToken("the token expires now: get a fresh one")
    agent_id = token.client_id
    try:
        issued = tether.vault.issue(
            agent_id, parsed, max_ttl_seconds=left, hold=_active(tether, agent_id)
        )
    except Denied as exc:
        tether.refused(agent_id, exc.description, "credentials", subject=agent_id)
        raise
    return issued.to_dict()


def _active(tether: Tether, agent_id: str) -> Hold:
    """Lock the agent's row in the issue's transaction; refuse unless it is active."""
    name = tether.registry.parse_ref(agent_id)

    def hold(conn: Connection) -> None:
        state = conn.execute(
            select(agents.c.state).where(agents.c.name == name).with_for_update(read=True)
        ).scalar()
        if state != AgentState.ACTIVE.value:
            raise Denied(
                f"{ACTION}: {agent_id} is {state or 'gone'} now: no credential is handed out",
                (f"the agent is {state or 'gone'}",),
            )

    return hold
