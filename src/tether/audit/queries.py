"""Questions asked of the audit log: search, and "who did this?" (explain).

The audit log sits below the domain, so these questions do not import the registry: the
caller above passes in what answers for agents (:class:`Agents`, which
:class:`tether.registry.Registry` is)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tether.audit.log import AuditLog
from tether.audit.terms import EventTerms
from tether.callers import Caller
from tether.errors import InvalidRequest, NotFound
from tether.model import Agent, AgentId, AgentName, Event, parse_email

__all__ = ["Agents", "Filter", "explain", "search"]

_SCAN = 2_000
_RELATED = 1_000  # events of the same request named by explain
_OWNERSHIP = ("agent.registered", "agent.owner_changed", "agent.unowned")


class Agents(Protocol):
    """What the questions need to know of agents: names them, and how they are now."""

    def parse_ref(self, ref: str, /) -> AgentName:
        """A SPIFFE ID or a bare name, checked: the agent's name."""
        ...

    def agent_id(self, name: str, /) -> AgentId:
        """The SPIFFE ID of the agent of that name."""
        ...

    def get(self, by: Caller, ref: str, /) -> Agent:
        """The agent as it is now (:class:`~tether.errors.NotFound` if it is not)."""
        ...


@dataclass(frozen=True, slots=True)
class Filter:
    """What to look for; every field given must match."""

    agent: str | None = None  # SPIFFE ID: in the chain or the subject
    user: str | None = None  # user:<email>: the human at the head of the chain
    action: str | None = None
    decision: str | None = None
    type: str | None = None
    since: datetime | None = None

    @classmethod
    def of(
        cls,
        registry: Agents,
        *,
        agent: str | None = None,
        user: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
    ) -> Filter:
        if decision is not None and decision not in ("allow", "deny"):
            raise InvalidRequest("decision must be allow or deny")
        if user is not None:
            user = "user:" + parse_email(user.removeprefix("user:"))
        if agent is not None:
            agent = registry.agent_id(registry.parse_ref(agent))
        return cls(agent, user, action, decision, type, since)

    def matches(self, body: dict[str, Any]) -> bool:
        if self.agent is not None and not (
            self.agent in body["chain"] or body["subject"] == self.agent
        ):
            return False
        if self.user is not None and not (
            (body["chain"] and body["chain"][0] == self.user) or body["actor"] == self.user
        ):
            return False
        if self.action is not None and body["action"] != self.action:
            return False
        return self.decision is None or body["decision"] == self.decision

    def needles(self) -> list[str]:
        """Text every matching canonical body contains (a pre-filter for the store)."""
        return [json.dumps(v, ensure_ascii=False) for v in (self.agent, self.user) if v]

    def principal(self) -> str | None:
        """A principal every matching event names (in its chain, as actor or subject):
        the agent, else the person; None when neither is asked for."""
        return self.agent or self.user


def search(
    log: AuditLog, terms: EventTerms, where: Filter, *, after: int = 0, limit: int = 100
) -> tuple[list[Event], int | None]:
    """Up to ``limit`` matching events after ``after``, and the cursor to continue from
    (None when the log has no more). A search for an agent or a person reads only the
    events that name them (``terms``); any other reads the log in order."""
    principal = where.principal()
    indexed = principal is not None and terms.indexed(principal)
    found: list[Event] = []
    cursor = after
    # under a principal most events match: read a page, then twice as many each time
    want = min(_SCAN, limit) if indexed else _SCAN
    while len(found) < limit:
        if indexed:
            assert principal is not None
            rows = terms.bodies(
                "p", principal, after=cursor, limit=want, type=where.type, since=where.since
            )
        else:
            rows = log.bodies(
                type=where.type,
                after=cursor,
                since=where.since,
                limit=_SCAN,
                contains=where.needles(),
            )
        for seq, at, text in rows:
            body = json.loads(text)
            cursor = seq
            if where.matches(body):
                found.append(Event.from_body(body, at))
                if len(found) == limit:
                    return found, cursor
        if len(rows) < want:
            return found, None
        want = min(_SCAN, want * 2)
    return found, cursor


def explain(log: AuditLog, terms: EventTerms, registry: Agents, seq: int) -> dict[str, Any]:
    """The event and its whole chain, human first: each agent with its owner at the time
    (replayed from the log itself) and now, the decision and its reasons, and the other
    events of the same request."""
    event = log.get(seq)
    chain: list[dict[str, Any]] = []
    for principal in event.chain:
        if principal.startswith("user:"):
            chain.append({"principal": principal, "kind": "human"})
        elif principal.startswith("spiffe://"):
            chain.append(_agent(log, registry, principal, seq))
        else:
            chain.append({"principal": principal, "kind": "operator"})
    related: list[int] = []
    if event.request_id and terms.indexed(event.request_id):
        related = terms.seqs("r", event.request_id, limit=_RELATED)
    elif event.request_id:
        needle = json.dumps(event.request_id)
        related = [
            seq_
            for seq_, _, text in log.bodies(contains=[needle], limit=_RELATED)
            if json.loads(text)["request_id"] == event.request_id
        ]
    return {
        "seq": event.seq,
        "time": event.at.isoformat(),
        "type": event.type,
        "chain": chain,
        "actor": event.actor,
        "action": event.action,
        "resource": event.resource,
        "decision": event.decision,
        "reasons": list(event.reasons),
        "request_id": event.request_id,
        "related": [s for s in related if s != seq],
        "detail": event.detail,
    }


def _agent(log: AuditLog, registry: Agents, agent_id: str, seq: int) -> dict[str, Any]:
    owner: str | None = None
    known = False
    history = log.bodies(subject=agent_id, types=_OWNERSHIP, upto=seq)
    for past in (Event.from_body(json.loads(body), at) for _, at, body in history):
        if past.type == "agent.registered":
            owner, known = past.detail.get("owner"), True
        elif past.type == "agent.owner_changed":
            owner = past.detail.get("to")
        elif past.type == "agent.unowned":
            owner = None
    try:
        now: Agent | None = registry.get(Caller.system("audit"), agent_id)
    except NotFound:
        now = None
    return {
        "principal": agent_id,
        "kind": "agent",
        "registered": known,
        "owner_then": owner,
        "owner_now": now.owner if now is not None else None,
        "state_now": now.state.value if now is not None else None,
    }
