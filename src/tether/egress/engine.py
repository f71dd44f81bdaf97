"""The egress proxy's engine: every API call an agent sends through Tether is a recorded
decision, forwarded only when allowed, with the destination's credential injected on the
way out and taken out of what comes back.

:meth:`EgressProxy.exchange` does, in order, failing closed at every step (each refusal
recorded, with the agent as actor once its token verified, even for another audience;
``anonymous`` when it does not verify):

1. the agent's token (:meth:`EgressProxy.authenticate`): 401 ``invalid_token`` with
   ``WWW-Authenticate: Bearer`` on the reverse-proxy route, 407 with
   ``Proxy-Authenticate: Bearer realm="tether"`` through the forward proxy;
2. the destination must exist (404 ``unknown_destination``) and the token's audience
   cover it (401); the method must be an HTTP action Tether decides (405); the body at
   most ``[egress] max_request_bytes`` (413); the agent's own token may not be in its
   target or body, as it is or percent-encoded (400: it would go upstream);
3. the target normalised (:mod:`tether.egress.paths`; 400 ``invalid_target``), a
   request that asks the destination for another method, path or host than its own
   refused (:mod:`tether.egress.overrides`: ``X-HTTP-Method-Override``, ``_method``...;
   400 ``invalid_request``), what rules may read of the request mapped
   (:mod:`tether.egress.context`; 403 when a rule could read it two ways), and the
   decision on ``METHOD`` ``NAME/<path>`` with the whole delegation chain, labels, the
   data flow, budgets and approvals (:mod:`tether.egress.admission`), written to the
   audit log *before* anything is sent: a deny is 403 ``access_denied`` with the reasons
   and the decision's ``seq``, a held request 403 ``approval_required`` naming the
   approval (also in the ``tether-approval`` header: the agent sends the same request
   again once approved);
4. the credential injected and the request sent (:mod:`tether.egress.inject`,
   :mod:`tether.egress.upstream`); the agent's token never goes upstream. A redirect
   whose ``Location`` stays within the destination is followed (at most
   ``[egress] max_redirects`` times), each hop decided and recorded as a request of its
   own: 303 becomes a GET without body (a HEAD stays a HEAD), so do 301 and 302 after a
   POST (as browsers and most clients do); 307 and 308 keep the method and the body. A
   ``Location`` outside the destination is refused (502 ``redirect_refused``, recorded),
   and so is one hop too many (502 ``too_many_redirects``). An OAuth destination that
   answers 401 gets a fresh access token and the request once more;
5. the injected secrets taken out of the answer's headers and body, and, with
   ``[guard] scan_results``, any other secret of a textual body
   (:mod:`tether.egress.results`);
6. the result recorded (``egress.result``: status, bytes received and sent, latency,
   what was redacted) and counted against the grants' byte budgets. A destination that
   cannot be reached or answers unusably is 502 (504 for a timeout), recorded as
   ``failed``.

A killed agent's exchanges in flight are cancelled (403 ``agent_killed``: nothing more is
forwarded) and the connections faces registered for it closed (:mod:`tether.egress.
connections`), in this process at once and in every other within the state epoch.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar
from urllib.parse import unquote, unquote_to_bytes

import anyio
from anyio import to_thread

from tether.core import Tether
from tether.egress.admission import Admission, Judged, Stop
from tether.egress.connections import Authenticated, Connections
from tether.egress.exchange import Answer, NotForEgress, Outbound, actor_of, refusal
from tether.egress.forwarding import Forwarding
from tether.egress.upstream import Resolver
from tether.errors import InvalidRequest, InvalidToken, NotFound, TetherError
from tether.permissions import HTTP_ACTIONS
from tether.tokens import VerifiedToken
from tether.tokens.scopes import destination_of
from tether.upstreams.destinations import Destination

__all__ = ["KNOWN_FOR", "REMEMBERED", "EgressProxy"]

KNOWN_FOR = 1.0  # seconds a destination looked up (or found missing) is remembered
REMEMBERED = 1024  # look-ups remembered at most (names and hosts are the agent's to choose)
_ALLOW = ", ".join(HTTP_ACTIONS)
K = TypeVar("K")
V = TypeVar("V")


class EgressProxy:
    """The engine of the egress proxy of ``tether`` (see the module docstring); its faces
    read requests into :class:`Outbound` and send back the :class:`Answer`. Run
    :meth:`running` around serving. ``resolve``: how destination hosts are resolved
    (tests point names at loopback addresses)."""

    def __init__(
        self,
        tether: Tether,
        *,
        resolve: Resolver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tether = tether
        self.connections = Connections(tether)
        self.admission = Admission(tether)
        self.forwarding = Forwarding(tether, self.admission, resolve=resolve)
        self._monotonic = monotonic
        self._known: _Recent[str, Destination | None] = _Recent()
        self._hosts: _Recent[tuple[str, int], list[Destination]] = _Recent()

    # ---- what faces ask ------------------------------------------------------------------

    def authenticate(
        self, credentials: str | None, destination: str | None = None
    ) -> VerifiedToken:
        """The agent's Tether token, for the egress proxy: audience ``<issuer>/egress``
        (any destination) or ``<issuer>/egress/NAME`` (``NAME`` only: when
        ``destination`` is given, it must be that one). Raises :class:`InvalidToken` with
        the reason. A token bound to a key (a ``cnf`` claim: DPoP, mTLS) is refused: the
        proxy cannot check its proof of possession yet, and a bound token must not be
        usable as a bearer."""
        if not credentials:
            raise InvalidToken("no token: send the agent's Tether token as a Bearer")
        token = self.tether.tokens.verify(credentials, None)
        issuer, actor = self.tether.settings.issuer, token.client_id
        covered = destination_of(issuer, str(token.claims["aud"]))
        if covered is None:
            raise NotForEgress(
                f"token audience is another resource: the egress proxy takes tokens for "
                f"{issuer}/egress or {issuer}/egress/NAME",
                actor,
            )
        if destination is not None and covered and covered != destination:
            raise NotForEgress(
                f"token is for egress destination {covered}, not {destination}", actor
            )
        if "cnf" in token.claims:
            raise NotForEgress(
                "token is bound to a key (cnf): the egress proxy does not check proof of "
                "possession (DPoP) yet, so it refuses bound tokens",
                actor,
            )
        return Authenticated(token.claims, token.chain, bearer=credentials)

    def destinations_at(self, host: str, port: int) -> list[Destination]:
        """The destinations served at ``host``:``port`` (remembered for at most
        :data:`KNOWN_FOR` seconds; raises TetherError when the store cannot say)."""
        key = (host.lower().rstrip(".").strip("[]"), port)
        now = self._monotonic()
        hit = self._hosts.get(key, now)
        if hit is not None:
            return list(hit[0])
        found = self.tether.destinations.by_host(*key)
        self._hosts.put(key, found, now)
        return list(found)

    def refuse(self, actor: str, why: str, resource: str, *, action: str = "CONNECT") -> None:
        """Record a refusal that is not a decision (a bad CONNECT, no token)."""
        self.admission.refuse(actor, why, resource, action)

    # ---- the exchange --------------------------------------------------------------------

    async def exchange(self, credentials: str | None, outbound: Outbound) -> Answer:
        """The answer to one request of an agent (see the module docstring); never
        raises for anything the agent or the destination did."""
        try:
            token, destination, judged = await to_thread.run_sync(
                self._admit, credentials, outbound
            )
        except Stop as stop:
            return stop.answer
        assert isinstance(token, Authenticated)
        killed = False
        with anyio.CancelScope() as scope:

            def cancel() -> None:
                nonlocal killed
                killed = True
                scope.cancel()

            connection = self.connections.open(token, cancel)
            try:
                # a kill that committed before the connection was registered did not see
                # it: its epoch has moved, so the token no longer verifies
                await to_thread.run_sync(self.tether.tokens.verify, token.bearer, None)
            except TetherError:
                cancel()
            try:
                return await self.forwarding.forward(token, destination, outbound, judged)
            finally:
                connection.close()
        if killed:
            why = "the agent was killed or its token stopped verifying: the request was cancelled"
            await to_thread.run_sync(self.forwarding.cancelled, token, outbound.method, judged, why)
            return refusal(403, "agent_killed", why)
        raise anyio.get_cancelled_exc_class()  # cancelled from outside: pass it on

    def _admit(
        self, credentials: str | None, outbound: Outbound
    ) -> tuple[VerifiedToken, Destination, Judged]:
        """Steps 1-3 of the module docstring (on a worker thread: they use the store)."""
        name, method = outbound.destination, outbound.method
        try:
            token = self.authenticate(credentials)
        except TetherError as exc:  # named when the token verified, for another use
            self.refuse(actor_of(exc), exc.description, f"{name}/*", action=method)
            raise Stop(_unauthenticated(exc.description, outbound)) from None
        actor = token.client_id
        try:
            destination = self._destination(name)
        except TetherError as exc:
            why = f"the request was not made: {exc.description}"
            self.refuse(actor, why, f"{name}/*", action=method)
            raise Stop(refusal(503, "temporarily_unavailable", why)) from None
        if destination is None:
            why = f"no egress destination {name} (tether egress list)"
            self.refuse(actor, why, f"{name}/*", action=method)
            raise Stop(refusal(404, "unknown_destination", why))
        covered = destination_of(self.tether.settings.issuer, str(token.claims["aud"]))
        if covered and covered != destination.name:
            why = f"token is for egress destination {covered}, not {destination.name}"
            self.refuse(actor, why, f"{name}/*", action=method)
            raise Stop(_unauthenticated(why, outbound))
        self._check_request(token, outbound, credentials or "")
        judged = self.admission.judge(
            token,
            destination,
            method,
            outbound.target,
            outbound.headers,
            outbound.body,
            absolute=outbound.mode == "forward",
        )
        return token, destination, judged

    def _check_request(self, token: VerifiedToken, outbound: Outbound, bearer: str) -> None:
        """The method, the body's size, and no agent token in what would go upstream."""
        actor, method, whole = token.client_id, outbound.method, f"{outbound.destination}/*"
        if method not in HTTP_ACTIONS:
            why = f"the method {method[:16]!r} is not one the egress proxy decides ({_ALLOW})"
            self.refuse(actor, why, whole, action=method[:16])
            raise Stop(refusal(405, "method_not_allowed", why, headers=(("allow", _ALLOW),)))
        limit = self.tether.settings.egress.max_request_bytes
        if len(outbound.body) > limit:
            why = f"the request body is larger than {limit} bytes ([egress] max_request_bytes)"
            self.refuse(actor, why, whole, action=method)
            raise Stop(refusal(413, "request_too_large", why))
        if bearer and _carried(bearer, outbound):
            why = "the request carries the agent's Tether token in its target or body: not sent"
            self.refuse(actor, why, whole, action=method)
            raise Stop(refusal(400, "invalid_request", why))

    def _destination(self, name: str) -> Destination | None:
        now = self._monotonic()
        hit = self._known.get(name, now)
        if hit is not None:
            return hit[0]
        try:
            found: Destination | None = self.tether.destinations.get(name)
        except (NotFound, InvalidRequest):  # none by that name, or not a name at all
            found = None
        self._known.put(name, found, now)
        return found

    # ---- lifetime ------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve within this: the kill watcher runs (a kill closes the agent's connections
        and cancels its exchanges in flight; an epoch move closes those whose token no
        longer verifies), and the destinations' connection pools are closed at the end."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self.connections.watching)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.forwarding.aclose()


