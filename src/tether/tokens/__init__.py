"""Agent access tokens: RFC 7523 client authentication, RFC 9068 JWTs, verification,
introspection and revocation.

An agent proves who it is with a client assertion signed by its own registered key
(``private_key_jwt``): ``iss`` = ``sub`` = its SPIFFE ID, ``aud`` = the token endpoint,
an ``exp`` within minutes and a ``jti`` that is accepted once. It then gets a short-lived
``at+jwt`` bound to one audience (RFC 8707), whose scope is a subset of its grants.

:meth:`Tokens.verify` is the one verifier: EdDSA only, ``typ`` ``at+jwt``, required
claims, audience, ``exp``/``nbf`` with the configured leeway, keys only from Tether's own
set, revocation, and every identity of the chain active. Verified tokens are cached by
their hash until they expire or the state epoch moves.

Audiences (RFC 8707) are only those Tether knows: its own issuer, a gateway server that
exists (``<issuer>/mcp/NAME``), a configured ``resource_servers`` entry, or, for a
hand-off, a registered, active agent's ID. Anything else is ``invalid_target``.

Every hop of a token exchange (RFC 8693) is a decision of the decision point, asked and
recorded exactly as ``tether authorize --action delegate`` would be: the identity handing
the task on (the person, or the subject token's client) ``delegate``-s it to the actor,
for the person, through the agents before. Grants, their ``--when`` conditions and the
guardrails all apply; a deny is ``invalid_grant`` with the decision's reasons. A person's
token that carries ``may_act`` (RFC 8693 section 4.4) can be exchanged only by the agent
it names (``sub`` or ``client_id`` = the agent's SPIFFE ID, ``iss`` if given = Tether's
issuer); any other agent is refused, and the refusal is recorded as a decision.

The person's groups are *carried in the token*: Tether sees the person's identity-provider
token only once, at the first exchange, so it copies the groups claim (the one the
``[[idp]]`` names, bounded by :data:`tether.idp.MAX_GROUPS`) into a ``groups`` claim
(RFC 9068 section 2.2.3.1) of every token of that delegation, signed with the rest. Each
decision made with such a token carries them (``AccessRequest.groups``), which keys the
decision cache. Resolving them at decision time would need a directory Tether does not
have; a malformed groups claim refuses the exchange rather than reading as "no groups".
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
from sqlalchemy import Connection, delete, insert, select, update

from tether.audit.log import AuditLog
from tether.audit.record import Entry
from tether.callers import Caller
from tether.config import Settings
from tether.epoch import StateEpoch
from tether.errors import (
    Conflict,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    NotFound,
    TetherError,
    UnauthorizedClient,
)
from tether.grants import Grant, Grants
from tether.idp import MAX_GROUP_LENGTH, MAX_GROUPS, IdentityProviders
from tether.jose import read_header
from tether.keys import SigningKeys
from tether.model import Agent, AgentState
from tether.permissions import Permission, pattern_matches
from tether.policy.decision import AccessRequest, Decision
from tether.registry import Registry
from tether.store import Store, assertion_jtis, gateway_servers, issued_tokens

__all__ = [
    "ASSERTION_TYPE",
    "EXCHANGE",
    "TOKEN_TYPE_ACCESS",
    "TOKEN_TYPE_JWT",
    "Decisions",
    "IssuedToken",
    "Tokens",
    "VerifiedToken",
]

# Protocol identifiers (RFC 7523, RFC 8693), not secrets.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
TOKEN_TYPE_ID = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105
_TYP = ("at+jwt", "application/at+jwt")
_MAX_TIME = 253402300799  # 9999-12-31: anything later is malformed
_REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]
_SYSTEM = Caller.system("tokens")
_MAY_ACT_MEMBERS = frozenset({"sub", "client_id", "iss"})


class Decisions(Protocol):
    """Where exchange hops are decided and recorded (the :class:`tether.core.Tether`)."""

    def decide_all(self, requests: Sequence[AccessRequest]) -> list[Decision]: ...

    def record(self, decisions: Sequence[Decision]) -> list[Decision]: ...


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    jti: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class _Snapshot:
    epoch: int
    agents: dict[str, Agent]
    revoked: frozenset[str]


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    chain: tuple[str, ...]  # human first (if any), the current actor last

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def scope(self) -> tuple[str, ...]:
        return tuple(str(self.claims.get("scope", "")).split())

    @property
    def client_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def groups(self) -> tuple[str, ...]:
        """The person's identity-provider groups the token carries (checked on verify)."""
        return tuple(self.claims.get("groups", ()))

    def request(
        self, action: str, resource: str, context: dict[str, Any] | None = None
    ) -> AccessRequest:
        """The PDP question for doing ``action`` on ``resource`` with this token: its
        acting agent, the person it acts for (with their groups), the agents between,
        and its scope."""
        people = [c for c in self.chain if c.startswith("user:")]
        agents = [c for c in self.chain if not c.startswith("user:")]
        return AccessRequest.of(
            self.client_id,
            action,
            resource,
            on_behalf_of=people[0] if people else None,
            chain=agents[:-1],
            context=context,
            scope=self.scope,
            groups=self.groups if people else (),
        )


