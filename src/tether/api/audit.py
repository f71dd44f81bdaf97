"""``/v1/audit/...``: events, explain, export, checkpoints, proofs and verification.

Events, export and verification are for admins; checkpoints and proofs (hashes only)
for any authenticated caller, so auditors can check what they were shown.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import Field

from tether.api.bodies import StrictBody, optional_duration
from tether.api.deps import CallerDep, TetherDep
from tether.audit.export import FORMATS, Format, render
from tether.audit.queries import Filter, explain, search
from tether.audit.terms import EventTerms
from tether.callers import Caller
from tether.core import Tether
from tether.errors import Forbidden, InvalidRequest, NotFound

__all__ = ["router"]

router = APIRouter(tags=["audit"])

_EXPORT_PAGE = 5_000


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _admin(tether: Tether, caller: Caller, what: str) -> None:
    if not caller.is_admin:
        tether.refused(caller.subject, f"only admins {what}", "audit")
        raise Forbidden(f"only an admin can {what}")


_MAX_SEQ = 2**63 - 1


class VerifyBody(StrictBody):
    verifier_keys: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="C2SP verifier keys to trust (default: this server's audit key)",
    )
    checkpoints: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="signed checkpoint notes kept outside the store, to check the log against",
    )


@router.get("/v1/audit/events")
def list_events(
    tether: TetherDep,
    caller: CallerDep,
    after: int = Query(0, ge=0, le=_MAX_SEQ),
    limit: int = Query(100, ge=1, le=1000),
    agent: str | None = None,
    user: str | None = None,
    action: str | None = None,
    decision: str | None = None,
    type: str | None = None,
    since: str | None = Query(None, description="a duration back from now, e.g. 1h"),
) -> dict[str, Any]:
    """Matching events after ``after``, oldest first; ``next`` continues the listing."""
    _admin(tether, caller, "read the audit log")
    where = Filter.of(
        tether.registry,
        agent=agent,
        user=user,
        action=action,
        decision=decision,
        type=type,
        since=_since(tether, since),
    )
    found, cursor = search(tether.events, EventTerms(tether.store), where, after=after, limit=limit)
    return {"events": [e.to_dict() for e in found], "next": cursor}


@router.get("/v1/audit/events/{seq}")
def get_event(
    tether: TetherDep, caller: CallerDep, seq: int = Path(ge=1, le=_MAX_SEQ)
) -> dict[str, Any]:
    _admin(tether, caller, "read the audit log")
    return tether.events.get(seq).to_dict()


@router.get("/v1/audit/events/{seq}/explain")
def explain_event(
    tether: TetherDep, caller: CallerDep, seq: int = Path(ge=1, le=_MAX_SEQ)
) -> dict[str, Any]:
    """Who did this: the chain, human first, each agent with its owner; the decision."""
    _admin(tether, caller, "read the audit log")
    return explain(tether.events, EventTerms(tether.store), tether.registry, seq)


@router.get("/v1/audit/export")
def export(
    tether: TetherDep,
    caller: CallerDep,
    format: str = Query("jsonl", description="ocsf, cef or jsonl"),
    since: str | None = None,
    after: int = Query(0, ge=0, le=_MAX_SEQ),
) -> StreamingResponse:
    """Every event (from ``since`` or after ``after``), one per line, in a SIEM format."""
    _admin(tether, caller, "export the audit log")
    if format not in FORMATS:
        raise InvalidRequest(f"unknown format {format!r}: use ocsf, cef or jsonl")
    fmt: Format = format
    start = _since(tether, since)
    version = tether.version

    def lines() -> Iterator[str]:
        cursor = after
        while True:
            page = tether.events.bodies(after=cursor, since=start, limit=_EXPORT_PAGE)
            for _, _, body in page:
                yield render(body, fmt, version=version) + "\n"
            if len(page) < _EXPORT_PAGE:
                return
            cursor = page[-1][0]

    media = "application/x-ndjson" if fmt != "cef" else "text/plain"
    return StreamingResponse(lines(), media_type=media)


@router.get("/v1/audit/checkpoint")
def latest_checkpoint(tether: TetherDep, caller: CallerDep) -> dict[str, Any]:
    """The newest signed checkpoint (an admin asking makes the first one)."""
    latest = tether.checkpoints.latest()
    if latest is None:
        if not caller.is_admin:
            raise NotFound("no checkpoint has been signed yet")
        latest = tether.checkpoints.make()
    return latest.to_dict()


@router.post("/v1/audit/checkpoint")
def make_checkpoint(tether: TetherDep, caller: CallerDep) -> dict[str, Any]:
    """Sign a checkpoint of the tree now (after checking it against the previous one)."""
    _admin(tether, caller, "sign audit checkpoints")
    return tether.checkpoints.make().to_dict()


@router.get("/v1/audit/proofs/inclusion")
def inclusion_proof(
    tether: TetherDep,
    caller: CallerDep,
    seq: int = Query(ge=1, le=_MAX_SEQ, description="the event's sequence number"),
    size: int | None = Query(None, ge=1, le=_MAX_SEQ, description="tree size (default: now)"),
) -> dict[str, Any]:
    tree_size, leaf, proof = tether.events.inclusion(seq, size)
    _, root = tether.events.root(tree_size)
    return {
        "leaf_index": seq - 1,
        "tree_size": tree_size,
        "leaf_hash": _b64(leaf),
        "root": _b64(root),
        "proof": [_b64(h) for h in proof],
    }


@router.get("/v1/audit/proofs/consistency")
def consistency_proof(
    tether: TetherDep,
    caller: CallerDep,
    size1: int = Query(ge=0, le=_MAX_SEQ),
    size2: int = Query(ge=0, le=_MAX_SEQ),
) -> dict[str, Any]:
    proof = tether.events.consistency(size1, size2)
    _, root1 = tether.events.root(size1)
    _, root2 = tether.events.root(size2)
    return {
        "size1": size1,
        "size2": size2,
        "root1": _b64(root1),
        "root2": _b64(root2),
        "proof": [_b64(h) for h in proof],
    }


@router.post("/v1/audit/verify")
def verify(tether: TetherDep, caller: CallerDep, body: VerifyBody) -> dict[str, Any]:
    """Recompute every leaf and the tree, check every checkpoint. 200 with ``ok`` false
    (and ``first_bad_seq``) when the log was changed."""
    _admin(tether, caller, "verify the audit log")
    return tether.verify_audit(body.verifier_keys or None, body.checkpoints).to_dict()


def _since(tether: Tether, text: str | None) -> Any:
    back = optional_duration(text)
    return tether.clock() - back if back is not None else None
