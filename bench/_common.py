"""What every benchmark shares: the result row, the timer, the table and the command line.

Each ``bench/NAME.py`` runs alone (``python bench/NAME.py [--quick] [--json]``); with
``--json`` stdout holds exactly ``{"bench": NAME, "results": [...]}`` and all chatter goes to
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tether import Settings, Tether

__all__ = [
    "TIMES",
    "Make",
    "Op",
    "Result",
    "best_of",
    "expect",
    "in_threads",
    "main",
    "number",
    "opened",
    "postgres_schema",
    "rate",
    "result",
    "stop",
    "table",
]

TIMES = "\u00d7"  # the multiplication sign, for ratios
Op = Callable[[int], object]


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float


def result(name: str, value: float, baseline: float, unit: str) -> Result:
    """A row whose ratio is ``value / baseline``."""
    return Result(name, round(value, 1), unit, round(baseline, 1), round(value / baseline, 3))


def rate(n: int, op: Op) -> float:
    """Operations per second for ``op(0) .. op(n-1)``."""
    start = time.perf_counter()
    for i in range(n):
        op(i)
    return n / (time.perf_counter() - start)


Make = Callable[[str, int], Op]  # (tag, n) -> the operation to time, prepared for n calls


def in_threads(op: Callable[[int, int], object], threads: int, seconds: float) -> tuple[int, float]:
    """``threads`` threads each calling ``op(thread, n)`` (n: its own call count) in a loop
    for ``seconds``, started together: (calls made, seconds elapsed)."""
    counts = [0] * threads
    stop = threading.Event()
    ready = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        ready.wait()
        while not stop.is_set():
            op(k, counts[k])
            counts[k] += 1

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts), time.perf_counter() - start


def best_of(
    makes: dict[str, tuple[Make, int]],
    seconds: float,
    *,
    rounds: int = 3,
    warm_seconds: float = 0.03,
    warm_calls: int = 5000,
) -> dict[str, float]:
    """Warm each measure up (``name: (make, cap on calls per round)``) and size its rounds
    to ``seconds``; then ``rounds`` rounds in which the measures take turns. The best rate
    of each measure."""
    sizes: dict[str, int] = {}
    for name, (make, cap) in makes.items():
        limit = min(cap, warm_calls)
        op = make("warm", limit)
        calls, start = 0, time.perf_counter()
        while calls < limit and time.perf_counter() - start < warm_seconds:
            op(calls)
            calls += 1
        per_call = (time.perf_counter() - start) / calls
        sizes[name] = max(10, min(cap, int(seconds / per_call)))
    best = dict.fromkeys(makes, 0.0)
    for r in range(rounds):
        for name, (make, _) in makes.items():
            best[name] = max(best[name], rate(sizes[name], make(f"r{r}", sizes[name])))
    return best


@contextlib.contextmanager
def opened(home: Path, **settings: Any) -> Iterator[Tether]:
    """A fresh Tether on SQLite in ``home``, closed afterwards."""
    tether, _ = Tether.init(Settings.load(home, **settings))
    with tether:
        yield tether


def stop(proc: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """End a process a bench started: SIGTERM, then SIGKILL after ``wait`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def expect(condition: bool, problem: str) -> None:
    """Stop a benchmark whose set-up does not do what it claims."""
    if not condition:
        raise RuntimeError(f"bench setup is wrong: {problem}")


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def table(results: list[Result], baseline: str, width: int = 20) -> str:
    column = max(16, max((len(f"{number(r.value)} {r.unit}") for r in results), default=0) + 2)
    lines = [f"{'measure':<{width}}{'Tether':>{column}}{baseline:>{column}}{'ratio':>9}"]
    for r in results:
        ours, bare = f"{number(r.value)} {r.unit}", f"{number(r.baseline)} {r.unit}"
        lines.append(f"{r.name:<{width}}{ours:>{column}}{bare:>{column}}{r.ratio:>8.2f}{TIMES}")
    return "\n".join(lines)


def main(
    name: str,
    doc: str,
    run: Callable[[bool], list[Result]],
    footer: Callable[[list[Result]], list[str]],
    *,
    baseline: str,
    width: int = 20,
) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: done within a minute")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the document alone
            results = run(args.quick)
        print(json.dumps({"bench": name, "results": [asdict(r) for r in results]}))
        return
    results = run(args.quick)
    print(table(results, baseline, width))
    for line in footer(results):
        print(line)


PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str | None]:
    """A fresh ``bench_<hex>`` schema's URL (dropped afterwards), or None if unreachable."""
    base = os.environ.get("TETHER_TEST_POSTGRES_URL", PG_DEFAULT)
    schema = f"bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.SQLAlchemyError as exc:
        print(
            f"note: PostgreSQL unreachable at {base} ({type(exc).__name__}); reporting SQLite only",
            file=sys.stderr,
        )
        admin.dispose()
        yield None
        return
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
