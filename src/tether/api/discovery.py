"""``/v1/discovery``: findings of discovery scans, reconciled with the registry.

The CLI scans where it runs (``tether discover scan``) and posts what it found here; the
server reconciles it with the registry, stores it, and serves it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import Field

from tether.api.bodies import StrictBody
from tether.api.deps import CallerDep, TetherDep
from tether.errors import Forbidden

__all__ = ["router"]

router = APIRouter(tags=["discovery"])


class ScanBody(StrictBody):
    roots: list[str] = Field(max_length=1000, description="the scanned paths (absolute)")
    findings: list[dict[str, Any]] = Field(max_length=200_000)
    import_shadow: bool = Field(
        default=False, description="register shadow agents (unowned, suspended)"
    )


@router.post("/v1/discovery/scans")
def record_scan(tether: TetherDep, caller: CallerDep, body: ScanBody) -> dict[str, Any]:
    done = tether.discovery.reconcile(
        caller, body.roots, body.findings, import_shadow=body.import_shadow
    )
    return done.to_dict()


@router.get("/v1/discovery/findings")
def list_findings(
    tether: TetherDep,
    caller: CallerDep,
    status: str | None = Query(default=None, description="registered, shadow or stale"),
    kind: str | None = Query(default=None),
) -> dict[str, Any]:
    if not caller.is_admin:
        tether.refused(caller.subject, "only admins read discovery findings", "discovery")
        raise Forbidden("only an admin can read discovery findings")
    return {"findings": tether.discovery.list(status=status, kind=kind)}
