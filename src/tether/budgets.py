"""Budgets: how much a grant with limits (:mod:`tether.limits`) still allows, counted in
the store so that every process sharing it counts into the same windows.

Windows are fixed and aligned on the Unix epoch: a limit of ``calls=100/1m`` counts into
the window that starts at ``floor(now / 60s) * 60s``, whichever process decides. A row of
``budget_usage`` is (grant, ``METRIC/SECONDS``, window start) -> used; the metric column
names the window's length too, since a grant may limit one metric over several windows
whose starts coincide (``calls=100/1m`` and ``calls=1000/1h`` at the top of the hour).

What counts:

- ``calls``: each allowed decision that a limited grant made possible counts 1, when it
  is decided. For each identity of the chain, the grants of that identity that allowed
  the decision are looked at: if one of them has no limits, the identity is unlimited;
  otherwise the first of its limited grants (by ID) with budget left in every one of its
  limits is charged, and when none has any the decision becomes a deny naming the grant,
  the limit, what is left (0) and when the window resets.
- ``bytes``: the size of the results of calls the grant allowed, counted when the result
  comes back (:meth:`Budgets.spend`). A call is refused while a bytes window's use has
  reached its amount; the call that crosses the limit completes (its size is not known
  before it returns).

A charge is one conditional upsert (``INSERT ... ON CONFLICT DO UPDATE ... WHERE used + 1
<= amount RETURNING used``), so two processes never both take the last call; it runs in
the transaction that records the decision, so a decision and its charge commit together or
neither does. Any error on the way is a deny (fail closed). A decision that no limited
grant allowed costs nothing here: which grants have limits is known per state epoch.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Connection, delete, select, tuple_
from sqlalchemy.engine import Dialect

from tether.audit.record import Entry
from tether.errors import TetherError
from tether.grants import Grant, Grants
from tether.limits import Limit, parse_limit
from tether.policy.decision import Decision, canonical
from tether.services import Services
from tether.store import budget_usage

__all__ = ["Budgets", "Charge", "Plan", "window_start"]

log = logging.getLogger("tether.budgets")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEEP = timedelta(days=1)  # windows that ended longer ago than this are pruned
_PRUNE_EVERY = timedelta(hours=1)
_PRUNE_BATCH = 1000  # rows deleted per statement, so a prune never holds the table long


def window_start(now: datetime, limit: Limit) -> datetime:
    """The start of the window of ``limit`` that holds ``now``: aligned on the Unix epoch."""
    seconds = limit.seconds
    elapsed = math.floor((now - _EPOCH).total_seconds())
    return _EPOCH + timedelta(seconds=elapsed - elapsed % seconds)


def _key(limit: Limit) -> str:
    """The ``metric`` column of a limit's rows: the metric and its window in seconds."""
    return f"{limit.metric}/{limit.seconds}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Charge:
    """One limit of a grant as a decision found it: ``used`` counts this call when it was
    charged; a limit found exhausted has ``used >= limit.amount``."""

    grant: str
    limit: Limit
    used: int
    start: datetime

    @property
    def left(self) -> int:
        return max(self.limit.amount - self.used, 0)

    @property
    def resets_at(self) -> datetime:
        return self.start + self.limit.window

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant": self.grant,
            "limit": str(self.limit),
            "used": self.used,
            "left": self.left,
            "window_start": _iso(self.start),
            "resets_at": _iso(self.resets_at),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What a decision must be charged: for each limited identity of its chain, that
    identity's limited grants that allowed it, by ID. ``error`` says why it cannot be
    charged at all (then it is a deny)."""

    groups: tuple[tuple[Grant, ...], ...]
    error: str = ""


class Budgets:
    """Charges decisions and results to the limits of the grants that allowed them."""

    def __init__(self, services: Services, grants: Grants, *, delay: float = 0.05) -> None:
        self._store = services.store
        self._events = services.events
        self._clock = services.clock
        self._grants = grants
        self._delay = delay
        self._known: tuple[int, dict[str, Grant]] | None = None  # (epoch, live grants by ID)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, datetime], int] = {}  # bytes not written yet
        self._timer: threading.Timer | None = None
        self._pruned: datetime | None = None

    # ---- decisions --------------------------------------------------------------------

    def plan(self, d: Decision) -> Plan | None:
        """What ``d`` must be charged, or ``None`` when no limited grant made it possible
        (no store access then, but once per state epoch to learn which grants have
        limits). Never raises: a failure is a plan whose ``error`` denies."""
        if not d.allowed or not d.grants:
            return None
        try:
            known = self._live(d.epoch)
        except TetherError as exc:
            return Plan((), f"the grants' budgets could not be read, denied: {exc.description}")
        limited: dict[str, list[Grant]] = {}
        unlimited: set[str] = set()
        for grant_id in d.grants:
            grant = known.get(grant_id)
            if grant is None:
                return Plan((), f"grant {grant_id} is no longer live, denied")
            if grant.limits:
                limited.setdefault(grant.principal.key, []).append(grant)
            else:
                unlimited.add(grant.principal.key)
        groups = tuple(
            tuple(sorted(found, key=lambda g: g.id))
            for principal, found in limited.items()
            if principal not in unlimited
        )
        return Plan(groups) if groups else None

    def _live(self, epoch: int) -> dict[str, Grant]:
        known = self._known
        if known is None or known[0] != epoch:
            known = self._known = (epoch, {g.id: g for g in self._grants.live()})
        return known[1]

    def charge(
        self,
        d: Decision,
        plan: Plan,
        entry_of: Callable[[Decision], Entry] | None = None,
    ) -> Decision:
        """Charge ``d`` as ``plan`` says and, with ``entry_of``, record it in the same
        transaction: the answer is the decision as recorded (``seq`` set), an allow that
        says what is left or a deny that says when the budget resets. When the store
        fails, the answer is a deny that was not recorded (``seq`` is ``None``): the
        caller records it. Without ``entry_of`` the charge commits on its own and the
        caller records the answer."""
        if plan.error:
            return _denied(d, plan.error)
        now = self._clock()
        pending = self._drain()
        try:
            with self._store.write() as conn:
                self._add_bytes(conn, pending)
                charges, short = self._take(conn, plan, now)
                final = _over(d, short, now) if short else _allowed(d, charges)
                seq = self._events.insert(conn, entry_of(final))[0] if entry_of else None
        except TetherError as exc:
            self._restore(pending)
            why = f"the budget could not be charged, denied: {exc.description}"
            return _denied(d, why)
        except Exception as exc:  # fail closed on anything else too, loudly
            self._restore(pending)
            log.exception("budget charge failed")
            return _denied(d, f"the budget could not be charged, denied: {type(exc).__name__}")
        self._maybe_prune(now)
        return replace(final, seq=seq) if seq is not None else final

    def _take(
        self, conn: Connection, plan: Plan, now: datetime
    ) -> tuple[list[Charge], list[Charge]]:
        """Charge one grant of each group: ``(charges, [])``, or ``([], short)`` when a
        group has no grant with budget left (nothing is then charged), ``short`` naming,
        for each of its grants, the exhausted limit that resets last."""
        charges: list[Charge] = []
        for group in plan.groups:
            short: list[Charge] = []
            for grant in group:
                taken, over = self._try(conn, grant, now)
                if not over:
                    charges.extend(taken)
                    break
                short.append(max(over, key=lambda c: c.resets_at))
            else:
                for charge in charges:  # an earlier identity's charge is given back
                    self._give_back(conn, charge)
                return [], short
        return charges, []

    def _try(
        self, conn: Connection, grant: Grant, now: datetime
    ) -> tuple[list[Charge], list[Charge]]:
        """Charge every limit of ``grant``: ``(charges, [])``, or ``([], exhausted)`` with
        the limits that had nothing left (and what was charged of the others given back)."""
        taken: list[Charge] = []
        over: list[Charge] = []
        for limit in grant.limits:
            start = window_start(now, limit)
            if limit.metric == "calls":
                used = self._increment(conn, grant.id, limit, start)
                if used is None:
                    over.append(Charge(grant.id, limit, limit.amount, start))
                else:
                    taken.append(Charge(grant.id, limit, used, start))
            else:  # bytes: refused once used; counted when results come back
                used = self._used(conn, grant.id, limit, start)
                charge = Charge(grant.id, limit, used, start)
                (over if used >= limit.amount else taken).append(charge)
        if over:
            for charge in taken:
                self._give_back(conn, charge)
            return [], over
        return taken, []

    @staticmethod
    def _increment(conn: Connection, grant_id: str, limit: Limit, start: datetime) -> int | None:
        """Take one call of ``limit`` in its window; ``None`` when none is left. Atomic
        across processes: the row is locked by the upsert until the transaction ends."""
        sql = _Sql.of(conn)
        key = {"g": grant_id, "m": _key(limit), "w": sql.at(start)}
        used = conn.exec_driver_sql(sql.take, key | {"amount": limit.amount}).scalar()
        return None if used is None else int(used)

    @staticmethod
    def _used(conn: Connection, grant_id: str, limit: Limit, start: datetime) -> int:
        sql = _Sql.of(conn)
        key = {"g": grant_id, "m": _key(limit), "w": sql.at(start)}
        return int(conn.exec_driver_sql(sql.used, key).scalar() or 0)

    @staticmethod
    def _give_back(conn: Connection, charge: Charge) -> None:
        if charge.limit.metric != "calls":
            return  # a bytes limit was only read
        sql = _Sql.of(conn)
        key = {"g": charge.grant, "m": _key(charge.limit), "w": sql.at(charge.start)}
        conn.exec_driver_sql(sql.give_back, key)

    # ---- results ----------------------------------------------------------------------

    def spend(self, d: Decision, size: int) -> None:
        """Count ``size`` bytes of a result against the bytes limits of the grants ``d``
        was charged to, in the window that holds now. Written with the next charge of
        this process or on its own within ``delay`` seconds (a result is never held up
        by the store); what cannot be written yet is kept and tried again."""
        if not d.budget or size <= 0:
            return
        now = self._clock()
        charged = [(str(c["grant"]), _limit(str(c["limit"]))) for c in json.loads(d.budget)]
        with self._lock:
            for grant_id, limit in charged:
                if limit.metric == "bytes":
                    key = (grant_id, _key(limit), window_start(now, limit))
                    self._pending[key] = self._pending.get(key, 0) + size
        self._arm()

    def flush(self) -> None:
        """Write the bytes counted so far now (raises :class:`TetherError` if that fails,
        keeping them for the next try)."""
        pending = self._drain()
        if not pending:
            return
        try:
            with self._store.write() as conn:
                self._add_bytes(conn, pending)
        except BaseException:
            self._restore(pending)
            raise

    def _drain(self) -> dict[tuple[str, str, datetime], int]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def _restore(self, pending: dict[tuple[str, str, datetime], int]) -> None:
        if not pending:
            return
        with self._lock:
            for key, size in pending.items():
                self._pending[key] = self._pending.get(key, 0) + size
        self._arm()

    @staticmethod
    def _add_bytes(conn: Connection, pending: dict[tuple[str, str, datetime], int]) -> None:
        sql = _Sql.of(conn)
        for (grant_id, key, start), size in sorted(pending.items()):  # one lock order
            conn.exec_driver_sql(sql.add, {"g": grant_id, "m": key, "w": sql.at(start), "n": size})

    def _arm(self) -> None:
        with self._lock:
            if self._timer is not None or not self._pending:
                return
            timer = self._timer = threading.Timer(self._delay, self._due)
            timer.daemon = True
            timer.name = "tether-budget-bytes"
        timer.start()

    def _due(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        except TetherError as exc:  # kept, and tried again
            log.error("result bytes could not be counted yet: %s", exc.description)

    def close(self) -> None:
        """Write what is pending (logged, not raised, if it cannot be)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.flush()
        except TetherError as exc:
            log.error("result bytes were not counted at close: %s", exc.description)

    # ---- reading and pruning ----------------------------------------------------------

    def usage(self, grant: Grant) -> list[Charge]:
        """What each limit of ``grant`` has used in its current window."""
        now = self._clock()
        with self._store.read() as conn:
            return [
                Charge(grant.id, limit, self._used(conn, grant.id, limit, start), start)
                for limit in grant.limits
                for start in (window_start(now, limit),)
            ]

    def _maybe_prune(self, now: datetime) -> None:
        """At most once an hour per process, in the background."""
        with self._lock:
            if self._pruned is not None and now - self._pruned < _PRUNE_EVERY:
                return
            self._pruned = now
        thread = threading.Thread(target=self._prune_quietly, args=(now,), daemon=True)
        thread.name = "tether-budget-prune"
        thread.start()

    def _prune_quietly(self, now: datetime) -> None:
        try:
            self.prune(now)
        except TetherError as exc:
            log.error("old budget windows could not be pruned: %s", exc.description)

    def prune(self, now: datetime | None = None, batch: int = _PRUNE_BATCH) -> int:
        """Delete up to ``batch`` rows of windows that ended more than a day before
        ``now`` (bounded work; the next prune takes the rest). Returns how many."""
        now = now or self._clock()
        with self._store.read() as conn:
            keys = list(conn.execute(select(budget_usage.c.metric).distinct()).scalars())
        deleted = 0
        for key in keys:
            seconds = _seconds(key)
            if seconds is None:
                continue
            cutoff = now - _KEEP - timedelta(seconds=seconds)
            columns = (budget_usage.c.grant_id, budget_usage.c.metric, budget_usage.c.window_start)
            old = (
                select(*columns)
                .where(budget_usage.c.metric == key, budget_usage.c.window_start < cutoff)
                .limit(batch - deleted)
            )
            with self._store.write() as conn:
                result = conn.execute(delete(budget_usage).where(tuple_(*columns).in_(old)))
                deleted += max(result.rowcount or 0, 0)
            if deleted >= batch:
                break
        return deleted


