"""``tether approvals ...``: calls held for a person's approval, and the answers to them.

``list`` shows the redacted arguments; ``show`` the exact arguments (what the approver
approves); ``approve`` lets the held call run once (when the agent retries it, or at once
if it is still waiting), ``deny`` refuses it for good."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from tether.cli import output
from tether.cli.context import open_client
from tether.cli.options import Json, Reason
from tether.client import Client
from tether.errors import NotFound, TetherError
from tether.safe_text import neutralise

__all__ = ["app"]

app = typer.Typer(help="Calls held for approval: list, show, approve, deny.", no_args_is_help=True)

ApprovalId = Annotated[str, typer.Argument(help="The approval's id (ap_...).")]
_STATE_STYLE = {"pending": "bold yellow", "approved": "green", "denied": "red", "used": "dim"}
_ID = re.compile(r"ap_[0-9a-f]{16}")


def _call(client: Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = client.request(method, path, **kwargs)
    if not isinstance(answer, dict):
        raise TetherError(f"unexpected answer from Tether for {method} {path}")
    return answer


def _path(approval_id: str, answer: str = "") -> str:
    if _ID.fullmatch(approval_id) is None:  # what no approval can be called: never sent
        raise NotFound(f"no approval {neutralise(approval_id)[:100]}")
    return "/v1/approvals/" + quote(approval_id, safe="") + (f"/{answer}" if answer else "")


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="pending, approved, denied, used or expired.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
    json_: Json = False,
) -> None:
    """List approvals, newest first (a non-admin sees only their agents')."""
    params = {"limit": str(limit)}
    if state is not None:
        params["state"] = state
    with open_client() as client:
        found: list[dict[str, Any]] = _call(client, "GET", "/v1/approvals", params=params)[
            "approvals"
        ]
    if json_:
        output.emit({"approvals": found})
    else:
        _table(found)


@app.command()
def show(approval_id: ApprovalId, json_: Json = False) -> None:
    """Show one approval: agent, chain, tool, the exact arguments, reasons, state, expiry."""
    with open_client() as client:
        approval = _call(client, "GET", _path(approval_id))
    _show(approval, json_)


@app.command()
def approve(approval_id: ApprovalId, reason: Reason = "", json_: Json = False) -> None:
    """Approve a pending approval: the held call may run once, until it expires."""
    _answer(approval_id, "approve", reason, json_)


@app.command()
def deny(approval_id: ApprovalId, reason: Reason = "", json_: Json = False) -> None:
    """Deny a pending approval (the call stays refused)."""
    _answer(approval_id, "deny", reason, json_)


def _answer(approval_id: str, answer: str, reason: str, as_json: bool) -> None:
    with open_client() as client:
        approval = _call(client, "POST", _path(approval_id, answer), json={"reason": reason})
    _show(approval, as_json)


# ---- what people see -------------------------------------------------------------------


def _table(approvals: list[dict[str, Any]]) -> None:
    if not approvals:
        output.console.print("no approvals")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATE", "AGENT", "TOOL", "APPROVER", "REQUESTED", "EXPIRES"):
        table.add_column(column)
    for approval in approvals:
        table.add_row(
            output.cell(approval["id"]),
            output.cell(approval["state"], _STATE_STYLE.get(approval["state"], "")),
            output.cell(str(approval["agent"]).rsplit("/", 1)[-1]),
            output.cell(approval["resource"]),
            output.cell(approval["approver"]),
            output.cell(output.short_time(approval["requested_at"])),
            output.cell(output.short_time(approval["expires_at"])),
        )
    output.console.print(table)


def _show(approval: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.emit(approval)
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    arguments = approval.get("arguments", approval["redacted_arguments"])
    rows = [
        ("id", approval["id"]),
        ("state", approval["state"]),
        ("agent", approval["agent"]),
        ("owner", approval["owner"] or "(unowned)"),
        ("chain", " → ".join(approval["chain"])),
        ("action", approval["action"]),
        ("tool", approval["resource"]),
        ("arguments", json.dumps(arguments, sort_keys=True, ensure_ascii=False)),
        ("digest", approval["digest"]),
        ("reasons", "; ".join(approval["reasons"])),
        ("approver", approval["approver"]),
        ("requested", output.short_time(approval["requested_at"])),
        ("expires", output.short_time(approval["expires_at"])),
    ]
    if approval["decided_by"]:
        rows.append(
            ("by", f"{approval['decided_by']} at {output.short_time(approval['decided_at'])}")
        )
    if approval["decision_reason"]:
        rows.append(("reason", approval["decision_reason"]))
    if approval["used_at"]:
        rows.append(("used", output.short_time(approval["used_at"])))
    for key, value in rows:
        table.add_row(output.cell(key), output.cell(value))
    output.console.print(table)
