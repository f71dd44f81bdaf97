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

:mod:`tether.budgets.charges` holds the windows and what a charge makes of a decision,
:mod:`tether.budgets.usage` the statements on ``budget_usage``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from tether.audit.record import Effect, Entry
from tether.budgets import usage
from tether.budgets.charges import (
    Charge,
    allowed,
    denied,
    exhausted,
    limit_named,
    metric_key,
    window_start,
)
from tether.errors import TetherError
from tether.grants import Grant, Grants
from tether.policy.decision import Decision
from tether.services import Services

__all__ = ["Budgets", "Charge", "Plan", "window_start"]

log = logging.getLogger("tether.budgets")

_PRUNE_EVERY = timedelta(hours=1)
_PRUNE_BATCH = 1000  # rows deleted per statement, so a prune never holds the table long


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
        # held from taking the pending bytes until they are committed (a flush, a charge):
        # a charge never reads the usage while bytes it cannot see are being written
        self._writing = threading.Lock()
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
        then: Callable[[Decision], Effect | None] | None = None,
    ) -> Decision:
        """Charge ``d`` as ``plan`` says and, with ``entry_of``, record it in the same
        transaction (and ``then(final)``'s effect, :meth:`tether.core.Tether.decide_all`):
        the answer is the decision as recorded (``seq`` set), an allow that
        says what is left or a deny that says when the budget resets. When the store
        fails, the answer is a deny that was not recorded (``seq`` is ``None``): the
        caller records it. Without ``entry_of`` the charge commits on its own and the
        caller records the answer."""
        if plan.error:
            return denied(d, plan.error)
        now = self._clock()
        with self._writing:
            return self._charged(d, plan, now, entry_of, then)

    def _charged(
        self,
        d: Decision,
        plan: Plan,
        now: datetime,
        entry_of: Callable[[Decision], Entry] | None,
        then: Callable[[Decision], Effect | None] | None,
    ) -> Decision:
        pending = self._drain()
        try:
            with self._store.write() as conn:
                usage.add(conn, pending)
                charges, short = self._take(conn, plan, now)
                final = exhausted(d, short, now) if short else allowed(d, charges)
                seq = self._events.insert(conn, entry_of(final))[0] if entry_of else None
                effect = then(final) if then is not None and seq is not None else None
                if effect is not None and seq is not None:  # what the decision sets, with it
                    effect(conn, seq)
        except TetherError as exc:
            self._restore(pending)
            why = f"the budget could not be charged, denied: {exc.description}"
            return denied(d, why)
        except Exception as exc:  # fail closed on anything else too, loudly
            self._restore(pending)
            log.exception("budget charge failed")
            return denied(d, f"the budget could not be charged, denied: {type(exc).__name__}")
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
                    usage.give_back(conn, charge)
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
                used = usage.take(conn, grant.id, limit, start)
                if used is None:
                    over.append(Charge(grant.id, limit, limit.amount, start))
                else:
                    taken.append(Charge(grant.id, limit, used, start))
            else:  # bytes: refused once used; counted when results come back
                used = usage.used(conn, grant.id, limit, start)
                charge = Charge(grant.id, limit, used, start)
                (over if used >= limit.amount else taken).append(charge)
        if over:
            for charge in taken:
                usage.give_back(conn, charge)
            return [], over
        return taken, []

    # ---- results ----------------------------------------------------------------------

    def spend(self, d: Decision, size: int) -> None:
        """Count ``size`` bytes of a result against the bytes limits of the grants ``d``
        was charged to, in the window that holds now. Written with the next charge of
        this process or on its own within ``delay`` seconds (a result is never held up
        by the store); what cannot be written yet is kept and tried again."""
        if not d.budget or size <= 0:
            return
        now = self._clock()
        charged = [(str(c["grant"]), limit_named(str(c["limit"]))) for c in json.loads(d.budget)]
        with self._lock:
            for grant_id, limit in charged:
                if limit.metric == "bytes":
                    key = (grant_id, metric_key(limit), window_start(now, limit))
                    self._pending[key] = self._pending.get(key, 0) + size
        self._arm()

    def flush(self) -> None:
        """Write the bytes counted so far now (raises :class:`TetherError` if that fails,
        keeping them for the next try)."""
        with self._writing:
            pending = self._drain()
            if not pending:
                return
            try:
                with self._store.write() as conn:
                    usage.add(conn, pending)
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

    # ---- pruning ----------------------------------------------------------

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
        return usage.prune(self._store, now or self._clock(), batch)
