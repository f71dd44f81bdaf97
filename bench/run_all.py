"""Run every benchmark in bench/ and write their figures into README.md.

Each ``bench/*.py`` (except this file, ``_*.py`` and those in ``ALONE``, which run by
themselves) runs as a subprocess with ``--quick --json`` (``--full`` drops ``--quick``)
and prints one JSON document:
``{"bench": ..., "results": [{"name", "value", "unit", "baseline", "ratio"}]}``.
The table replaces the README lines between the bench markers. Exits 1 if any bench fails
(the README is then left alone).

    .venv/bin/python bench/run_all.py [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
README = BENCH.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
TIMES = "\u00d7"  # the multiplication sign, for ratios
Row = dict[str, Any]


# Run alone: scale.py --quick generates 10^6 events and takes longer than this run's
# per-bench limit; its figures are in the README's "At scale" section.
ALONE = frozenset({"scale.py"})


def benches() -> list[Path]:
    here = Path(__file__).resolve()
    return sorted(
        p
        for p in BENCH.glob("*.py")
        if p != here and not p.name.startswith("_") and p.name not in ALONE
    )


def run(path: Path, full: bool) -> list[Row] | None:
    """The bench's results, tagged with its name; None (after saying why) if it failed."""
    args = [sys.executable, str(path), "--json", *([] if full else ["--quick"])]
    print(f"running {path.name} {' '.join(args[2:])}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=3600 if full else 300
        )
    except subprocess.TimeoutExpired:
        print(f"FAILED {path.name}: timed out", file=sys.stderr)
        return None
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        print(f"FAILED {path.name}: exit status {proc.returncode}", file=sys.stderr)
        return None
    try:
        doc = json.loads(proc.stdout)
        rows: list[Row] = [{"bench": str(doc["bench"]), **r} for r in doc["results"]]
    except (ValueError, KeyError, TypeError) as exc:
        print(f"FAILED {path.name}: bad JSON output ({exc!r})", file=sys.stderr)
        return None
    if not rows or not all(map(valid, rows)):
        print(f"FAILED {path.name}: no results, or malformed ones", file=sys.stderr)
        return None
    return rows


def valid(row: Row) -> bool:
    numbers = (row.get("value"), row.get("baseline", 0), row.get("ratio", 0))
    return (
        isinstance(row.get("name"), str)
        and isinstance(row.get("unit"), str)
        and isinstance(numbers[0], int | float)
        and all(n is None or isinstance(n, int | float) for n in numbers[1:])
    )


def number(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    figure = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return f"{figure} {unit}".strip()


def markdown(rows: list[Row], full: bool) -> str:
    lines = [
        "| bench | measure | Tether | baseline | ratio |",
        "|---|---|--:|--:|--:|",
    ]
    for r in rows:
        ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.2f}{TIMES}"
        ours, bare = number(r["value"], r["unit"]), number(r.get("baseline"), r["unit"])
        lines.append(f"| {r['bench']} | {r['name']} | {ours} | {bare} | {ratio} |")
    mode = "full run" if full else "`--quick` run"
    lines.append("")
    lines.append(
        f"_{date.today().isoformat()}, {mode} of `bench/run_all.py`. Figures come from one "
        f"noisy {os.cpu_count() or '?'}-core machine; ratio = Tether ÷ baseline, so below "
        f"1{TIMES} Tether is slower._"
    )
    return "\n".join(lines)


def update_readme(table: str) -> bool:
    """Replace the text between the markers; False if the README or a marker is missing."""
    if not README.is_file():
        return False
    lines = README.read_text(encoding="utf-8").splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    if START not in stripped or END not in stripped:
        return False
    first, last = stripped.index(START), stripped.index(END)
    if last < first:
        return False
    new = [*lines[: first + 1], table + "\n", *lines[last:]]
    README.write_text("".join(new), encoding="utf-8")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full runs instead of --quick")
    args = parser.parse_args()
    rows: list[Row] = []
    failed: list[str] = []
    for path in benches():
        found = run(path, args.full)
        if found is None:
            failed.append(path.name)
        else:
            rows += found
    table = markdown(rows, args.full)
    print(table)
    if failed:
        print(f"\nfailed: {', '.join(failed)}; README.md not updated", file=sys.stderr)
        return 1
    if update_readme(table):
        print(f"\nupdated {README}")
    else:
        print(f"\n{README} or its {START} / {END} lines are missing: table not written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
