"""``POST /v1/credentials``: an agent fetches a credential through the vault broker."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from tether import credentials
from tether.api.bodies import StrictBody
from tether.api.deps import TetherDep
from tether.errors import InvalidToken

__all__ = ["router"]

router = APIRouter(tags=["credentials"])

_agent_bearer = HTTPBearer(
    auto_error=False, description="An access token of the agent for the Tether issuer URL"
)


class CredentialRequest(StrictBody):
    ref: str = Field(max_length=600, description="vault:<path>#<field> or vault-token:<policy>")


@router.post("/v1/credentials")
def fetch_credential(
    tether: TetherDep,
    auth: Annotated[HTTPAuthorizationCredentials | None, Depends(_agent_bearer)],
    body: CredentialRequest,
) -> dict[str, Any]:
    if auth is None or auth.scheme.lower() != "bearer":
        tether.refused("anonymous", "missing bearer token", "credentials")
        raise InvalidToken("send the agent's access token: Authorization: Bearer <token>")
    return credentials.fetch(tether, auth.credentials, body.ref)
