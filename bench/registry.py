"""Registry throughput: registrations/s and lookups/s through Tether vs bare SQLAlchemy Core.

Runs on a SQLite file (WAL) and on a fresh PostgreSQL schema (``TETHER_TEST_POSTGRES_URL``,
skipped with a note on stderr when unreachable). Each figure is the best of three rounds;
ratio = Tether ÷ baseline, so below 1 means Tether is slower than the bare query.

    .venv/bin/python bench/registry.py [--quick] [--json]
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from _common import TIMES, Op, Result, main, postgres_schema, rate, result

from tether import AgentSpec, Caller, Settings, Tether, generate_key_pair
from tether.core import utcnow
from tether.store import agents

ADMIN = Caller.admin()
OWNER = "bench@example.com"
ROUNDS = 3
WARMUP = 20


def best_of(n: int, ours: Callable[[str], Op], bare: Callable[[str], Op]) -> tuple[float, float]:
    """Warm both up, then alternate rounds; the best rate of each. ``ours(tag)`` and
    ``bare(tag)`` do their (untimed) preparation and return the operation to time."""
    rate(WARMUP, ours("warm-t"))
    rate(WARMUP, bare("warm-b"))
    best = (0.0, 0.0)
    for r in range(ROUNDS):
        mine = rate(n, ours(f"t{r}"))
        theirs = rate(n, bare(f"b{r}"))
        best = (max(best[0], mine), max(best[1], theirs))
    return best


def public_keys(n: int) -> list[str]:
    return [generate_key_pair().public_key for _ in range(n)]


def bench_store(label: str, settings: Settings, n_reg: int, n_get: int) -> list[Result]:
    tether, _ = Tether.init(settings)
    with tether:
        engine = tether.store.engine
        registry = tether.registry
        lifetime = settings.agent_lifetime_default

        def register(tag: str) -> Op:
            keys = public_keys(max(n_reg, WARMUP))

            def op(i: int) -> None:
                spec = AgentSpec(name=f"{tag}-{i}", owner=OWNER, public_key=keys[i])
                registry.register(ADMIN, spec)

            return op

        def insert(tag: str) -> Op:
            keys = public_keys(max(n_reg, WARMUP))

            def op(i: int) -> None:
                now = utcnow()
                row = _row(f"{tag}-{i}", keys[i], now, lifetime)
                with engine.begin() as conn:
                    conn.execute(sa.insert(agents).values(**row))

            return op

        reg = best_of(n_reg, register, insert)
        names = [f"t0-{i}" for i in range(n_reg)]

        def get(_tag: str) -> Op:
            def op(i: int) -> None:
                registry.get(ADMIN, names[i % len(names)])

            return op

        def select(_tag: str) -> Op:
            def op(i: int) -> None:
                query = sa.select(agents).where(agents.c.name == names[i % len(names)])
                with engine.connect() as conn:
                    conn.execute(query).first()

            return op

        look = best_of(n_get, get, select)
    return [_result(f"{label} register", reg), _result(f"{label} lookup", look)]


def _row(name: str, key: str, now: datetime, lifetime: timedelta) -> dict[str, object]:
    """The row ``Registry.register`` writes for a plain admin registration."""
    return {
        "name": name,
        "kind": "other",
        "owner": OWNER,
        "purpose": "",
        "parent": None,
        "labels": {},
        "created_by": ADMIN.subject,
        "created_at": now,
        "expires_at": now + lifetime,
        "state": "active",
        "state_changed_at": now,
        "unowned_since": None,
        "public_key": key,
        "key_rotated_at": now,
    }


def _result(name: str, rates: tuple[float, float]) -> Result:
    return result(name, rates[0], rates[1], "ops/s")


def run(quick: bool) -> list[Result]:
    n_reg, n_get = (300, 2000) if quick else (3000, 20000)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        home = Path(tmp)
        results += bench_store("sqlite", Settings.load(home / "sqlite"), n_reg, n_get)
        with postgres_schema() as url:
            if url is not None:
                settings = Settings.load(home / "pg", db_url=url)
                results += bench_store("postgresql", settings, n_reg, n_get)
    return results


def footer(_results: list[Result]) -> list[str]:
    return [f"ratio = Tether ÷ baseline (bare SQLAlchemy Core); below 1{TIMES} Tether is slower"]


if __name__ == "__main__":
    main("registry", __doc__ or "", run, footer, baseline="baseline")
