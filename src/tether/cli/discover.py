"""``tether discover ...``: find the agents that already run, and reconcile them with the
registry."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tether.cli import output
from tether.cli.context import open_client, settings
from tether.cli.options import Json
from tether.discover.key import home_key
from tether.errors import InvalidRequest

__all__ = ["app"]

app = typer.Typer(help="Discover shadow agents and reconcile them with the registry.")


@app.command()
def scan(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or directories to scan.")
    ] = None,
    import_: Annotated[
        bool,
        typer.Option("--import", help="Register shadow agents (unowned, suspended) to be adopted."),
    ] = False,
    user: Annotated[
        bool, typer.Option("--user", help="Also scan this user's MCP client configurations.")
    ] = False,
    format_: Annotated[
        str, typer.Option("--format", help="table, json or sarif (on stdout).")
    ] = "table",
    json_: Json = False,
) -> None:
    """Scan PATHS (read-only, offline) for MCP servers in client configs, agent
    credentials in files, agent code, Kubernetes workloads, CI jobs and cloud roles that
    run agents; record the findings as registered, shadow or stale."""
    from tether.core import VERSION
    from tether.discover.sarif import to_sarif
    from tether.discover.scan import run_scan

    if json_:
        format_ = "json"
    if format_ not in ("table", "json", "sarif"):
        raise InvalidRequest(f"unknown format {format_!r}: table, json or sarif")
    targets = list(paths or [])
    if user:
        from tether.discover.mcp_configs import user_locations

        targets += [p for p in user_locations(Path.home()) if p.exists()]
    if not targets:
        raise InvalidRequest("give at least one path to scan (or --user)")
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        raise InvalidRequest(f"no such file or directory: {', '.join(missing)}")
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        TimeElapsedColumn(),
        console=output.stderr,
        transient=True,
        disable=format_ != "table" and not output.stderr.is_terminal,
    ) as progress:
        task = progress.add_task("scan", total=None, current="")

        def advance(file: Any) -> None:
            progress.update(task, advance=1, current=file.relpath[-60:])

        result = run_scan(targets, progress=advance, key=_fingerprint_key())
    body = {
        "roots": [str(r) for r in result.roots],
        "findings": result.to_dict()["findings"],
        "import_shadow": import_,
    }
    with open_client() as client:
        done = client.record_scan(body)
    if format_ == "json":
        output.emit({**done, "files": result.files_seen, "warnings": result.warnings.to_dict()})
    elif format_ == "sarif":
        print(json.dumps(to_sarif(done["findings"], version=VERSION), indent=2))
    else:
        _table(done, result.files_seen, result.warnings.to_dict())


def _fingerprint_key() -> bytes:
    """This installation's discovery key (made in TETHER_HOME on first use); a scan from a
    machine without a home (recording to a server at TETHER_URL) gets a key of its own,
    never an unkeyed hash."""
    home = settings().home
    if home.is_dir():
        return home_key(home)
    output.stderr.print(
        f"note: {home} does not exist: credential fingerprints are keyed for this scan "
        "only (they differ from those of other scans); run from an initialised TETHER_HOME "
        "for stable fingerprints",
        markup=False,
    )
    return secrets.token_bytes(32)


@app.command()
def findings(
    status: Annotated[str | None, typer.Option(help="registered, shadow or stale.")] = None,
    kind: Annotated[str | None, typer.Option(help="e.g. mcp-server, credential.")] = None,
    json_: Json = False,
) -> None:
    """The findings recorded by earlier scans."""
    params = {k: v for k, v in (("status", status), ("kind", kind)) if v is not None}
    with open_client() as client:
        found = client.findings(params)
    if json_:
        output.emit({"findings": found})
    else:
        _table({"findings": found, "imported": [], "counts": None}, None, {})


def _table(done: dict[str, Any], files: int | None, warnings: dict[str, Any]) -> None:
    table = Table("status", "kind", "name", "where", "flags", "credentials", "creator")
    for f in done["findings"]:
        where = f"{f['path']}:{f['line']}" if f.get("line") else str(f["path"])
        creds = ", ".join(f"{c['type']} {c['fingerprint']}" for c in f.get("credentials") or [])
        table.add_row(
            *map(
                output.cell,
                (
                    f["status"],
                    f["kind"],
                    f["name"],
                    where,
                    ", ".join(f.get("flags") or []),
                    creds,
                    f.get("creator") or "-",
                ),
            )
        )
    output.console.print(table)
    counts = done.get("counts")
    if counts is not None:
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        seen = f"{files} files: " if files is not None else ""
        output.console.print(f"{seen}{summary}", markup=False)
    if done.get("imported"):
        output.console.print(
            f"imported {len(done['imported'])} agents (unowned, suspended): "
            "adopt them with `tether agent set-owner NAME EMAIL`",
            markup=False,
        )
    for reason, about in warnings.items():
        output.stderr.print(
            f"skipped {about['count']} ({reason}): {', '.join(about['examples'])}", markup=False
        )
