"""Data flows: which labels the work has touched, so a rule can refuse what comes after
(the "lethal trifecta": private data + untrusted content + a way out).

The *work* is named by **scopes**, and a call belongs to several (:func:`flow_scopes`):

- ``family:<root>``: the token family, every token exchanged from one root token (the
  ``tether_family`` claim, :mod:`tether.tokens.issue`), so across each hop of a delegation
  chain and every MCP session of that family;
- ``pair:<agent>|<person>``: for each agent of the chain, that agent working for that
  person (``user:`` entry of the chain, empty when none), so a fresh token does not
  launder what the work touched;
- ``agent:<agent>``: all that agent's work, for anyone. It is read only by a call the
  agent makes on its own (a token for no person): such an agent holds whatever its work
  for any person took in, so taking its own token does not launder it. A call for a
  person reads the agent's work on its own too (``pair:<agent>|``), but not its work for
  other people (:func:`flow_reads`).

Only two labels mean the work *took something in*, and only those are tracked:
``sensitive`` (it read private data) and ``untrusted`` (it took in content nobody vetted).
``egress`` and ``destructive`` are properties of a call, not of what the work holds: they
are judged on the call itself (``resource.labels``), never remembered.

After an allowed call of an item with a tracked label, the gateway records, per scope and
label, the latest decision event that touched it (:meth:`Flows.effect`, an atomic upsert
that keeps the highest sequence number, written in the transaction that records the
decision, correct across processes sharing the store; :meth:`Flows.touch` writes the
same on its own);
before each call it reads them back (:meth:`Flows.touched`, one indexed query) into the
request's ``session``. What is older than ``[guard] flow_window`` no longer counts (family
scopes too, for simplicity: a family rarely outlives it) and is pruned by the sweeper.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from tether.audit.record import Effect
from tether.errors import StoreUnavailable, TetherError
from tether.services import Services
from tether.store import flow_labels

__all__ = ["TRACKED", "Flows", "flow_reads", "flow_scopes"]

TRACKED = frozenset({"sensitive", "untrusted"})  # what the work took in
_PRUNE_BATCH = 10_000  # rows a prune removes at most per transaction


def flow_scopes(family: str, chain: Sequence[str]) -> tuple[str, ...]:
    """The scopes a call made with a token of ``family`` for ``chain`` (human first)
    *writes* what it takes in to: its family, one ``pair:<agent>|<person>`` per agent of
    the chain, and one ``agent:<agent>`` per agent (all that agent's work, for anyone)."""
    person, agents = _people(chain)
    return (
        f"family:{family}",
        *(f"pair:{agent}|{person}" for agent in agents),
        *(f"agent:{agent}" for agent in agents),
    )


def flow_reads(family: str, chain: Sequence[str]) -> tuple[str, ...]:
    """The scopes a call made with a token of ``family`` for ``chain`` *reads* its session
    from: its family and each agent with its person, as :func:`flow_scopes`; and, for each
    agent, what it did on its own (``pair:<agent>|``). An agent acting on its own (a token
    for no person) holds whatever its work for anyone took in: it reads ``agent:<agent>``,
    so taking its own token does not launder what it touched working for a person."""
    person, agents = _people(chain)
    alone = [f"pair:{agent}|" for agent in agents]
    if not person:
        alone += [f"agent:{agent}" for agent in agents]
    return tuple(
        dict.fromkeys((f"family:{family}", *(f"pair:{a}|{person}" for a in agents), *alone))
    )


def _people(chain: Sequence[str]) -> tuple[str, list[str]]:
    person = next((c.removeprefix("user:") for c in chain if c.startswith("user:")), "")
    return person, [c for c in chain if not c.startswith("user:")]


class Flows:
    """The labels each scope touched: read before a call, written after an allow."""

    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._window = services.settings.guard.flow_window
        self._clock = services.clock

    def touched(
        self, scopes: Collection[str], since: datetime | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{label: {"seq": N, "resource": R}}``: for each label any of ``scopes``
        touched since ``since`` (default: the flow window back from now), the latest
        decision event that did (its sequence number) and what it was on."""
        if not scopes:
            return {}
        since = since if since is not None else self._clock() - self._window
        with self._store.read() as conn:
            rows = conn.execute(
                select(flow_labels.c.label, flow_labels.c.seq, flow_labels.c.resource).where(
                    flow_labels.c.scope.in_(sorted(set(scopes))), flow_labels.c.at >= since
                )
            ).all()
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:
            held = latest.get(row.label)
            if held is None or row.seq > held["seq"]:
                latest[row.label] = {"seq": int(row.seq), "resource": row.resource}
        return {label: latest[label] for label in sorted(latest)}

    def touch(
        self,
        scopes: Iterable[str],
        labels: Iterable[str],
        seq: int,
        resource: str,
        at: datetime | None = None,
    ) -> None:
        """Record that decision event ``seq`` (on ``resource``, at ``at``) touched
        ``labels`` for each of ``scopes``: one upsert per (scope, label) that keeps the
        latest sequence number, atomic across processes. Labels other than the tracked
        ones (:data:`TRACKED`) are ignored; nothing to record writes nothing."""
        effect = self.effect(scopes, labels, resource, at)
        if effect is not None:  # on its own: the gateway writes it with the decision
            with self._store.write() as conn:
                effect(conn, seq)

    def effect(
        self,
        scopes: Iterable[str],
        labels: Iterable[str],
        resource: str,
        at: datetime | None = None,
    ) -> Effect | None:
        """:meth:`touch` as the effect of a decision's record (see
        :meth:`tether.core.Tether.decide_all`): written in the transaction that records
        the decision, naming its event, so the allow and what it takes in commit together
        or neither does (and the call pays no commit of its own); ``None`` when there is
        nothing to record."""
        wanted = sorted(set(labels) & TRACKED)
        keys = sorted(set(scopes))
        if not wanted or not keys:
            return None
        when = at if at is not None else self._clock()

        def write(conn: Connection, seq: int) -> None:
            rows = [
                {"scope": scope, "label": label, "seq": seq, "resource": resource, "at": when}
                for scope in keys
                for label in wanted
            ]
            try:
                conn.execute(_upsert(conn), rows)
            except TetherError:
                raise
            except Exception as exc:  # the record rolls back: the call is denied, with why
                raise StoreUnavailable(
                    f"what the call takes in ({', '.join(wanted)}) could not be recorded: "
                    f"{type(exc).__name__}"
                ) from None

        return write

    def prune(self, now: datetime | None = None) -> int:
        """Forget what is older than the window (at most a bounded batch per call: the
        sweeper calls it again); how many rows went."""
        cutoff = (now if now is not None else self._clock()) - self._window
        old = (
            select(flow_labels.c.scope, flow_labels.c.label)
            .where(flow_labels.c.at < cutoff)
            .limit(_PRUNE_BATCH)
        )
        with self._store.write() as conn:
            gone = conn.execute(
                delete(flow_labels).where(
                    tuple_(flow_labels.c.scope, flow_labels.c.label).in_(old),
                    flow_labels.c.at < cutoff,
                )
            )
        return int(gone.rowcount or 0)


def _upsert(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT (scope, label) DO UPDATE, only when the new event is later."""
    make = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = make(flow_labels)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[flow_labels.c.scope, flow_labels.c.label],
        set_={"seq": excluded.seq, "resource": excluded.resource, "at": excluded.at},
        where=flow_labels.c.seq < excluded.seq,
    )
