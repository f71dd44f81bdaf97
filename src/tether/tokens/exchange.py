"""RFC 8693 token exchange: a token for an agent acting in the subject token's chain,
where every hop narrows (scope, audience, lifetime), the depth is capped and a cycle is
refused.

Every hop is a decision of the decision point, asked and recorded exactly as ``tether
authorize --action delegate`` would be: the identity handing the task on (the person, or
the subject token's client) ``delegate``-s it to the actor, for the person, through the
agents before. Grants, their ``--when`` conditions and the guardrails all apply; a deny is
recorded and is ``invalid_grant`` with the decision's reasons. An allow is recorded in the
transaction that records the new token (one commit for both; the token is returned only
once it is done), or on its own if no token comes of it. A person's token that carries ``may_act``
(RFC 8693 section 4.4) can be exchanged only by the agent it names (``sub`` or
``client_id`` = the agent's SPIFFE ID, ``iss`` if given = Tether's issuer); any other
agent is refused, and the refusal is recorded as a decision.

The person's groups are *carried in the token*: Tether sees the person's identity-provider
token only once, at the first exchange, so it copies the groups claim (the one the
``[[idp]]`` names, bounded by :data:`tether.idp.MAX_GROUPS`) into a ``groups`` claim
(RFC 9068 section 2.2.3.1) of every token of that delegation, signed with the rest. Each
decision made with such a token carries them (``AccessRequest.groups``), which keys the
decision cache. Resolving them at decision time would need a directory Tether does not
have; a malformed groups claim refuses the exchange rather than reading as "no groups".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tether.audit.record import Entry
from tether.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    TetherError,
)
from tether.idp import IdentityProviders
from tether.model import Agent
from tether.permissions import Permission
from tether.policy.decision import AccessRequest, Decision
from tether.services import Services
from tether.tokens.claims import MAX_TIME, IssuedToken, token_endpoint
from tether.tokens.issue import Issuer
from tether.tokens.records import Record
from tether.tokens.replay import UsedIds
from tether.tokens.scopes import allowed_to_all, fits_server, parse_scope, server_of
from tether.tokens.snapshot import Snapshots
from tether.tokens.verify import Verifier

__all__ = [
    "EXCHANGE",
    "TOKEN_TYPE_ACCESS",
    "TOKEN_TYPE_ID",
    "TOKEN_TYPE_JWT",
    "Decisions",
    "Exchange",
]

# Protocol identifiers (RFC 8693), not secrets.
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
TOKEN_TYPE_ID = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105
_MAY_ACT_MEMBERS = frozenset({"sub", "client_id", "iss"})

log = logging.getLogger("tether.tokens")


class Decisions(Protocol):
    """Where exchange hops are decided and recorded (the :class:`tether.core.Tether`)."""

    def decide_with_effect(
        self, requests: Sequence[AccessRequest]
    ) -> list[tuple[Decision, Entry]]: ...

    def record(self, decisions: Sequence[Decision]) -> list[Decision]: ...


@dataclass(frozen=True, slots=True)
class _Subject:
    """What an exchange takes from its subject token."""

    parent: str | None  # the parent token's jti (None for a person's IdP token)
    chain: tuple[str, ...]  # human first
    scope: list[str] | None  # None: a person's token (no scope of its own)
    expires: datetime
    groups: tuple[str, ...]
    family: str | None = None  # its token family (None: a person's token starts one)


class Exchange:
    def __init__(
        self,
        services: Services,
        people: IdentityProviders,
        decisions: Decisions,
        *,
        issuer: Issuer,
        verifier: Verifier,
        used: UsedIds,
        snapshots: Snapshots,
    ) -> None:
        self._settings = services.settings
        self._clock = services.clock
        self._log = services.events
        self._people = people
        self._decisions = decisions
        self._issuer = issuer
        self._verifier = verifier
        self._used = used
        self._snapshots = snapshots

    def exchange(
        self,
        actor: Agent,
        subject_token: str | None,
        subject_token_type: str | None,
        audience: str | None,
        scope: str | None,
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        """A token for ``actor`` acting in the subject token's chain; every hop narrows."""
        if not subject_token:
            raise InvalidRequest("subject_token is required")
        target = self._issuer.audience(audience)
        if subject_token_type == TOKEN_TYPE_ACCESS:
            subject = self._tether_subject(subject_token, actor)
        elif subject_token_type in (TOKEN_TYPE_JWT, TOKEN_TYPE_ID):
            subject = self._person_subject(subject_token, actor)
        else:
            raise InvalidRequest(
                f"subject_token_type must be {TOKEN_TYPE_ACCESS} (a Tether token) or "
                f"{TOKEN_TYPE_JWT} (a person's identity-provider token)"
            )
        chain, parent_exp = subject.chain, subject.expires
        if actor.id in chain:
            raise InvalidGrant(f"{actor.id} already acts in this chain: a cycle is refused")
        agents = [c for c in chain if not c.startswith("user:")] + [actor.id]
        if len(agents) > self._settings.max_chain_depth:
            raise InvalidGrant(
                f"delegation depth {len(agents)} is over the cap ({self._settings.max_chain_depth})"
            )
        lifetime = min(ttl or self._settings.token_ttl_default, parent_exp - self._clock())
        if lifetime <= timedelta(0):
            raise InvalidGrant("the subject token has expired")
        hop = self._decide_hop(subject, actor)
        try:
            issued, record = self._sign(actor, subject, agents, target, scope, lifetime)
            self._issuer.record(record.after(hop))  # the allow commits with its token
        except BaseException:
            self._record_alone(hop)  # decided but no token: the allow is on record still
            raise
        return issued

    def _sign(
        self,
        actor: Agent,
        subject: _Subject,
        agents: list[str],
        target: str,
        scope: str | None,
        lifetime: timedelta,
    ) -> tuple[IssuedToken, Record]:
        """The new token of the exchange (narrowed) and its record, not yet written."""
        chain, parent_exp = subject.chain, subject.expires
        holders = [c for c in chain if c.startswith("user:")] + agents
        granted = self._exchange_scope(holders, subject.scope, target, scope)
        person = next((c for c in chain if c.startswith("user:")), None)
        act: dict[str, Any] | None = None
        for agent_id in agents:  # earliest first; the outermost act is the current actor
            act = {"sub": agent_id, **({"act": act} if act else {})}
        claims: dict[str, Any] = {
            "sub": person.removeprefix("user:") if person else agents[0],
            "client_id": actor.id,
        }
        if person is not None or len(agents) > 1:
            claims["act"] = act
        if person is not None and subject.groups:
            claims["groups"] = list(subject.groups)
        known = self._snapshots.current().agents
        ceiling = min(
            [parent_exp, actor.expires_at] + [known[a].expires_at for a in agents if a in known]
        )  # never outlive the subject token, nor any agent of the chain
        return self._issuer.sign(
            claims,
            target,
            granted,
            lifetime,
            parent=subject.parent,
            ceiling=ceiling,
            family=subject.family,  # every hop stays in the subject token's family
        )

    def _record_alone(self, hop: Entry) -> None:
        try:
            self._log.record(hop)
        except TetherError as exc:  # no token either: the exchange fails with its own error
            log.error("an allowed delegation hop could not be recorded: %s", exc)

    def _decide_hop(self, subject: _Subject, actor: Agent) -> Entry:
        """The decision point decides this hop: the subject token's last identity hands
        the task to ``actor``, for the person, through the agents before. A deny is
        recorded and raised; an allow's event is returned, to commit with the token."""
        chain = subject.chain
        delegator = chain[-1]
        person = chain[0] if chain[0].startswith("user:") and chain[0] != delegator else None
        request = AccessRequest.of(
            delegator,
            "delegate",
            actor.id,
            on_behalf_of=person,
            chain=[c for c in chain[:-1] if not c.startswith("user:")],
            groups=subject.groups if chain[0].startswith("user:") else (),
        )
        [(decision, entry)] = self._decisions.decide_with_effect([request])
        if not decision.allowed:
            [decision] = self._decisions.record([decision])
            raise InvalidGrant("delegation denied: " + "; ".join(decision.reasons))
        return entry

    def _tether_subject(self, token: str, actor: Agent) -> _Subject:
        try:
            verified = self._verifier.verify(token, None)
        except InvalidToken as exc:
            raise InvalidGrant(f"subject_token rejected: {exc.description}") from None
        if verified.claims["aud"] != actor.id:
            raise InvalidGrant("the subject token's audience is not this client")
        exp = datetime.fromtimestamp(int(verified.claims["exp"]), UTC)
        return _Subject(
            verified.jti,
            verified.chain,
            list(verified.scope),
            exp,
            verified.groups,
            family=verified.family,
        )

    def _person_subject(self, token: str, actor: Agent) -> _Subject:
        endpoint = token_endpoint(self._settings.issuer)
        try:
            person = self._people.identify(token, audience=endpoint)
        except TetherError as exc:
            raise InvalidGrant(
                f"subject_token rejected: {exc.description} (a person's token for delegation "
                f"is addressed to {endpoint})"
            ) from None
        claims = person.claims
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not jti:
            raise InvalidGrant("the person's subject_token needs a jti (it is used once)")
        if not isinstance(exp, int) or isinstance(exp, bool) or abs(exp) > MAX_TIME:
            raise InvalidGrant("the person's subject_token needs a numeric exp")
        if person.groups_error is not None:
            raise InvalidGrant(f"the person's subject_token is refused: {person.groups_error}")
        self._check_may_act(claims, person.email, actor)
        try:
            self._used.use(f"subject:{jti}", actor.id, exp)
        except InvalidClient:
            raise InvalidGrant("the person's subject_token was already exchanged") from None
        expires = datetime.fromtimestamp(exp, UTC)
        return _Subject(None, (f"user:{person.email}",), None, expires, person.groups)

    def _check_may_act(self, claims: dict[str, Any], email: str, actor: Agent) -> None:
        """RFC 8693 section 4.4: when the person's token says who may act for them, only
        that agent may exchange it. A refusal is recorded as a deny decision."""
        if "may_act" not in claims:
            return
        issuer = self._settings.issuer
        may_act = claims["may_act"]
        problem: str | None = None
        if not isinstance(may_act, dict) or not may_act:
            problem = "its may_act claim is not an object naming the agent"
        elif not _MAY_ACT_MEMBERS.issuperset(may_act):
            unknown = sorted(set(may_act) - _MAY_ACT_MEMBERS)[0]
            problem = f"its may_act member {unknown!r} cannot be checked (sub, client_id, iss)"
        elif "sub" not in may_act and "client_id" not in may_act:
            problem = "its may_act names no agent (sub or client_id)"
        elif "iss" in may_act and may_act["iss"] != issuer:
            problem = f"its may_act names an actor of another issuer than {issuer}"
        elif any(may_act.get(k, actor.id) != actor.id for k in ("sub", "client_id")):
            problem = f"its may_act does not name {actor.id}"
        if problem is None:
            return
        reason = f"the person's token may be exchanged only by the agent it names: {problem}"
        person = f"user:{email}"
        self._decisions.record(
            [Decision(False, (person, actor.id), "delegate", actor.id, (reason,))]
        )
        raise InvalidGrant(reason)

    def _exchange_scope(
        self, holders: list[str], parent: list[str] | None, audience: str, requested: str | None
    ) -> list[str]:
        now = self._clock()
        grants = {h: self._snapshots.grants_of(h, now) for h in holders}
        if requested is None or not requested.strip():
            # Narrowest common ground: the subject's scope entries and the actor's own
            # grants that fit the audience, kept where every identity holds them.
            server = server_of(self._settings.issuer, audience)
            candidates = [Permission.parse(entry) for entry in parent or ()] + [
                Permission(g.action, g.resource)
                for g in grants[holders[-1]]
                if fits_server(g, server)
            ]
            kept = [p for p in candidates if allowed_to_all(p, holders, grants, parent)]
            if not kept:
                raise InvalidScope("no permission is held by every identity of the chain")
            return sorted({str(p) for p in kept})
        wanted = parse_scope(requested)
        for permission in wanted:
            if not allowed_to_all(permission, holders, grants, parent):
                raise InvalidScope(
                    f"{permission} is beyond the subject token's scope or some identity's grants"
                )
        return sorted({str(p) for p in wanted})
