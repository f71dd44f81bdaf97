"""The rows of ``budget_usage``: (grant, ``METRIC/SECONDS``, window start) -> used.

A call is taken with one conditional upsert that locks its row until the transaction
ends, so two processes never both take the last one; the statements are in the driver's
own SQL, prepared once per dialect (a charge is on the path of every call a limited grant
allows: nothing is built or compiled per call), the same text on PostgreSQL and SQLite
(3.35+: upserts with ``RETURNING``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Connection, delete, select, tuple_
from sqlalchemy.engine import Dialect

from tether.budgets.charges import Charge, metric_key
from tether.limits import Limit
from tether.store import Store, budget_usage

__all__ = ["KEEP", "Pending", "add", "give_back", "prune", "take", "used"]

KEEP = timedelta(days=1)  # windows that ended longer ago than this are pruned

Pending = Mapping[tuple[str, str, datetime], int]  # (grant, metric key, window) -> bytes


def take(conn: Connection, grant_id: str, limit: Limit, start: datetime) -> int | None:
    """Take one call of ``limit`` in the window at ``start``: the count with it, or
    ``None`` when none is left (nothing then changes)."""
    sql = _Sql.of(conn)
    key = {"g": grant_id, "m": metric_key(limit), "w": sql.at(start)}
    found = conn.exec_driver_sql(sql.take, key | {"amount": limit.amount}).scalar()
    return None if found is None else int(found)


def used(conn: Connection, grant_id: str, limit: Limit, start: datetime) -> int:
    sql = _Sql.of(conn)
    key = {"g": grant_id, "m": metric_key(limit), "w": sql.at(start)}
    return int(conn.exec_driver_sql(sql.used, key).scalar() or 0)


def give_back(conn: Connection, charge: Charge) -> None:
    """Undo a call taken earlier in this transaction (its row is still locked by it)."""
    if charge.limit.metric != "calls":
        return  # a bytes limit is only read when deciding
    sql = _Sql.of(conn)
    key = {"g": charge.grant, "m": metric_key(charge.limit), "w": sql.at(charge.start)}
    conn.exec_driver_sql(sql.give_back, key)


def add(conn: Connection, pending: Pending) -> None:
    """Add result bytes to their windows, rows in one order (no deadlock between two)."""
    sql = _Sql.of(conn)
    for (grant_id, key, start), size in sorted(pending.items()):
        conn.exec_driver_sql(sql.add, {"g": grant_id, "m": key, "w": sql.at(start), "n": size})


def prune(store: Store, now: datetime, batch: int) -> int:
    """Delete up to ``batch`` rows of windows that ended more than :data:`KEEP` before
    ``now`` (bounded work: the next prune takes the rest). Returns how many."""
    with store.read() as conn:
        keys = list(conn.execute(select(budget_usage.c.metric).distinct()).scalars())
    columns = (budget_usage.c.grant_id, budget_usage.c.metric, budget_usage.c.window_start)
    deleted = 0
    for key in keys:
        _, _, seconds = key.partition("/")
        if not seconds.isdigit():
            continue
        cutoff = now - KEEP - timedelta(seconds=int(seconds))
        old = (
            select(*columns)
            .where(budget_usage.c.metric == key, budget_usage.c.window_start < cutoff)
            .limit(batch - deleted)
        )
        with store.write() as conn:
            result = conn.execute(delete(budget_usage).where(tuple_(*columns).in_(old)))
            deleted += max(result.rowcount or 0, 0)
        if deleted >= batch:
            break
    return deleted


class _Sql:
    _INSERT = "INSERT INTO budget_usage (grant_id, metric, window_start, used) "
    _CONFLICT = " ON CONFLICT (grant_id, metric, window_start) DO UPDATE SET used = "
    _TAKE = (
        _INSERT + "VALUES (:g, :m, :w, 1)" + _CONFLICT + "budget_usage.used + 1 "
        "WHERE budget_usage.used < :amount RETURNING used"
    )
    _ADD = _INSERT + "VALUES (:g, :m, :w, :n)" + _CONFLICT + "budget_usage.used + excluded.used"
    _USED = (
        "SELECT used FROM budget_usage WHERE grant_id = :g AND metric = :m AND window_start = :w"
    )
    _GIVE_BACK = (
        "UPDATE budget_usage SET used = used - 1 "
        "WHERE grant_id = :g AND metric = :m AND window_start = :w"
    )
    _made: ClassVar[dict[str, _Sql]] = {}

    def __init__(self, dialect: Dialect) -> None:
        pg = dialect.name == "postgresql"

        def native(sql: str) -> str:  # psycopg takes %(name)s, sqlite3 :name
            return re.sub(r":(\w+)", r"%(\1)s", sql) if pg else sql

        self.take, self.add, self.used, self.give_back = map(
            native, (self._TAKE, self._ADD, self._USED, self._GIVE_BACK)
        )
        column = budget_usage.c.window_start.type
        convert = column.dialect_impl(dialect).bind_processor(dialect)  # as SQLAlchemy stores it
        self.at: Callable[[datetime], Any] = convert if convert is not None else (lambda v: v)

    @classmethod
    def of(cls, conn: Connection) -> _Sql:
        made = cls._made.get(conn.dialect.name)
        if made is None:
            made = cls._made[conn.dialect.name] = cls(conn.dialect)
        return made
