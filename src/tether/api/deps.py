"""Request dependencies: the Tether instance and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tether.callers import Caller
from tether.core import Tether
from tether.errors import Unauthenticated

__all__ = ["CallerDep", "TetherDep"]

_bearer = HTTPBearer(auto_error=False, description="The admin token or an IdP token")


def _tether(request: Request) -> Tether:
    tether = request.app.state.tether
    assert isinstance(tether, Tether)
    return tether


def _caller(
    tether: Annotated[Tether, Depends(_tether)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated("missing bearer token: send Authorization: Bearer <token>")
        return tether.authenticate(credentials.credentials)
    except Unauthenticated as exc:  # every refusal on the admin API is on record
        tether.refused("anonymous", exc.description, "authenticate")
        raise


TetherDep = Annotated[Tether, Depends(_tether)]
CallerDep = Annotated[Caller, Depends(_caller)]
