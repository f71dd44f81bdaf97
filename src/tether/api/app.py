"""The FastAPI application factory."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.routing import Route

from tether.api import (
    agents,
    alerts,
    approvals,
    audit,
    authzen,
    credentials,
    discovery,
    egress,
    gateway,
    grants,
    oauth,
)
from tether.api.body_limit import BodyLimit
from tether.api.errors import install_error_handlers
from tether.api.request_ids import RequestIds
from tether.callers import Caller
from tether.core import VERSION, Tether
from tether.egress.engine import EgressProxy
from tether.egress.reverse import ReverseFace
from tether.gateway.http import McpFace, protected_resource_metadata

__all__ = ["create_app"]


def create_app(tether: Tether) -> FastAPI:
    """An app serving ``tether``; the caller owns the Tether's lifetime."""
    face = McpFace(tether)
    proxy = EgressProxy(tether)  # the egress proxy's engine, for every face of it
    reverse = ReverseFace(proxy)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with face.lifespan(), proxy.running():
            yield

    app = FastAPI(
        lifespan=lifespan,
        title="Tether",
        version=VERSION,
        description="Identity-first security for AI agents: the admin API.",
    )
    app.state.tether = tether
    app.state.egress = proxy
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=tether.settings.max_request_bytes,
        per_prefix=(("/egress/", tether.settings.egress.max_request_bytes),),
    )
    app.add_middleware(RequestIds)  # outermost: even a refused body gets its request ID
    app.include_router(agents.router)
    app.include_router(grants.router)
    app.include_router(authzen.router)
    app.include_router(oauth.router)
    app.include_router(audit.router)
    app.include_router(gateway.router)
    app.include_router(credentials.router)
    app.include_router(discovery.router)
    app.include_router(alerts.router)
    app.include_router(approvals.router)
    app.include_router(egress.router)
    app.router.routes.append(Route("/mcp/{name}", endpoint=face, methods=["GET", "POST", "DELETE"]))
    for route in ("/egress/{name}", "/egress/{name}/{path:path}"):
        app.router.routes.append(Route(route, endpoint=reverse))  # every method: 405 is recorded

    @app.get("/.well-known/oauth-protected-resource/mcp/{name}", tags=["gateway"])
    def resource_metadata(name: str) -> dict[str, Any]:
        """RFC 9728: what protects ``/mcp/NAME`` and who issues its tokens."""
        return protected_resource_metadata(tether, name)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": VERSION}

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus metrics: agents by state and open alerts by severity (from the
        store), this process's decision and alert counters. Counts only: no names, owners
        or other identifiers."""
        agents = Counter(a.state.value for a in tether.registry.list(Caller.system("metrics")))
        gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
            "tether_agents": {(("state", state),): float(n) for state, n in agents.items()},
            "tether_state_epoch": {(): float(tether.epoch.current())},
            "tether_audit_events": {(): float(tether.events.size())},
            "tether_alerts_open": {
                (("severity", severity),): float(n)
                for severity, n in tether.alerts.open_counts().items()
            },
        }
        return PlainTextResponse(
            tether.metrics.render(gauges), media_type="text/plain; version=0.0.4"
        )

    return app
