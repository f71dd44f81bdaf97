"""The kill switch: stop an agent, and everything it spawned, everywhere, at once.

One transaction makes every target ``killed`` (irreversible), revokes every unexpired
token the killed agents were issued together with every token exchanged from those (the
whole family), writes one ``agent.killed`` event per agent and moves the state epoch.
Token verification checks every agent of a token's chain against that epoch's state, so
this process refuses the killed agents' tokens at once. Other processes hear of it by
PostgreSQL ``NOTIFY`` and confirm the new epoch (``epoch_acks``); the kill returns only
once every live listening process has confirmed it, or the staleness bound has passed
(after which a process that has not re-read the epoch refuses every token): so once the
command has returned, no process sharing the store accepts a token naming a killed agent.
An agent that was merely delegated to by a killed one keeps its identity and its tokens
that do not pass through the killed one.

Then what lives outside the store: the vault leases the killed agents received are revoked
(including those being issued as the kill committed: the broker waits for them, see
:mod:`tether.vault.broker`) and the static secrets they could read are rotated, and open
gateway sessions of theirs are closed. What fails there is retried (three tries here, then
by the sweeper until done) and reported. A final ``kill.completed`` event lists everything
that was done and everything that failed.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, func, or_, select, update

from tether.audit.record import Entry
from tether.callers import Caller
from tether.errors import Forbidden, IllegalTransition, InvalidRequest, NotFound
from tether.lifecycle import check_transition
from tether.model import AgentState, parse_email, parse_text
from tether.registry import Registry
from tether.services import Services
from tether.store import agents, epoch_acks, issued_tokens, state_epoch
from tether.tokens import token_family

__all__ = ["KillReport", "KillSwitch", "SessionCloser", "VaultRevoker"]

_KILLABLE = (AgentState.ACTIVE.value, AgentState.SUSPENDED.value, AgentState.EXPIRED.value)
_TRIES = 3  # vault actions tried this many times before a kill returns (then the sweeper)


class VaultRevoker(Protocol):
    """The vault broker's part in a kill (see :mod:`tether.vault`)."""

    def revoke_and_rotate(self, agent_ids: Collection[str], by: str) -> Any: ...


# Closes the open gateway sessions of the given agents; returns how many it closed.
SessionCloser = Callable[[Collection[str]], int]


@dataclass
class KillReport:
    """What a kill did, and what failed (to be retried)."""

    agents_killed: list[str] = field(default_factory=list)
    tokens_revoked: list[str] = field(default_factory=list)  # jti
    token_families: list[str] = field(default_factory=list)  # the jti each family grew from
    leases_revoked: list[str] = field(default_factory=list)
    secrets_rotated: list[str] = field(default_factory=list)
    sessions_closed: int = 0
    failures: list[str] = field(default_factory=list)
    reason: str = ""
    by: str = ""
    epoch: int = 0  # the state epoch the kill committed
    processes_confirmed: int = 0  # other processes that confirmed that epoch
    processes_unconfirmed: list[str] = field(default_factory=list)  # past the bound instead

    def to_dict(self) -> dict[str, Any]:
        return {
            "agents_killed": list(self.agents_killed),
            "tokens_revoked": len(self.tokens_revoked),
            "token_families_revoked": len(self.token_families),
            "token_ids": list(self.tokens_revoked),
            "leases_revoked": list(self.leases_revoked),
            "secrets_rotated": list(self.secrets_rotated),
            "sessions_closed": self.sessions_closed,
            "failures": list(self.failures),
            "processes_confirmed": self.processes_confirmed,
            "processes_unconfirmed": list(self.processes_unconfirmed),
            "reason": self.reason,
            "by": self.by,
        }


