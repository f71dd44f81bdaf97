"""The FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tether.api import agents, authzen, grants, oauth
from tether.api.errors import install_error_handlers
from tether.core import Tether

__all__ = ["create_app"]

VERSION = "0.1.0"


def create_app(tether: Tether) -> FastAPI:
    """An app serving ``tether``; the caller owns the Tether's lifetime."""
    app = FastAPI(
        title="Tether",
        version=VERSION,
        description="Identity-first security for AI agents: the admin API.",
    )
    app.state.tether = tether
    install_error_handlers(app)
    app.include_router(agents.router)
    app.include_router(grants.router)
    app.include_router(authzen.router)
    app.include_router(oauth.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": VERSION}

    return app
