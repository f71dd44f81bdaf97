"""``tether alerts ...``: the behaviour detector's alerts, and the answers to them."""

from __future__ import annotations

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

app = typer.Typer(
    help="Alerts of the behaviour detector: list, show, acknowledge, resolve, suppress.",
    no_args_is_help=True,
)

AlertId = Annotated[str, typer.Argument(help="The alert's id (alt_...).")]
_SEVERITY_STYLE = {"low": "", "medium": "yellow", "high": "bold red", "critical": "bold red"}
_STATE_STYLE = {"open": "bold", "acknowledged": "yellow", "resolved": "dim", "suppressed": "dim"}


def _call(client: Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = client.request(method, path, **kwargs)
    if not isinstance(answer, dict):
        raise TetherError(f"unexpected answer from Tether for {method} {path}")
    return answer


_ALERT_ID = re.compile(r"alt_[0-9a-f]{16}")


def _path(alert_id: str, move: str = "") -> str:
    if _ALERT_ID.fullmatch(alert_id) is None:  # what no alert can be called: never sent
        raise NotFound(f"no alert {neutralise(alert_id)[:100]}")
    return "/v1/alerts/" + quote(alert_id, safe="") + (f"/{move}" if move else "")


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="open, acknowledged, resolved or suppressed.")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="low, medium, high or critical.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's (ID or name).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
    json_: Json = False,
) -> None:
    """List alerts, newest first (a non-admin sees only their agents')."""
    params = {"limit": str(limit)}
    for key, value in (("state", state), ("severity", severity), ("agent", agent)):
        if value is not None:
            params[key] = value
    with open_client() as client:
        found: list[dict[str, Any]] = _call(client, "GET", "/v1/alerts", params=params)["alerts"]
    if json_:
        output.emit({"alerts": found})
    else:
        _table(found)


@app.command()
def show(alert_id: AlertId, json_: Json = False) -> None:
    """Show one alert, its evidence and what was done about it."""
    with open_client() as client:
        alert = _call(client, "GET", _path(alert_id))
    _show(alert, json_)


def _move(alert_id: str, move: str, reason: str, as_json: bool) -> None:
    with open_client() as client:
        alert = _call(client, "POST", _path(alert_id, move), json={"reason": reason})
    _show(alert, as_json)


@app.command()
def ack(alert_id: AlertId, reason: Reason = "", json_: Json = False) -> None:
    """Acknowledge an alert: someone is looking (the agent's risk stays as it is)."""
    _move(alert_id, "ack", reason, json_)


@app.command()
def resolve(alert_id: AlertId, reason: Reason = "", json_: Json = False) -> None:
    """Resolve an alert (a reason is required; only an admin resolves a high one)."""
    _move(alert_id, "resolve", reason, json_)


@app.command()
def suppress(alert_id: AlertId, reason: Reason = "", json_: Json = False) -> None:
    """Suppress an alert as noise (a reason is required; admins only for a high one)."""
    _move(alert_id, "suppress", reason, json_)


# ---- what people see -------------------------------------------------------------------


def _table(alerts: list[dict[str, Any]]) -> None:
    if not alerts:
        output.console.print("no alerts")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "SEVERITY", "STATE", "DETECTOR", "AGENT", "RAISED", "SUMMARY"):
        table.add_column(column)
    for alert in alerts:
        table.add_row(
            output.cell(alert["id"]),
            output.cell(alert["severity"], _SEVERITY_STYLE.get(alert["severity"], "")),
            output.cell(alert["state"], _STATE_STYLE.get(alert["state"], "")),
            output.cell(alert["detector"]),
            output.cell(str(alert["agent"]).rsplit("/", 1)[-1]),
            output.cell(output.short_time(alert["created_at"])),
            output.cell(alert["summary"]),
        )
    output.console.print(table)


def _show(alert: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.emit(alert)
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    evidence = ", ".join(str(seq) for seq in alert["evidence"]) or "-"
    rows = [
        ("id", alert["id"]),
        ("summary", alert["summary"]),
        ("severity", alert["severity"]),
        ("detector", alert["detector"]),
        ("agent", alert["agent"]),
        ("owner", alert["owner"] or "(unowned)"),
        ("chain", " → ".join(alert["chain"])),
        ("raised", output.short_time(alert["created_at"])),
        ("evidence", f"{evidence}  (tether audit explain SEQ)"),
        ("state", alert["state"]),
    ]
    if alert["state_by"]:
        rows.append(("by", f"{alert['state_by']} at {output.short_time(alert['state_at'])}"))
    if alert["state_reason"]:
        rows.append(("reason", alert["state_reason"]))
    rows.extend(
        (f"action {a['action']}", f"{a['outcome']} at {output.short_time(a['at'])} {a['detail']}")
        for a in alert["actions"]
    )
    for key, value in rows:
        table.add_row(output.cell(key), output.cell(value))
    output.console.print(table)