class _Sql:
    """A charge's statements in the driver's own SQL (a charge is on the path of every
    call a limited grant allows: nothing is built or compiled per call). The text is the
    same on PostgreSQL and SQLite (3.35+: upserts with ``RETURNING``)."""

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


@functools.lru_cache(maxsize=256)
def _limit(text: str) -> Limit:
    """A limit as a decision's budget names it (``str(Limit)``), parsed once."""
    return parse_limit(text)


def _seconds(key: str) -> int | None:
    _, _, seconds = key.partition("/")
    return int(seconds) if seconds.isdigit() else None


def _denied(d: Decision, why: str) -> Decision:
    return replace(d, allowed=False, reasons=(why,), grants=(), cached=False, seq=None)


def _allowed(d: Decision, charges: Sequence[Charge]) -> Decision:
    said = tuple(
        f"budget of grant {c.grant}: {c.limit} has {c.left} left until {_iso(c.resets_at)}"
        for c in charges
    )
    return replace(d, reasons=d.reasons + said, budget=_json(charges))


def _over(d: Decision, short: Sequence[Charge], now: datetime) -> Decision:
    """The deny of a call no grant of an identity has budget left for: per grant, the
    limit, what is left (0) and when it resets, as a time and in seconds."""
    reasons = tuple(
        f"budget exhausted: grant {c.grant} allows {c.limit}; 0 left until "
        f"{_iso(c.resets_at)} (in {math.ceil((c.resets_at - now).total_seconds())}s)"
        for c in short
    )
    return replace(d, allowed=False, reasons=reasons, grants=(), cached=False, budget=_json(short))


def _json(charges: Iterable[Charge]) -> str:
    return canonical([c.to_dict() for c in charges])
