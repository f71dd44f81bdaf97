"""The agent registry: identities, owners, lifecycle, expiry and unowned handling.

Every method takes the :class:`Caller` it acts for and enforces object-level rules: a
non-admin reaches only agents they own; anyone else's agent is "not found" and the
refusal is recorded. Every change is recorded as an event in the same transaction.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, insert, select, update

from tether.agent_keys import generate_key_pair, parse_public_key
from tether.audit.record import Entry
from tether.audit.throttle import RefusalLog, Refusals
from tether.callers import Caller
from tether.durations import format_duration
from tether.errors import Conflict, Forbidden, InvalidRequest, NotFound, OwnerRequired
from tether.lifecycle import TERMINAL, check_transition, effective_state
from tether.model import (
    Agent,
    AgentId,
    AgentKind,
    AgentName,
    AgentState,
    Email,
    agent_id_prefix,
    parse_agent_ref,
    parse_email,
    parse_labels,
    parse_name,
    parse_text,
)
from tether.services import Services
from tether.store import agents

__all__ = ["AgentSpec", "Registry"]

_SWEEPER = Caller.system("lifecycle")
_PAGE = 100  # rows read at a time for a page whose state filter drops some
_E = TypeVar("_E", bound=enum.StrEnum)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What a registration asks for, before it is checked."""

    name: str
    owner: str | None
    public_key: str
    kind: str = AgentKind.OTHER.value
    purpose: str = ""
    parent: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    expires_in: timedelta | None = None


