"""``tether audit ...``: verify, checkpoint, prove, search, explain and export the log."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tether.audit.checkpoints import pinned_keys
from tether.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from tether.audit.note import Verifier
from tether.audit.record import canonical
from tether.cli import output
from tether.cli.context import open_client, settings
from tether.cli.options import Json
from tether.errors import Forbidden, InvalidRequest, VerificationFailed

__all__ = ["app"]

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

_VERIFY_FAILED = 4


VerifierKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--verifier-key",
        help="Trust this C2SP verifier key (default: this home's audit key and config).",
    ),
]


@app.command()
def verify(
    verifier_key: VerifierKeys = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint", help="A signed checkpoint note kept elsewhere, to check against."
        ),
    ] = None,
    json_: Json = False,
) -> None:
    """Recompute every event, the tree and every checkpoint; exit 4 naming the first
    bad sequence number if anything was changed, removed or reordered."""
    notes = [_read_note(path) for path in checkpoint or []]
    with open_client() as client:
        report = client.audit_verify(list(verifier_key or []), notes)
    if json_:
        output.emit(report)
    elif report["ok"]:
        output.console.print(
            f"[green]ok[/]: {report['size']} events, root {report['root']}, "
            f"{report['checkpoints']} checkpoints verified",
            markup=True,
        )
    else:
        where = report["first_bad_seq"]
        output.stderr.print(
            "[bold red]verification failed[/]"
            + (f": first bad sequence number {where}" if where is not None else ""),
            markup=True,
        )
        for problem in report["problems"]:
            output.stderr.print(f"  {problem}", markup=False)
    if not report["ok"]:
        raise typer.Exit(_VERIFY_FAILED)


def _read_note(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read checkpoint {path}: {exc}") from None


@app.command()
def checkpoint(json_: Json = False) -> None:
    """Sign a checkpoint of the log now (a C2SP tlog-checkpoint note)."""
    with open_client() as client:
        made = client.audit_checkpoint()
    document = {k: made[k] for k in ("note", "size", "root", "verifier_key", "signed_at")}
    if json_:
        output.emit(document)
    else:
        output.console.print(made["note"], end="", markup=False)
        output.console.print(f"verifier key: {made['verifier_key']}", markup=False)


@app.command()
def prove(
    seq: Annotated[int, typer.Argument(help="The event's sequence number.")],
    size: Annotated[int | None, typer.Option(help="Tree size (default: now).")] = None,
    verifier_key: VerifierKeys = None,
    json_: Json = False,
) -> None:
    """An RFC 9162 inclusion proof of event SEQ. Without --size it is made against a
    signed checkpoint whose signature is checked with a pinned key, so the proof shows
    the event is in the log the audit key vouched for."""
    signed: dict[str, Any] | None = None
    with open_client() as client:
        if size is None:
            signed = client.audit_latest_checkpoint()
            if seq > int(signed["size"]):  # not covered yet: sign one now (admins)
                signed = client.audit_checkpoint()
            size = int(signed["size"])
        proof = client.audit_inclusion(seq, size)
        event = _event_or_none(client, seq)
    if (proof["leaf_index"], proof["tree_size"]) != (seq - 1, size):
        raise VerificationFailed("the server proved another leaf or tree size than asked")
    mine = base64.b64encode(leaf_hash(canonical(event))).decode() if event else None
    if mine is not None and mine != proof["leaf_hash"]:  # the leaf: event SEQ's own bytes
        raise VerificationFailed(f"the proof's leaf is not event {seq}")
    verify_inclusion(
        proof["leaf_index"],
        proof["tree_size"],
        _hash(proof["leaf_hash"]),
        [_hash(h) for h in proof["proof"]],
        _hash(proof["root"]),
    )
    if signed is not None:
        _check_signed(signed, proof["root"], list(verifier_key or []))
        proof["checkpoint"] = signed["note"]
    _show(proof, json_)


def _event_or_none(client: Any, seq: int) -> dict[str, Any] | None:
    """Event SEQ as exported, if this caller may read events (admins)."""
    try:
        event: dict[str, Any] = client.audit_event(seq)
    except Forbidden:
        output.stderr.print(
            "note: only admins read events: the leaf was not tied to the event's bytes",
            markup=False,
        )
        return None
    return event


def _check_signed(signed: dict[str, Any], root: str, given: list[str]) -> None:
    """The checkpoint must carry a valid signature by a pinned key and have ``root``."""
    keys = pinned_keys(settings(), given)
    if not keys:
        output.stderr.print(
            "warning: no pinned audit key (--verifier-key): the checkpoint's signature "
            "was not checked",
            markup=False,
        )
        return
    problems = []
    for text in keys:
        try:
            opened = Verifier.parse(text).open(signed["note"])
        except VerificationFailed as exc:
            problems.append(exc.description)
            continue
        if base64.b64encode(opened.root).decode() != root:
            raise VerificationFailed("the proof's root is not the signed checkpoint's root")
        return
    raise VerificationFailed("the checkpoint is not signed by a pinned key: " + "; ".join(problems))


@app.command()
def consistency(
    old_size: Annotated[int, typer.Argument(help="The older tree size.")],
    new_size: Annotated[int, typer.Argument(help="The newer tree size.")],
    json_: Json = False,
) -> None:
    """An RFC 9162 consistency proof between two tree sizes, checked before printing."""
    with open_client() as client:
        proof = client.audit_consistency(old_size, new_size)
    if proof["size1"] > 0:
        verify_consistency(
            proof["size1"],
            proof["size2"],
            _hash(proof["root1"]),
            _hash(proof["root2"]),
            [_hash(h) for h in proof["proof"]],
        )
    _show(proof, json_)


@app.command()
def search(
    agent: Annotated[str | None, typer.Option(help="An agent in the chain (ID or name).")] = None,
    user: Annotated[str | None, typer.Option(help="The human at the head of the chain.")] = None,
    action: Annotated[str | None, typer.Option(help="The action, e.g. tools/call.")] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Event type.")] = None,
    since: Annotated[str | None, typer.Option(help="How far back, e.g. 24h.")] = None,
    after: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 100,
    json_: Json = False,
) -> None:
    """Find events: who did what, with which decision."""
    params = {
        "agent": agent,
        "user": user,
        "action": action,
        "decision": decision,
        "type": type_,
        "since": since,
        "after": str(after),
        "limit": str(limit),
    }
    with open_client() as client:
        found = client.audit_events({k: v for k, v in params.items() if v is not None})
    if json_:
        output.emit(found)
        return
    table = Table("seq", "time", "type", "chain", "action", "resource", "decision")
    for event in found["events"]:
        table.add_row(
            *map(
                output.cell,
                (
                    event["seq"],
                    output.short_time(event["time"]),
                    event["type"],
                    " > ".join(event["chain"]),
                    event["action"] or "",
                    event["resource"] or "",
                    event["decision"] or "",
                ),
            )
        )
    output.console.print(table)
    if found["next"] is not None:
        output.stderr.print(f"more: --after {found['next']}", markup=False)


@app.command()
def explain(
    event_id: Annotated[int, typer.Argument(help="The event's sequence number.")],
    json_: Json = False,
) -> None:
    """Who did this? The whole chain, human first, each agent with its owner."""
    with open_client() as client:
        found = client.audit_explain(event_id)
    if json_:
        output.emit(found)
        return
    out = output.console
    out.print(f"event {found['seq']} at {found['time']}: {found['type']}", markup=False)
    for depth, link in enumerate(found["chain"]):
        pad = "  " * depth + ("└─ " if depth else "")
        out.print(pad + _link(link), markup=False)
    if found["action"]:
        out.print(f"did: {found['action']} on {found['resource']}", markup=False)
    if found["decision"]:
        out.print(f"decision: {found['decision']}", markup=False)
    for reason in found["reasons"]:
        out.print(f"  because {reason}", markup=False)
    _guard_detail(found.get("detail") or {})
    if found["request_id"]:
        also = ", ".join(map(str, found["related"])) or "none"
        out.print(f"request {found['request_id']} (other events: {also})", markup=False)


@app.command()
def export(
    format: Annotated[str, typer.Option("--format", help="ocsf, cef or jsonl.")],
    since: Annotated[str | None, typer.Option(help="How far back, e.g. 24h.")] = None,
    after: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write to FILE (mode 0600).")] = None,
) -> None:
    """Every event, one per line, for a SIEM (jsonl lines are the leaf bytes)."""
    if format not in ("ocsf", "cef", "jsonl"):
        raise InvalidRequest(f"unknown format {format!r}: use ocsf, cef or jsonl")
    params = {"format": format, "after": str(after)} | ({"since": since} if since else {})
    with open_client() as client:
        text = client.audit_export(params)
    if out is None:
        print(text, end="")
        return
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise InvalidRequest(f"cannot write {out}: {exc.strerror}") from exc
    output.stderr.print(f"wrote {text.count(chr(10))} events to {out}", markup=False)


def _guard_detail(detail: dict[str, Any]) -> None:
    """What a decision's event keeps of the rules, the labels and the earlier events."""
    out = output.console
    if detail.get("policies"):
        out.print("rules: " + ", ".join(map(str, detail["policies"])), markup=False)
    if detail.get("grants"):
        out.print("grants: " + ", ".join(map(str, detail["grants"])), markup=False)
    if detail.get("labels"):
        out.print("resource labels: " + ", ".join(map(str, detail["labels"])), markup=False)
    session = detail.get("session")
    if isinstance(session, dict) and session:
        out.print("the work had touched:", markup=False)
        for label, event in sorted(session.items()):
            if isinstance(event, dict):
                where = f"event {event.get('seq')} ({event.get('resource')})"
                out.print(f"  {label} at {where}", markup=False)
    if detail.get("approval"):
        out.print(f"held: needs the approval of the {detail['approval']}", markup=False)


def _link(link: dict[str, Any]) -> str:
    if link["kind"] != "agent":
        return f"{link['principal']} ({link['kind']})"
    then, now = link["owner_then"] or "no owner", link["owner_now"] or "no owner"
    owner = then if then == now else f"{then} then, {now} now"
    return f"{link['principal']} (agent, owner {owner}, {link['state_now'] or 'gone'} now)"


def _hash(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationFailed("the server sent a malformed hash") from None


def _show(proof: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.emit(proof)
        return
    for key, value in proof.items():
        if key != "proof":
            output.console.print(f"{key}: {value}", markup=False)
    for value in proof["proof"]:
        output.console.print(f"  {value}", markup=False)