class KillSwitch:
    def __init__(
        self, services: Services, registry: Registry, vault: VaultRevoker | None = None
    ) -> None:
        self._store = services.store
        self._registry = registry
        self._log = services.events
        self._epoch = services.epoch
        self._clock = services.clock
        self.vault = vault  # revokes the killed agents' leases (None: no vault configured)
        self._closers: list[SessionCloser] = []
        self._failed_last: list[str] = []  # the last retry's failures, recorded once

    def on_kill(self, closer: SessionCloser) -> Callable[[], None]:
        """Register a closer of gateway sessions; returns its unregistration."""
        self._closers.append(closer)
        return lambda: self._closers.remove(closer)

    # ---- the switch ---------------------------------------------------------------------

    def kill(self, by: Caller, ref: str, *, cascade: bool = True, reason: str = "") -> KillReport:
        """Kill agent ``ref`` (an admin, or its owner) and, unless ``cascade`` is off, every
        agent whose parent chain leads to it."""
        name = self._registry.parse_ref(ref)
        reason = parse_text(reason, "reason")
        with self._store.write() as conn:
            row = conn.execute(
                select(agents).where(agents.c.name == name).with_for_update()
            ).first()
            if row is None or not (by.is_admin or by.owns(row.owner)):
                hidden = row is not None
                found = None
            else:
                hidden, found = False, row
                check_transition(name, AgentState(row.state), AgentState.KILLED)
                names = [name, *(self._descendants(conn, name) if cascade else [])]
                report = self._kill_in(conn, by, names, root=name, reason=reason)
        if found is None:
            agent_id = self._registry.agent_id(name)
            if hidden:
                self._refuse(by, agent_id, "not the owner")
            raise NotFound(f"no agent {agent_id}")
        return self._finish(by, report)

    def kill_owner(self, by: Caller, owner: str, *, reason: str = "") -> KillReport:
        """Kill every live agent of ``owner`` and what they spawned (admins only)."""
        email = parse_email(owner)
        return self._kill_bulk(by, reason, agents.c.owner == email, f"owner {email}")

    def kill_all(self, by: Caller, *, confirm: bool, reason: str = "") -> KillReport:
        """The panic button: kill every live agent (admins only; ``confirm`` required)."""
        if not confirm:
            raise InvalidRequest("killing every agent needs --confirm")
        return self._kill_bulk(by, reason, None, "every agent")

    def retry(self, by: str = "system:sweeper") -> KillReport | None:
        """Retry the vault actions of killed agents that did not complete (the sweeper
        calls this); returns a report when something was done or failed again."""
        if self.vault is None:
            return None
        with self._store.read() as conn:
            killed = list(
                conn.execute(
                    select(agents.c.name).where(agents.c.state == AgentState.KILLED.value)
                ).scalars()
            )
        if not killed:
            return None
        report = KillReport(reason="retry of unfinished kill actions", by=by)
        self._vault(report, [self._registry.agent_id(n) for n in killed], by, tries=1)
        done = bool(report.leases_revoked or report.secrets_rotated)
        if not done and report.failures == self._failed_last:
            return None  # nothing new: the same failures are on record already
        self._failed_last = list(report.failures)
        self._record(report, killed=[])
        return report

    # ---- steps --------------------------------------------------------------------------

    def _kill_bulk(self, by: Caller, reason: str, where: Any, what: str) -> KillReport:
        reason = parse_text(reason, "reason")
        if not by.is_admin:
            self._refuse(by, what, "only admins kill in bulk")
            raise Forbidden("only an admin can kill in bulk")
        with self._store.write() as conn:
            query = select(agents.c.name).where(agents.c.state.in_(_KILLABLE))
            if where is not None:
                query = query.where(where)
            roots = list(conn.execute(query.order_by(agents.c.name)).scalars())
            names: list[str] = []
            for root in roots:
                for name in (root, *self._descendants(conn, root)):
                    if name not in names:
                        names.append(name)
            report = self._kill_in(conn, by, names, root=None, reason=reason or f"kill {what}")
        return self._finish(by, report)

    def _descendants(self, conn: Connection, name: str) -> list[str]:
        """Every agent whose parent chain leads to ``name`` and that can still be killed."""
        states: dict[str, str] = {}  # every descendant, killable or not (its children count)
        frontier = [name]
        while frontier:
            children = conn.execute(
                select(agents.c.name, agents.c.state).where(agents.c.parent.in_(frontier))
            ).all()
            new = [c for c in children if c.name not in states and c.name != name]
            states.update((c.name, c.state) for c in new)
            frontier = [c.name for c in new]
        return [n for n, state in states.items() if state in _KILLABLE]

    def _kill_in(
        self,
        conn: Connection,
        by: Caller,
        names: list[str],
        *,
        root: str | None,
        reason: str,
    ) -> KillReport:
        now = self._clock()
        report = KillReport(reason=reason, by=by.subject)
        for name in names:
            state = AgentState(
                conn.execute(select(agents.c.state).where(agents.c.name == name)).scalar_one()
            )
            try:
                check_transition(name, state, AgentState.KILLED)
            except IllegalTransition:
                continue  # retired or killed already: nothing left to stop
            conn.execute(
                update(agents)
                .where(agents.c.name == name)
                .values(state=AgentState.KILLED.value, state_changed_at=now)
            )
            agent_id = self._registry.agent_id(name)
            families, revoked = self._revoke_tokens(conn, agent_id, now)
            report.agents_killed.append(agent_id)
            report.token_families.extend(families)
            report.tokens_revoked.extend(revoked)
            detail: dict[str, Any] = {
                "from": state.value,
                "to": AgentState.KILLED.value,
                "tokens_revoked": revoked,
            }
            if root is not None and name != root:
                detail["cascade_from"] = self._registry.agent_id(root)
            self._log.append(
                conn,
                Entry.of(
                    "agent.killed",
                    actor=by.subject,
                    subject=agent_id,
                    reason=reason,
                    detail=detail,
                ),
            )
        if report.agents_killed:
            self._epoch.bump(conn)
            report.epoch = int(
                conn.execute(select(state_epoch.c.value).where(state_epoch.c.id == 1)).scalar_one()
            )
        return report

    def _revoke_tokens(
        self, conn: Connection, agent_id: str, now: datetime
    ) -> tuple[list[str], list[str]]:
        """Revoke the agent's unexpired tokens and every token exchanged from them."""
        roots = list(
            conn.execute(
                select(issued_tokens.c.jti).where(
                    or_(issued_tokens.c.client_id == agent_id, issued_tokens.c.subject == agent_id),
                    issued_tokens.c.expires_at > now,
                )
            ).scalars()
        )
        family = token_family(conn, roots)
        revoked = list(
            conn.execute(
                select(issued_tokens.c.jti).where(
                    issued_tokens.c.jti.in_(family), issued_tokens.c.revoked_at.is_(None)
                )
            ).scalars()
        )
        if revoked:
            conn.execute(
                update(issued_tokens).where(issued_tokens.c.jti.in_(revoked)).values(revoked_at=now)
            )
        return roots, revoked

    def _finish(self, by: Caller, report: KillReport) -> KillReport:
        """Everything outside the store, then the closing event."""
        if report.agents_killed:
            self._propagate(report)
            self._vault(report, report.agents_killed, by.subject, tries=_TRIES)
            for closer in list(self._closers):
                try:
                    report.sessions_closed += closer(report.agents_killed)
                except Exception as exc:  # reported, and the sessions fail on their next call
                    report.failures.append(f"closing gateway sessions: {type(exc).__name__}")
        self._record(report, killed=report.agents_killed)
        return report

    def _propagate(self, report: KillReport) -> None:
        """Return only once no process sharing the store can accept the killed agents'
        tokens: each live listening process (PostgreSQL) has confirmed the kill's epoch, or
        the staleness bound has passed since the commit, after which a process that has
        not re-read the epoch refuses every token. SQLite: processes poll within the bound."""
        if self._store.dialect != "postgresql":
            return
        bound = self._epoch.staleness
        started = time.monotonic()
        recent = timedelta(seconds=3 * max(bound, 0.5))  # a heartbeat newer than this: live
        while True:
            with self._store.read() as conn:  # the database's clock, as the heartbeats use
                live = conn.execute(
                    select(epoch_acks.c.process, epoch_acks.c.epoch).where(
                        epoch_acks.c.seen_at > func.now() - recent
                    )
                ).all()
            behind = [row.process for row in live if row.epoch < report.epoch]
            if not behind:
                report.processes_confirmed = len(live)
                return
            if time.monotonic() - started >= bound:
                report.processes_confirmed = len(live) - len(behind)
                report.processes_unconfirmed = behind  # they refuse until they re-read
                return
            time.sleep(0.002)

    def _vault(self, report: KillReport, agent_ids: Iterable[str], by: str, tries: int) -> None:
        if self.vault is None:
            return
        ids = list(agent_ids)
        failures: list[str] = []
        for attempt in range(tries):
            try:
                done = self.vault.revoke_and_rotate(ids, by)
            except Exception as exc:  # the broker should not raise; fail loud, not silent
                failures = [f"vault: {type(exc).__name__}"]
            else:
                report.leases_revoked.extend(done.leases_revoked)
                report.secrets_rotated.extend(done.secrets_rotated)
                failures = list(done.failures)
            if not failures:
                break
            if attempt + 1 < tries:
                time.sleep(0.2 * (attempt + 1))
        report.failures.extend(failures)

    def _record(self, report: KillReport, *, killed: builtins.list[str]) -> None:
        detail = report.to_dict()
        self._log.record(
            Entry.of(
                "kill.completed",
                actor=report.by,
                subject=killed[0] if killed else None,
                reason=report.reason,
                decision="deny",
                detail=detail,
            )
        )

    def _refuse(self, by: Caller, subject: str, why: str) -> None:
        self._log.record(
            Entry.of(
                "access.refused",
                actor=by.subject,
                subject=subject,
                reason=why,
                detail={"op": "kill"},
            )
        )