def _carried(bearer: str, outbound: Outbound) -> bool:
    """Whether the agent's token is in the request's target or body, as it is or
    percent-encoded (the normaliser decodes the target, a form body's reader decodes it)."""
    target, body = outbound.target, outbound.body
    return (
        bearer in target
        or bearer in unquote(target)
        or bearer.encode() in body
        or (b"%" in body and bearer.encode() in unquote_to_bytes(body))
    )


class _Recent(Generic[K, V]):
    """Look-ups remembered until a deadline, at most :data:`REMEMBERED` of them: the keys
    come from agents (a destination's name, a ``CONNECT`` host), so a full memory drops
    what expired, then everything, rather than grow without bound."""

    def __init__(self) -> None:
        self._entries: dict[K, tuple[V, float]] = {}

    def get(self, key: K, now: float) -> tuple[V] | None:
        """``(value,)`` while remembered, else None."""
        hit = self._entries.get(key)
        return (hit[0],) if hit is not None and now < hit[1] else None

    def put(self, key: K, value: V, now: float) -> None:
        """Remember ``value`` for :data:`KNOWN_FOR` seconds from ``now``."""
        if key not in self._entries and len(self._entries) >= REMEMBERED:
            self._entries = {k: e for k, e in self._entries.items() if now < e[1]}
            if len(self._entries) >= REMEMBERED:
                self._entries.clear()
        self._entries[key] = (value, now + KNOWN_FOR)

    def __len__(self) -> int:
        return len(self._entries)


def _unauthenticated(why: str, outbound: Outbound) -> Answer:
    if outbound.mode == "forward":
        challenge = ("proxy-authenticate", 'Bearer realm="tether"')
        return refusal(407, "invalid_token", why, headers=(challenge,))
    value = 'Bearer realm="tether", error="invalid_token"'
    return refusal(401, "invalid_token", why, headers=(("www-authenticate", value),))