@dataclass(frozen=True, slots=True)
class _Subject:
    """What an exchange takes from its subject token."""

    parent: str | None  # the parent token's jti (None for a person's IdP token)
    chain: tuple[str, ...]  # human first
    scope: list[str] | None  # None: a person's token (no scope of its own)
    expires: datetime
    groups: tuple[str, ...]


class Tokens:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        keys: SigningKeys,
        registry: Registry,
        grants: Grants,
        log: AuditLog,
        epoch: StateEpoch,
        people: IdentityProviders,
        clock: Callable[[], datetime],
        *,
        decisions: Decisions,
    ) -> None:
        self._people = people
        self._decisions = decisions
        self._store = store
        self._settings = settings
        self._keys = keys
        self._registry = registry
        self._grants = grants
        self._log = log
        self._epoch = epoch
        self._clock = clock
        self._cache: dict[bytes, tuple[VerifiedToken, int, float]] = {}
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()

    @property
    def issuer(self) -> str:
        return self._settings.issuer

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/token"

    # ---- client authentication (RFC 7523) -----------------------------------------------

    def authenticate_client(self, assertion_type: str | None, assertion: str | None) -> Agent:
        """The active, owned agent whose registered key signed ``assertion``."""
        if assertion_type != ASSERTION_TYPE or not assertion:
            raise InvalidClient(
                f"client authentication needs client_assertion_type={ASSERTION_TYPE} "
                "and a client_assertion signed with the agent's key"
            )
        try:
            read_header(assertion, require_kid=False)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except (InvalidToken, jwt.PyJWTError) as exc:
            raise InvalidClient(f"client assertion rejected: {exc}") from None
        client = unverified.get("iss")
        if not isinstance(client, str) or unverified.get("sub") != client:
            raise InvalidClient("client assertion needs iss = sub = the agent's ID")
        try:
            agent = self._registry.get(_SYSTEM, client)
        except (NotFound, InvalidRequest):
            raise InvalidClient("unknown client") from None
        try:
            claims = jwt.decode(
                assertion,
                jwt.PyJWK(
                    {"kty": "OKP", "crv": "Ed25519", "x": agent.public_key}, algorithm="EdDSA"
                ),
                algorithms=["EdDSA"],
                audience=[self.token_endpoint, self.issuer],
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,  # checked by _check_times, on Tether's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            self._check_times(claims)
        except jwt.PyJWTError as exc:
            raise InvalidClient(f"client assertion rejected: {exc}") from None
        now = self._clock()
        latest = now + self._settings.assertion_ttl_max + self._settings.token_leeway
        if claims["exp"] > latest.timestamp():
            raise InvalidClient("client assertion lives too long: exp must be within minutes")
        self._use_jti(str(claims["jti"]), agent.id, claims["exp"])
        if agent.state is not AgentState.ACTIVE:
            raise UnauthorizedClient(f"agent {agent.name} is {agent.state.value}", agent.id)
        if agent.owner is None:
            raise UnauthorizedClient(f"agent {agent.name} has no owner", agent.id)
        return agent

    def _use_jti(self, jti: str, client: str, exp: float) -> None:
        """Record a used ID until its exact ``exp`` (rounded *up* to the second: the row
        outlives every instant the token is accepted, exp plus the leeway)."""
        expires = datetime.fromtimestamp(math.ceil(exp), UTC)
        key = hashlib.sha256(f"{client}|{jti}".encode()).hexdigest()
        try:
            with self._store.write() as conn:
                conn.execute(
                    insert(assertion_jtis).values(jti=key, client_id=client, expires_at=expires)
                )
        except Conflict:
            raise InvalidClient("client assertion replayed: its jti was used before") from None

    def purge(self) -> int:
        """Forget used assertion and subject-token IDs once they could no longer be
        replayed (past their exp and the leeway); returns how many."""
        horizon = self._clock() - self._settings.token_leeway
        with self._store.write() as conn:
            result = conn.execute(
                delete(assertion_jtis).where(assertion_jtis.c.expires_at < horizon)
            )
        return int(result.rowcount or 0)

    # ---- issuing -------------------------------------------------------------------------

    def client_credentials(
        self, agent: Agent, audience: str | None, scope: str | None, ttl: timedelta | None = None
    ) -> IssuedToken:
        """An access token for ``agent`` itself (no person in the chain)."""
        target = self._audience(audience)
        grants = self._grants.list(_SYSTEM, principal=agent.id)
        granted = self._scope(grants, target, scope)
        claims = {"sub": agent.id, "client_id": agent.id}
        return self._issue(claims, target, granted, ttl, parent=None, ceiling=agent.expires_at)

    def _audience(self, audience: str | None) -> str:
        """``audience`` if Tether knows it (see the module docstring); else invalid_target."""
        if not audience or not isinstance(audience, str) or len(audience) > 512:
            raise InvalidTarget("name the resource the token is for: resource= or audience=")
        if any(c.isspace() for c in audience):
            raise InvalidTarget("one audience per token, without spaces")
        if audience == self.issuer or audience in self._settings.resource_servers:
            return audience
        server = self._server_of(audience)
        if server is not None:
            with self._store.read() as conn:
                known = conn.execute(
                    select(gateway_servers.c.name).where(gateway_servers.c.name == server)
                ).first()
            if known is None:
                raise InvalidTarget(f"{audience} names no gateway server (tether gateway list)")
            return audience
        if audience.startswith("spiffe://"):
            agent = self._snapshot().agents.get(audience)
            if agent is None or agent.state is not AgentState.ACTIVE:
                raise InvalidTarget(f"{audience} is not a registered, active agent")
            return audience
        raise InvalidTarget(
            f"unknown audience {audience!r}: tokens are for {self.issuer}, a gateway server "
            f"({self.issuer}/mcp/NAME), a configured resource server (resource_servers in "
            "tether.toml) or, for a hand-off, an active agent's ID"
        )

    def _scope(self, grants: list[Grant], audience: str, requested: str | None) -> list[str]:
        if requested is None or not requested.strip():
            server = self._server_of(audience)
            fit = [
                f"{g.action}:{g.resource}"
                for g in grants
                if server is None or g.resource.split("/", 1)[0] in (server, "*", "**")
            ]
            if not fit:
                raise InvalidScope(f"the agent holds no grant that fits {audience}")
            return sorted(set(fit))
        wanted = _parse_scope(requested)
        server = self._server_of(audience)
        for permission in wanted:
            if server is not None and permission.resource.split("/", 1)[0] != server:
                raise InvalidScope(f"{permission} is not for {audience}")
            if not any(_within(permission, g) for g in grants):
                raise InvalidScope(f"{permission} is beyond the agent's grants")
        return sorted({str(p) for p in wanted})

    def _server_of(self, audience: str) -> str | None:
        prefix = f"{self.issuer}/mcp/"
        return audience[len(prefix) :] if audience.startswith(prefix) else None

    def _issue(
        self,
        claims: dict[str, Any],
        audience: str,
        scope: list[str],
        ttl: timedelta | None,
        parent: str | None,
        ceiling: datetime | None = None,
    ) -> IssuedToken:
        lifetime = ttl or self._settings.token_ttl_default
        if lifetime > self._settings.token_ttl_max or lifetime <= timedelta(0):
            raise InvalidRequest("token lifetime above the configured maximum")
        now = self._clock()
        expires = now + lifetime
        if ceiling is not None and expires > ceiling:  # never outlive the subject token
            expires = ceiling
            lifetime = expires - now
        jti = secrets.token_urlsafe(16)
        payload = {
            **claims,
            "iss": self.issuer,
            "aud": audience,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": jti,
            "scope": " ".join(scope),
        }
        kid, key = self._keys.current()
        token = jwt.encode(payload, key, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": kid})
        with self._store.write() as conn:
            conn.execute(
                insert(issued_tokens).values(
                    jti=jti,
                    parent_jti=parent,
                    subject=str(payload["sub"]),
                    client_id=str(payload["client_id"]),
                    audience=audience,
                    scope=payload["scope"],
                    issued_at=now,
                    expires_at=expires,
                    revoked_at=None,
                )
            )
            self._log.append(
                conn,
                Entry.of(
                    "token.issued" if parent is None else "token.exchanged",
                    actor=str(payload["client_id"]),
                    subject=str(payload["sub"]),
                    chain=_chain(payload),
                    action="token/issue" if parent is None else "token/exchange",
                    resource=audience,
                    decision="allow",
                    detail={
                        "jti": jti,
                        "aud": audience,
                        "scope": payload["scope"],
                        "parent": parent,
                    },
                ),
            )
        return IssuedToken(token, int(lifetime.total_seconds()), payload["scope"], jti)

    # ---- delegation (RFC 8693) ---------------------------------------------------------

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
        target = self._audience(audience)
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
        self._decide_hop(subject, actor)
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
        known = self._snapshot().agents
        ceiling = min(
            [parent_exp, actor.expires_at] + [known[a].expires_at for a in agents if a in known]
        )  # never outlive the subject token, nor any agent of the chain
        return self._issue(
            claims, target, granted, lifetime, parent=subject.parent, ceiling=ceiling
        )

    def _decide_hop(self, subject: _Subject, actor: Agent) -> None:
        """The decision point decides (and records) this hop: the subject token's last
        identity hands the task to ``actor``, for the person, through the agents before."""
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
        [decision] = self._decisions.decide_all([request])
        if not decision.allowed:
            raise InvalidGrant("delegation denied: " + "; ".join(decision.reasons))

    def _tether_subject(self, token: str, actor: Agent) -> _Subject:
        try:
            verified = self.verify(token, None)
        except InvalidToken as exc:
            raise InvalidGrant(f"subject_token rejected: {exc.description}") from None
        if verified.claims["aud"] != actor.id:
            raise InvalidGrant("the subject token's audience is not this client")
        exp = datetime.fromtimestamp(int(verified.claims["exp"]), UTC)
        return _Subject(verified.jti, verified.chain, list(verified.scope), exp, verified.groups)

    def _person_subject(self, token: str, actor: Agent) -> _Subject:
        try:
            person = self._people.identify(token, audience=self.token_endpoint)
        except TetherError as exc:
            raise InvalidGrant(
                f"subject_token rejected: {exc.description} (a person's token for delegation "
                f"is addressed to {self.token_endpoint})"
            ) from None
        claims = person.claims
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not jti:
            raise InvalidGrant("the person's subject_token needs a jti (it is used once)")
        if not isinstance(exp, int) or isinstance(exp, bool) or abs(exp) > _MAX_TIME:
            raise InvalidGrant("the person's subject_token needs a numeric exp")
        if person.groups_error is not None:
            raise InvalidGrant(f"the person's subject_token is refused: {person.groups_error}")
        self._check_may_act(claims, person.email, actor)
        try:
            self._use_jti(f"subject:{jti}", actor.id, exp)
        except InvalidClient:
            raise InvalidGrant("the person's subject_token was already exchanged") from None
        expires = datetime.fromtimestamp(exp, UTC)
        return _Subject(None, (f"user:{person.email}",), None, expires, person.groups)

    def _check_may_act(self, claims: dict[str, Any], email: str, actor: Agent) -> None:
        """RFC 8693 section 4.4: when the person's token says who may act for them, only
        that agent may exchange it. A refusal is recorded as a deny decision."""
        if "may_act" not in claims:
            return
        may_act = claims["may_act"]
        problem: str | None = None
        if not isinstance(may_act, dict) or not may_act:
            problem = "its may_act claim is not an object naming the agent"
        elif not _MAY_ACT_MEMBERS.issuperset(may_act):
            unknown = sorted(set(may_act) - _MAY_ACT_MEMBERS)[0]
            problem = f"its may_act member {unknown!r} cannot be checked (sub, client_id, iss)"
        elif "sub" not in may_act and "client_id" not in may_act:
            problem = "its may_act names no agent (sub or client_id)"
        elif "iss" in may_act and may_act["iss"] != self.issuer:
            problem = f"its may_act names an actor of another issuer than {self.issuer}"
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
        grants = {h: self._grants.list(_SYSTEM, principal=h) for h in holders}
        if requested is None or not requested.strip():
            # Narrowest common ground: the subject's scope entries and the actor's own
            # grants that fit the audience, kept where every identity holds them.
            actor_grants = grants[holders[-1]]
            server = self._server_of(audience)
            candidates = [Permission.parse(entry) for entry in parent or ()] + [
                Permission(g.action, g.resource)
                for g in actor_grants
                if server is None or g.resource.split("/", 1)[0] in (server, "*", "**")
            ]
            candidates = [p for p in candidates if self._allowed_to_all(p, holders, grants, parent)]
            kept = candidates
            if not kept:
                raise InvalidScope("no permission is held by every identity of the chain")
            return sorted({str(p) for p in kept})
        wanted = _parse_scope(requested)
        for permission in wanted:
            if not self._allowed_to_all(permission, holders, grants, parent):
                raise InvalidScope(
                    f"{permission} is beyond the subject token's scope or some identity's grants"
                )
        return sorted({str(p) for p in wanted})

    @staticmethod
    def _allowed_to_all(
        permission: Permission,
        holders: list[str],
        grants: dict[str, list[Grant]],
        parent: list[str] | None,
    ) -> bool:
        if parent is not None and not any(
            _within(permission, _as_grant(Permission.parse(entry))) for entry in parent
        ):
            return False
        return all(any(_within(permission, g) for g in grants[h]) for h in holders)

    # ---- verifying -----------------------------------------------------------------------

    def verify(self, token: str, audience: str | None) -> VerifiedToken:
        """Verify a Tether access token for ``audience`` (None: any audience, for
        introspection). Raises :class:`InvalidToken` with the reason."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        epoch = self._epoch.current()
        now = self._clock().timestamp()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] == epoch and now < hit[2]:
            verified = hit[0]
        else:
            verified = self._verify_cold(token)
            exp = float(verified.claims["exp"]) + self._settings.token_leeway.total_seconds()
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[digest] = (verified, epoch, exp)
        if audience is not None and verified.claims["aud"] != audience:
            raise InvalidToken("token audience is another resource")
        return verified

    def _verify_cold(self, token: str) -> VerifiedToken:
        header = read_header(token)
        if str(header.get("typ", "")).lower() not in _TYP:
            raise InvalidToken("token typ must be at+jwt")
        key = self._keys.verifier(header["kid"])
        if key is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                issuer=self.issuer,
                options={
                    "require": _REQUIRED,
                    "verify_aud": False,  # checked by verify(), per resource
                    "verify_exp": False,  # checked by _check_times, on Tether's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            self._check_times(claims)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from None
        if not isinstance(claims.get("aud"), str):
            raise InvalidToken("token must name exactly one audience")
        groups = claims.get("groups", [])
        if (
            not isinstance(groups, list)
            or len(groups) > MAX_GROUPS
            or not all(isinstance(g, str) and 0 < len(g) <= MAX_GROUP_LENGTH for g in groups)
        ):
            raise InvalidToken("token groups must be a list of group names")
        snapshot = self._snapshot()
        if str(claims["jti"]) in snapshot.revoked:
            raise InvalidToken("token was revoked")
        chain = _chain(claims)
        now = self._clock()
        for ident in chain:
            if ident.startswith("user:"):
                continue
            agent = snapshot.agents.get(ident)
            if agent is None:
                raise InvalidToken(f"{ident} in the token's chain is unknown")
            if (
                agent.state is not AgentState.ACTIVE
                or agent.owner is None
                or now >= agent.expires_at
            ):
                raise InvalidToken(f"{ident} in the token's chain is not active")
        return VerifiedToken(claims, chain)

    def _check_times(self, claims: dict[str, Any]) -> None:
        """``exp``, ``nbf`` and ``iat`` against Tether's clock, with the leeway."""
        now = self._clock().timestamp()
        leeway = self._settings.token_leeway.total_seconds()
        for name in ("exp", "nbf", "iat"):
            if name in claims and (
                isinstance(claims[name], bool)
                or not isinstance(claims[name], int | float)
                or not math.isfinite(claims[name])
                or abs(claims[name]) > _MAX_TIME
            ):
                raise jwt.InvalidTokenError(f"{name} must be a number")
        if "exp" in claims and claims["exp"] <= now - leeway:
            raise jwt.ExpiredSignatureError("the token has expired")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise jwt.ImmatureSignatureError("the token is not yet valid")
        if "iat" in claims and claims["iat"] > now + leeway:
            raise jwt.ImmatureSignatureError("the token was issued in the future")

    def _snapshot(self) -> _Snapshot:
        """Agents and revoked token IDs as of the current state epoch (every revocation
        and every agent change moves it), so a cold verify reads nothing from the store."""
        epoch = self._epoch.current()
        snapshot = self._snap
        if snapshot is not None and snapshot.epoch == epoch:
            return snapshot
        horizon = self._clock() - self._settings.token_leeway
        agents: dict[str, Agent] = {str(a.id): a for a in self._registry.list(_SYSTEM)}
        with self._store.read() as conn:
            revoked = frozenset(
                conn.execute(
                    select(issued_tokens.c.jti).where(
                        issued_tokens.c.revoked_at.is_not(None),
                        issued_tokens.c.expires_at > horizon,
                    )
                ).scalars()
            )
        snapshot = _Snapshot(epoch, agents, revoked)
        self._snap = snapshot
        return snapshot

    # ---- introspection and revocation ----------------------------------------------------

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` for anything that does not verify."""
        try:
            verified = self.verify(token, None)
        except TetherError:
            return {"active": False}
        return {"active": True, "token_type": "Bearer", **verified.claims}

    def revoke(self, by: Caller, token: str) -> int:
        """Revoke a token and every token exchanged from it; returns how many."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return 0  # RFC 7009: an invalid token is not an error
        jti = str(claims.get("jti", ""))
        now = self._clock()
        with self._store.write() as conn:
            row = conn.execute(select(issued_tokens).where(issued_tokens.c.jti == jti)).first()
            if row is None:
                return 0
            if not by.is_admin and by.subject not in (row.client_id, f"agent:{row.client_id}"):
                raise InvalidClient("a token can be revoked only by its client or an admin")
            family = token_family(conn, [jti])
            conn.execute(
                update(issued_tokens)
                .where(issued_tokens.c.jti.in_(family), issued_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            self._log.append(
                conn,
                Entry.of(
                    "token.revoked",
                    actor=by.subject,
                    subject=row.subject,
                    detail={"jti": jti, "family": family},
                ),
            )
            self._epoch.bump(conn)
        return len(family)


def token_family(conn: Connection, roots: Sequence[str]) -> list[str]:
    """``roots`` and every token exchanged from them, at any depth (one query a level)."""
    family = list(dict.fromkeys(roots))
    seen = set(family)
    level = family
    while level:
        children = conn.execute(
            select(issued_tokens.c.jti).where(issued_tokens.c.parent_jti.in_(level))
        ).scalars()
        level = [jti for jti in children if jti not in seen]
        seen.update(level)
        family.extend(level)
    return family


def _parse_scope(text: str) -> list[Permission]:
    try:
        return [Permission.parse(entry) for entry in text.split()]
    except InvalidRequest as exc:
        raise InvalidScope(f"malformed scope: {exc.description}") from None


def _within(permission: Permission, grant: Grant) -> bool:
    """Whether ``permission`` asks for no more than ``grant`` gives."""
    if grant.action not in ("*", permission.action):
        return False
    inner, outer = permission.resource, grant.resource
    if outer in (inner, "**"):
        return True
    if "*" not in inner:
        return pattern_matches(outer, inner) or (outer == "*" and permission.action == "delegate")
    return outer.endswith("/**") and inner.startswith(outer[:-2]) and inner != outer[:-3]


def _as_grant(permission: Permission) -> Grant:
    """A token-scope entry seen as a grant, to reuse the containment rule."""
    from tether.principals import Principal

    epoch = datetime.min.replace(tzinfo=UTC)
    return Grant(
        id="scope",
        principal=Principal("agent", "-"),
        action=permission.action,
        resource=permission.resource,
        condition=None,
        broad=False,
        granted_by="",
        reason="",
        created_at=epoch,
        expires_at=epoch,
        revoked_at=None,
        revoked_by=None,
    )


def _chain(claims: dict[str, Any]) -> tuple[str, ...]:
    actors: list[str] = []
    act = claims.get("act")
    while isinstance(act, dict):
        actors.append(str(act.get("sub")))
        act = act.get("act")
    subject = str(claims["sub"])
    people = [] if subject.startswith("spiffe://") else [f"user:{subject}"]
    # act nests outermost = current actor: reverse to get the earliest agent first.
    agents = list(reversed(actors)) or [str(claims["client_id"])]
    return tuple(people + agents)