class Registry:
    def __init__(self, services: Services, refusals: RefusalLog | None = None) -> None:
        settings = services.settings
        self._store = services.store
        self._settings = settings
        self._log = services.events
        self._refusals = refusals or RefusalLog(
            services.events, Refusals(settings.refusals_per_second, settings.refusals_burst)
        )
        self._epoch = services.epoch
        self._clock = services.clock
        self._prefix = agent_id_prefix(settings.trust_domain)

    # ---- identities -------------------------------------------------------------------

    def agent_id(self, name: str) -> AgentId:
        return AgentId(self._prefix + name)

    def parse_ref(self, ref: str) -> AgentName:
        """A SPIFFE ID of this trust domain or a bare name, checked."""
        return parse_agent_ref(ref, self._settings.trust_domain)

    # ---- reads ------------------------------------------------------------------------

    def get(self, by: Caller, ref: str) -> Agent:
        name = self.parse_ref(ref)
        with self._guard(by, "read"), self._store.read() as conn:
            row = conn.execute(select(agents).where(agents.c.name == name)).first()
            return self._visible(by, name, row)

    def list(
        self,
        by: Caller,
        *,
        state: str | None = None,
        owner: str | None = None,
        unowned: bool = False,
        after: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Agent]:
        """Agents by name (a non-admin sees their own); with ``limit``, a page of at most
        that many whose names come after ``after`` (the last name of the page before):
        each page is a walk of the name index from there, however deep it is."""
        wanted = _parse_choice(AgentState, "state", state) if state is not None else None
        if limit is not None and limit < 1:
            raise InvalidRequest("limit must be at least 1")
        query = select(agents).order_by(agents.c.name)
        if owner is not None:
            query = query.where(agents.c.owner == parse_email(owner))
        if unowned:
            query = query.where(agents.c.owner.is_(None))
        if not by.is_admin:
            query = query.where(agents.c.owner == by.email)
        found: builtins.list[Agent] = []
        cursor = after
        with self._store.read() as conn:
            while True:
                page = query if cursor is None else query.where(agents.c.name > cursor)
                size = None if limit is None else max(limit - len(found), _PAGE)
                rows = [self._agent(row) for row in conn.execute(page.limit(size))]
                # the state is the effective one (expiry): filtered here, so read on until full
                found += [a for a in rows if wanted is None or a.state is wanted]
                if limit is None or size is None or len(found) >= limit or len(rows) < size:
                    return found[:limit]
                cursor = rows[-1].name

    def states(self, by: Caller, names: Collection[str]) -> dict[str, AgentState]:
        """The state now of each of ``names`` the caller may see (a report's suggestions
        need no more of an agent), read a few hundred names at a time."""
        now = self._clock()
        columns = select(agents.c.name, agents.c.state, agents.c.expires_at, agents.c.unowned_since)
        if not by.is_admin:
            columns = columns.where(agents.c.owner == by.email)
        wanted = sorted(names)
        found: dict[str, AgentState] = {}
        with self._store.read() as conn:
            for at in range(0, len(wanted), _PAGE * 5):
                chunk = wanted[at : at + _PAGE * 5]
                for row in conn.execute(columns.where(agents.c.name.in_(chunk))):
                    found[row.name] = effective_state(
                        AgentState(row.state),
                        now=now,
                        expires_at=row.expires_at,
                        unowned_since=row.unowned_since,
                        grace=self._settings.unowned_grace,
                    )
        return found

    # ---- registration -----------------------------------------------------------------

    def register(self, by: Caller, spec: AgentSpec) -> Agent:
        """Register an agent; nothing is stored unless every rule holds."""
        if spec.owner is None or not str(spec.owner).strip():
            raise OwnerRequired(
                "an agent needs an accountable owner: pass --owner EMAIL "
                "(registration without an owner is refused)"
            )
        name = parse_name(spec.name)
        owner = parse_email(spec.owner)
        kind = _parse_choice(AgentKind, "kind", spec.kind)
        labels = parse_labels(spec.labels)
        purpose = parse_text(spec.purpose, "purpose")
        public_key = parse_public_key(spec.public_key)
        lifetime = self._lifetime(spec.expires_in)
        if not by.is_admin and not by.owns(owner):
            self._refuse(by, self.agent_id(name), "register", f"owner {owner} is not the caller")
            raise Forbidden("you can register agents only with yourself as owner")
        now = self._clock()
        expires_at = now + lifetime
        with self._guard(by, "register"), self._store.write() as conn:
            taken = (
                conn.execute(
                    select(agents.c.name).where(
                        (agents.c.name == name) | (agents.c.public_key == public_key)
                    )
                )
                .scalars()
                .all()
            )
            if name in taken:
                raise Conflict(
                    f"agent name {name} is taken (names are never reused, even after retirement)"
                )
            if taken:
                raise Conflict("public_key is already registered to another agent")
            parent = self._parent(conn, by, spec.parent, expires_at) if spec.parent else None
            row = {
                "name": name,
                "kind": kind.value,
                "owner": owner,
                "purpose": purpose,
                "parent": parent,
                "labels": labels,
                "created_by": by.subject,
                "created_at": now,
                "expires_at": expires_at,
                "state": AgentState.ACTIVE.value,
                "state_changed_at": now,
                "unowned_since": None,
                "public_key": public_key,
                "key_rotated_at": now,
            }
            conn.execute(insert(agents).values(**row))
            self._log.append(
                conn,
                Entry.of(
                    "agent.registered",
                    actor=by.subject,
                    subject=self.agent_id(name),
                    detail={
                        "owner": owner,
                        "kind": kind.value,
                        "parent": self.agent_id(parent) if parent else None,
                        "expires_at": expires_at.isoformat(),
                    },
                ),
            )
            self._epoch.bump(conn)
        return self._agent(row)

    def register_discovered(
        self,
        conn: Connection,
        by: Caller,
        name: str,
        *,
        kind: str,
        purpose: str,
        labels: dict[str, str],
    ) -> AgentId:
        """Register an agent that discovery found running (``tether discover scan
        --import``), inside the caller's transaction: unowned and suspended, so it can do
        nothing until someone adopts it (``agent set-owner``, then ``agent resume``). It
        gets a key nobody holds: adopting it means ``agent rotate-key``."""
        if not by.is_admin:
            raise Forbidden("only an admin can import discovered agents")
        valid = parse_name(name)
        now = self._clock()
        public_key = generate_key_pair().public_key  # its private half is thrown away
        checked = parse_labels(labels)
        row: dict[str, Any] = {
            "name": valid,
            "kind": _parse_choice(AgentKind, "kind", kind).value,
            "owner": None,
            "purpose": parse_text(purpose, "purpose"),
            "parent": None,
            "labels": checked,
            "created_by": by.subject,
            "created_at": now,
            "expires_at": now + self._settings.agent_lifetime_default,
            "state": AgentState.SUSPENDED.value,
            "state_changed_at": now,
            "unowned_since": now,
            "public_key": public_key,
            "key_rotated_at": now,
        }
        if conn.execute(select(agents.c.name).where(agents.c.name == valid)).first():
            raise Conflict(f"agent name {valid} is taken")
        conn.execute(insert(agents).values(**row))
        self._log.append(
            conn,
            Entry.of(
                "agent.registered",
                actor=by.subject,
                subject=self.agent_id(valid),
                reason="discovered running: unowned and suspended until adopted",
                detail={"owner": None, "kind": row["kind"], "discovered": checked},
            ),
        )
        self._epoch.bump(conn)
        return self.agent_id(valid)

    def _lifetime(self, requested: timedelta | None) -> timedelta:
        maximum = self._settings.agent_lifetime_max
        if requested is None:
            return self._settings.agent_lifetime_default
        if requested <= timedelta(0):
            raise InvalidRequest("expires must be a positive duration")
        if requested > maximum:
            raise InvalidRequest(
                f"expires {format_duration(requested)} is longer than the maximum agent "
                f"lifetime {format_duration(maximum)}"
            )
        return requested

    def _parent(self, conn: Connection, by: Caller, ref: str, expires_at: datetime) -> AgentName:
        name = self.parse_ref(ref)
        row = conn.execute(select(agents).where(agents.c.name == name)).first()
        parent = self._visible(by, name, row)
        if parent.state is not AgentState.ACTIVE:
            raise InvalidRequest(f"parent agent {name} is {parent.state.value}, not active")
        if expires_at > parent.expires_at:
            raise InvalidRequest(
                f"a spawned agent cannot outlive its parent: {name} expires at "
                f"{parent.expires_at.isoformat()}"
            )
        return name

    # ---- changes ----------------------------------------------------------------------

    def suspend(self, by: Caller, ref: str, reason: str = "") -> Agent:
        """Suspend an agent. An admin's suspension is an *admin hold*: only an admin lifts
        it (an admin may also turn an owner's suspension into a hold)."""
        return self._move(by, ref, AgentState.SUSPENDED, "agent.suspended", reason)

    def resume(self, by: Caller, ref: str, reason: str = "") -> Agent:
        """Resume a suspended agent; its owner cannot lift an admin hold (refused, recorded)."""
        return self._move(by, ref, AgentState.ACTIVE, "agent.resumed", reason)

    def retire(self, by: Caller, ref: str, reason: str = "") -> Agent:
        return self._move(by, ref, AgentState.RETIRED, "agent.retired", reason)

    def _move(self, by: Caller, ref: str, target: AgentState, event: str, reason: str) -> Agent:
        def change(conn: Connection, agent: Agent) -> dict[str, Any]:
            held_by = conn.execute(
                select(agents.c.held_by).where(agents.c.name == agent.name)
            ).scalar()
            if agent.state is not AgentState.SUSPENDED:
                held_by = None  # a hold ends with the suspension (expiry, retirement, kill)
            hold = by.subject if by.is_admin and target is AgentState.SUSPENDED else None
            if hold is not None and agent.state is target and held_by is None:
                self._write_state(conn, agent.name, target, held_by=hold)  # now a hold
                return {"from": agent.state.value, "to": target.value, "hold": True}
            check_transition(agent.name, agent.state, target)
            if target is AgentState.ACTIVE and held_by is not None and not by.is_admin:
                raise _Held(
                    agent.name,
                    f"agent {agent.name} is on an admin hold ({held_by} suspended it): "
                    "only an admin can resume it",
                )
            if target is AgentState.ACTIVE and agent.owner is None:
                raise InvalidRequest(
                    f"agent {agent.name} has no owner: set one with `agent set-owner` first"
                )
            self._write_state(conn, agent.name, target, held_by=hold)
            detail: dict[str, Any] = {"from": agent.state.value, "to": target.value}
            if target is AgentState.SUSPENDED:
                detail["hold"] = hold is not None
            if held_by is not None:
                detail["lifted_hold_of"] = held_by
            return detail

        return self._change(by, ref, event, reason, change)

    def set_owner(self, by: Caller, ref: str, owner: str, reason: str = "") -> Agent:
        email = parse_email(owner)

        def change(conn: Connection, agent: Agent) -> dict[str, Any]:
            _refuse_terminal(agent, "change the owner of")
            conn.execute(
                update(agents)
                .where(agents.c.name == agent.name)
                .values(owner=email, unowned_since=None)
            )
            return {"from": agent.owner, "to": email}

        return self._change(by, ref, "agent.owner_changed", reason, change)

    def update(
        self,
        by: Caller,
        ref: str,
        *,
        purpose: str | None = None,
        labels: dict[str, str] | None = None,
        reason: str = "",
    ) -> Agent:
        values: dict[str, Any] = {}
        if purpose is not None:
            values["purpose"] = parse_text(purpose, "purpose")
        if labels is not None:
            values["labels"] = parse_labels(labels)
        if not values:
            raise InvalidRequest("nothing to change")

        def change(conn: Connection, agent: Agent) -> dict[str, Any]:
            _refuse_terminal(agent, "change")
            conn.execute(update(agents).where(agents.c.name == agent.name).values(**values))
            return {key: values[key] for key in sorted(values)}

        return self._change(by, ref, "agent.updated", reason, change)

    def rotate_key(self, by: Caller, ref: str, public_key: str, reason: str = "") -> Agent:
        key = parse_public_key(public_key)

        def change(conn: Connection, agent: Agent) -> dict[str, Any]:
            if agent.state not in (AgentState.ACTIVE, AgentState.SUSPENDED):
                raise InvalidRequest(
                    f"cannot rotate the key of agent {agent.name}: it is {agent.state.value}"
                )
            taken = conn.execute(select(agents.c.name).where(agents.c.public_key == key)).first()
            if taken is not None:
                raise Conflict("public_key is already registered to an agent")
            conn.execute(
                update(agents)
                .where(agents.c.name == agent.name)
                .values(public_key=key, key_rotated_at=self._clock())
            )
            return {"old_public_key": agent.public_key, "new_public_key": key}

        return self._change(by, ref, "agent.key_rotated", reason, change)

    def offboard_owner(self, by: Caller, owner: str, reason: str = "") -> builtins.list[Agent]:
        """The owner leaves: each of their live agents becomes unowned (and is flagged)."""
        email = parse_email(owner)
        reason = parse_text(reason, "reason")
        if not by.is_admin:
            self._refuse(by, f"user:{email}", "offboard", "only admins offboard owners")
            raise Forbidden("only an admin can offboard an owner")
        now = self._clock()
        live = [s.value for s in AgentState if s not in TERMINAL]
        with self._store.write() as conn:
            names = list(
                conn.execute(
                    select(agents.c.name).where(agents.c.owner == email, agents.c.state.in_(live))
                ).scalars()
            )
            for name in names:
                conn.execute(
                    update(agents)
                    .where(agents.c.name == name)
                    .values(owner=None, unowned_since=now)
                )
                self._log.append(
                    conn,
                    Entry.of(
                        "agent.unowned",
                        actor=by.subject,
                        subject=self.agent_id(name),
                        reason=reason or f"owner {email} offboarded",
                        detail={"previous_owner": email},
                    ),
                )
            if names:
                self._epoch.bump(conn)
            rows = conn.execute(select(agents).where(agents.c.name.in_(names))).all()
        return sorted((self._agent(row) for row in rows), key=lambda a: a.name)

    def sweep(self) -> builtins.list[Agent]:
        """Persist what time has done: expiries and unowned suspensions, each as an event."""
        changed: builtins.list[Agent] = []
        with self._store.write() as conn:
            rows = conn.execute(
                select(agents).where(
                    agents.c.state.in_([AgentState.ACTIVE.value, AgentState.SUSPENDED.value])
                )
            ).all()
            for row in rows:
                agent = self._agent(row)
                stored = AgentState(row.state)
                if agent.state is stored:
                    continue
                self._write_state(conn, agent.name, agent.state)
                if agent.state is AgentState.EXPIRED:
                    event, why = (
                        "agent.expired",
                        f"lifetime ended at {agent.expires_at.isoformat()}",
                    )
                else:
                    event = "agent.suspended"
                    why = (
                        "unowned for longer than the grace period "
                        f"({format_duration(self._settings.unowned_grace)})"
                    )
                self._log.append(
                    conn,
                    Entry.of(
                        event,
                        actor=_SWEEPER.subject,
                        subject=agent.id,
                        reason=why,
                        detail={"from": stored.value, "to": agent.state.value},
                    ),
                )
                changed.append(agent)
            if changed:
                self._epoch.bump(conn)
        return changed

    # ---- helpers ----------------------------------------------------------------------

    def _change(
        self,
        by: Caller,
        ref: str,
        event: str,
        reason: str,
        change: Callable[[Connection, Agent], dict[str, Any]],
    ) -> Agent:
        name = self.parse_ref(ref)
        reason = parse_text(reason, "reason")
        with self._guard(by, event), self._store.write() as conn:
            row = conn.execute(
                select(agents).where(agents.c.name == name).with_for_update()
            ).first()
            agent = self._visible(by, name, row)
            detail = change(conn, agent)
            self._log.append(
                conn,
                Entry.of(event, actor=by.subject, subject=agent.id, reason=reason, detail=detail),
            )
            self._epoch.bump(conn)
            row = conn.execute(select(agents).where(agents.c.name == name)).one()
        return self._agent(row)

    def _write_state(
        self, conn: Connection, name: str, state: AgentState, held_by: str | None = None
    ) -> None:
        conn.execute(
            update(agents)
            .where(agents.c.name == name)
            .values(state=state.value, state_changed_at=self._clock(), held_by=held_by)
        )

    def _visible(self, by: Caller, name: AgentName, row: Row[Any] | None) -> Agent:
        if row is not None and (by.is_admin or by.owns(row.owner)):
            return self._agent(row)
        raise _Hidden(name, exists=row is not None)

    @contextmanager
    def _guard(self, by: Caller, what: str) -> Iterator[None]:
        """Turn a hidden agent into "not found", recording the refusal once the
        transaction is over (SQLite allows one writer at a time)."""
        try:
            yield
        except _Hidden as hidden:
            agent_id = self.agent_id(hidden.name)
            if hidden.exists:
                self._refuse(by, agent_id, what, "not the owner")
            raise NotFound(f"no agent {agent_id}") from None
        except _Held as held:
            self._refuse(by, self.agent_id(held.name), what, held.reason)
            raise Forbidden(held.reason) from None

    def _refuse(self, by: Caller, subject: str, what: str, why: str) -> None:
        self._refusals.record(by.subject, why, what, subject=subject)

    def _agent(self, found: Row[Any] | Mapping[str, Any]) -> Agent:
        row = SimpleNamespace(**(found._mapping if isinstance(found, Row) else found))
        stored = AgentState(row.state)
        state = effective_state(
            stored,
            now=self._clock(),
            expires_at=row.expires_at,
            unowned_since=row.unowned_since,
            grace=self._settings.unowned_grace,
        )
        held_by = getattr(row, "held_by", None)
        return Agent(
            id=self.agent_id(row.name),
            name=AgentName(row.name),
            kind=AgentKind(row.kind),
            owner=Email(row.owner) if row.owner is not None else None,
            purpose=row.purpose,
            parent=self.agent_id(row.parent) if row.parent is not None else None,
            labels=dict(row.labels),
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            state=state,
            unowned_since=row.unowned_since,
            public_key=row.public_key,
            key_rotated_at=row.key_rotated_at,
            held_by=held_by if state is AgentState.SUSPENDED else None,
        )


class _Hidden(Exception):
    """An agent that does not exist, or that the caller may not know exists."""

    def __init__(self, name: str, *, exists: bool) -> None:
        super().__init__(name)
        self.name = name
        self.exists = exists


class _Held(Exception):
    """The owner tried to lift an admin hold (refused once the transaction is over)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def _refuse_terminal(agent: Agent, verb: str) -> None:
    if agent.state in TERMINAL:
        raise InvalidRequest(f"cannot {verb} agent {agent.name}: it is {agent.state.value}")


def _parse_choice(cls: type[_E], what: str, text: str) -> _E:
    try:
        return cls(text)
    except ValueError:
        choices = ", ".join(member.value for member in cls)
        raise InvalidRequest(f"invalid {what} {text!r}: one of {choices}") from None
