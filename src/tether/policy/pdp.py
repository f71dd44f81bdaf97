"""The decision point (PDP): the delegation rule, evaluated with Cedar, cached per epoch.

A request made for a person through a chain of agents is allowed only when the person
*and every agent of the chain* may make it, it is inside the token's scope (when one is
given) and no guardrail forbids it. Every identity is evaluated with cedarpy against its
own grants (compiled to ``permit`` policies) and the guardrails; any error on the way is
a deny with the reason (fail closed).

A ``delegate`` request is one hop of a delegation: the principal (the identity handing
the task on) hands it to the agent named as the resource, for ``on_behalf_of`` through
``chain``. The hop is the principal's act, so only the principal needs a ``delegate``
grant (with its ``--when`` condition); the person and the earlier agents need none, but a
guardrail that forbids the hop for any of them still denies it. A person handing their
own task to an agent (a ``user:`` principal, alone) needs no grant either: what the agent
may then do stays bounded by the person's own grants. Token exchange asks exactly this
question for every hop (see :mod:`tether.tokens`), so ``tether authorize --action
delegate`` answers what an exchange would.

**One door.** Nothing outside :mod:`tether.core` calls :meth:`DecisionPoint.decide`:
every allow of an agent's action goes through :meth:`tether.core.Tether.decide_all` (or
``authorize``), which records it before it is used, or ``decide_with_effect``, whose
caller records it in the transaction of the effect it allows (a token exchange's token,
returned only once both are committed), and a listing is filtered through
:meth:`tether.core.Tether.visible`, which hands back the visible items, never a
:class:`Decision`, so it can hide but never allow.

**Inputs.** The Cedar context is the caller's (``AccessRequest.context``) together with
what the server computes, the decision inputs (:mod:`tether.policy.inputs`): the built-in
``chain_depth``, ``on_behalf_of``, ``time``, ``hour``, ``args`` and ``session`` and any
passed to the constructor (``risk``). A caller may set none of them. The decision cache
is keyed by the request and the key part of every input a policy reads; an uncachable
one (the clock) bypasses the cache, and its decisions say ``cached: false``.

**Arguments, session, labels, approval.** ``context.args`` (the call's arguments,
:mod:`tether.policy.args`) and ``context.session`` (the labels the work has touched) come
from server-computed fields of the request, and ``resource.labels`` from the label source
(:mod:`tether.policy.labels`, one snapshot per compiled state). Inputs no policy reads are
not computed at all (unread arguments are never mapped), and the cache key is the request
*without* its arguments, session and approval, plus the key part of each input a policy
reads: calls that differ only in arguments no policy reads share a decision. Arguments
that cannot be mapped are a deny that says why. A decision *held* for approval
(:mod:`tether.policy.verdict`) becomes an allow, naming the approval, when the request
carries ``approval`` (the ID of an approval the gateway consumed for this very call);
callers of the API cannot set it.

The person's identity-provider groups come with the request (``AccessRequest.groups``,
carried in Tether's delegated tokens) and reach Cedar as ``User.groups``; being a field
of the request they are part of the decision cache key, and the compiled entities are
cached per chain *and* groups.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import cedarpy

from tether.callers import Caller
from tether.errors import InvalidRequest
from tether.grants import Grants
from tether.permissions import Permission, check_action, check_resource
from tether.policy.args import Bounds, Undecidable
from tether.policy.cache import cache_key, finish
from tether.policy.decision import AccessRequest, Decision
from tether.policy.guardrails import Guardrails
from tether.policy.inputs import (
    BUILTIN_INPUTS,
    Args,
    DecisionInput,
    Http,
    check_caller_context,
    check_context_value,
    reserved_names,
    session_labels,
)
from tether.policy.labels import NO_LABELS, LabelSource
from tether.policy.listing import args_may_allow
from tether.policy.state import PolicyState, reads, resource_entity
from tether.policy.verdict import Verdicts
from tether.principals import Principal, parse_principal
from tether.registry import Registry
from tether.services import Services

__all__ = ["DecisionPoint"]

log = logging.getLogger("tether.pdp")
_SYSTEM = Caller.system("pdp")


class DecisionPoint:
    """Decides :class:`AccessRequest` s; ``inputs`` add server-computed context keys to the
    built-in ones (:data:`tether.policy.inputs.BUILTIN_INPUTS`); ``labels`` gives the
    resources' labels (none without it)."""

    def __init__(
        self,
        services: Services,
        registry: Registry,
        grants: Grants,
        guardrails: Guardrails,
        inputs: Sequence[DecisionInput] = (),
        labels: LabelSource = NO_LABELS,
    ) -> None:
        self._settings = services.settings
        self._labels = labels
        self._registry = registry
        self._grants = grants
        self._guardrails = guardrails
        self._epoch = services.epoch
        self._clock = services.clock
        guard = self._settings.guard
        bounds = Bounds(guard.args_max_bytes, guard.args_max_depth, guard.args_max_values)
        builtin = (
            Args(bounds) if isinstance(i, Args) else Http(bounds) if isinstance(i, Http) else i
            for i in BUILTIN_INPUTS
        )
        self._inputs: tuple[DecisionInput, ...] = (*builtin, *inputs)
        names = [i.name for i in self._inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"two decision inputs share a name: {sorted(names)}")
        self._reserved = reserved_names(inputs)
        # the compiled state, and the inputs its policies read (one object: swapped whole)
        self._state: tuple[PolicyState, tuple[DecisionInput, ...]] | None = None
        self._build_lock = threading.Lock()
        self._cache_size = self._settings.decision_cache_size

    @property
    def reserved(self) -> frozenset[str]:
        """The context keys a caller may not set (server-computed)."""
        return self._reserved

    def reads(self, name: str) -> bool:
        """Whether some policy of the current state may read ``context.<name>`` (fail
        closed: True when the state cannot be built)."""
        try:
            state, _, _ = self._current()
        except Exception:  # the decision itself will fail closed; assume it is read
            return True
        return reads(state.context_reads, name)

    # ---- the answer ---------------------------------------------------------------------

    def decide(self, request: AccessRequest) -> Decision:
        """Decide; a deny is a Decision with reasons. Malformed requests raise
        :class:`InvalidRequest`; every other failure is a deny (fail closed)."""
        try:
            state, keyed, now = self._current()
            key = cache_key(keyed, request, now)
            if key is None:  # an input that must not be cached: decided afresh
                return finish(self._evaluate(state, keyed, request, now), request)
            cached = state.decisions.get(key)
            # a refusal names the events of its session: another session's are not these
            if cached is not None and (
                cached.allowed or not cached.session or cached.session == request.session
            ):
                return finish(cached, request)
            decision = self._evaluate(state, keyed, request, now)
            if len(state.decisions) < self._cache_size or cached is not None:
                state.decisions[key] = replace(decision, cached=True)
            return finish(decision, request)
        except InvalidRequest:
            raise
        except Exception as exc:  # fail closed: no error becomes an allow
            log.warning("decision failed closed: %r", exc)
            return Decision(
                allowed=False,
                chain=(request.principal,),
                action=str(request.action),
                resource=str(request.resource),
                reasons=(f"decision failed, denied: {exc.__class__.__name__}: {exc}",),
            )

    def validate(self, request: AccessRequest) -> None:
        """Raise :class:`InvalidRequest` for a malformed request, before any decision."""
        action = check_action(request.action)
        check_resource(action, request.resource)
        self._identities(request)
        self._caller_context(request)

    def _current(self) -> tuple[PolicyState, tuple[DecisionInput, ...], datetime]:
        epoch = self._epoch.current()
        now = self._clock()
        current = self._state
        if current is not None and current[0].epoch == epoch and now < current[0].valid_until:
            return (*current, now)
        with self._build_lock:
            current = self._state
            if current is None or current[0].epoch != epoch or now >= current[0].valid_until:
                state = self._build(epoch, now)
                keyed = tuple(i for i in self._inputs if reads(state.context_reads, i.name))
                current = self._state = (state, keyed)
        return (*current, now)

    def _build(self, epoch: int, now: datetime) -> PolicyState:
        grace = self._settings.unowned_grace
        rails = [(rail.id, rail.text) for rail in self._guardrails.list()]
        return PolicyState.build(
            epoch,
            now,
            self._registry.list(_SYSTEM),
            self._grants.live(),
            rails,
            lambda since: since + grace,
            self._labels.snapshot(),
        )

    # ---- the delegation rule ----------------------------------------------------------

    def _evaluate(
        self,
        state: PolicyState,
        keyed: tuple[DecisionInput, ...],
        request: AccessRequest,
        now: datetime,
    ) -> Decision:
        action = check_action(request.action)
        resource = check_resource(action, request.resource)
        identities = self._identities(request)
        td = self._settings.trust_domain
        chain = tuple(p.display(td) for p in identities)

        def deny(*reasons: str, policies: tuple[str, ...] = ()) -> Decision:
            return Decision(
                False, chain, action, resource, reasons, policies=policies, epoch=state.epoch
            )

        obstacle = self._obstacle(state, request, action, resource, identities)
        if obstacle:
            return deny(obstacle)
        # Serialised once for every identity; resources and actions are checked to hold
        # no characters that JSON would escape.
        try:
            context = json.dumps(self._context(request, keyed, identities, now))
        except Undecidable as exc:
            what = "request" if request.http is not None else "call's arguments"
            return deny(f"the {what} cannot be decided on: {exc}")
        compiled = state.chain(identities, request.groups)
        labels = tuple(sorted(state.labels.of(action, resource)))
        entities = compiled.entities.with_added_json_str(resource_entity(resource, labels))
        batch = [
            {
                "principal": {"type": p.cedar_type, "id": p.id},
                "action": {"type": "Action", "id": action},
                "resource": {"type": "Resource", "id": resource},
                "context": context,
            }
            for p in identities
        ]
        results = cedarpy.is_authorized_batch(batch, compiled.policies, entities)
        unheld = compiled.unheld
        session = session_labels(request) if reads(state.context_reads, "session") else {}
        verdicts = Verdicts(state, identities, chain, action, resource, session)
        retry = None
        if unheld is not None:
            retry = lambda: cedarpy.is_authorized_batch(batch, unheld, entities)  # noqa: E731
        decision = verdicts.decide(results, retry, labels)
        return replace(decision, session=request.session) if session else decision

    def _obstacle(
        self,
        state: PolicyState,
        request: AccessRequest,
        action: str,
        resource: str,
        identities: tuple[Principal, ...],
    ) -> str | None:
        """Why the request is refused before any policy is asked, if it is."""
        td = self._settings.trust_domain
        agents = [p for p in identities if p.kind == "agent"]
        if len(agents) > self._settings.max_chain_depth:
            return (
                f"delegation chain of {len(agents)} agents is deeper than the cap "
                f"({self._settings.max_chain_depth})"
            )
        for principal in agents:
            if principal.id not in state.agents:
                return f"{principal.display(td)} is not a registered agent"
        if request.scope is not None and not any(
            Permission.parse(entry).covers(action, resource) for entry in request.scope
        ):
            return f"{action}:{resource} is outside the token's scope"
        return None

    # ---- listings ---------------------------------------------------------------------

    def could_allow(self, request: AccessRequest) -> bool:
        """Whether *some* call of this request could be allowed: a listing's question.

        It is the decision when that is an allow or a hold (an approval could let it
        through). When it is a refusal and a policy reads ``context.args``, the chain is
        evaluated again with ``context.args`` unknown (Cedar partial evaluation, without
        the ``@approval`` guardrails): a ``Deny`` for any identity hides the item, an
        ``Allow`` or ``NoDecision`` (the answer depends on the arguments) shows it. Every
        call is still decided on its real arguments. Errors hide (fail closed)."""
        decision = self.decide(request)
        if decision.allowed or decision.approval is not None:
            return True
        try:
            state, keyed, now = self._current()
            if request.action == "delegate" or not any(i.name == "args" for i in keyed):
                return False
            return self._partial(state, keyed, request, now)
        except Exception as exc:  # a listing hides what it cannot decide
            log.warning("listing check failed closed: %r", exc)
            return False

    def _partial(
        self,
        state: PolicyState,
        keyed: tuple[DecisionInput, ...],
        request: AccessRequest,
        now: datetime,
    ) -> bool:
        rest = tuple(i for i in keyed if i.name != "args")
        inner = cache_key(rest, request, now)
        key = None if inner is None else ("could_allow", inner)
        known = state.decisions.get(key) if key is not None else None
        if known is not None:
            return known.allowed
        action = check_action(request.action)
        resource = check_resource(action, request.resource)
        identities = self._identities(request)
        if self._obstacle(state, request, action, resource, identities):
            return False
        context = self._context(request, rest, identities, now)
        shown = args_may_allow(state, identities, action, resource, context, request.groups)
        if key is not None and len(state.decisions) < self._cache_size:
            state.decisions[key] = Decision(shown, (), action, resource, ())
        return shown

    def _identities(self, request: AccessRequest) -> tuple[Principal, ...]:
        td = self._settings.trust_domain
        found: list[Principal] = []
        if request.on_behalf_of:
            user = parse_principal(request.on_behalf_of, td)
            if user.kind != "user":
                raise InvalidRequest("on_behalf_of must name a person: user:<email>")
            found.append(user)
        for ref in request.chain:
            agent = parse_principal(ref, td)
            if agent.kind != "agent":
                raise InvalidRequest("a delegation chain lists agents; people go in on_behalf_of")
            found.append(agent)
        subject = parse_principal(request.principal, td)
        if not (found and found[-1] == subject):
            found.append(subject)
        if subject.kind == "user" and len(found) > 1:
            raise InvalidRequest("a person acts only for themselves: no on_behalf_of or chain")
        if len(set(found)) != len(found):
            raise InvalidRequest("the delegation chain names an identity twice (a cycle)")
        if request.groups and found[0].kind != "user":
            raise InvalidRequest("groups are a person's: give on_behalf_of (or a user principal)")
        return tuple(found)

    def _caller_context(self, request: AccessRequest) -> dict[str, Any]:
        """The caller's part of the context; refused when it sets a server-computed key."""
        try:
            extra = json.loads(request.context) if request.context else {}
        except ValueError:
            raise InvalidRequest("context must be a JSON object") from None
        if not isinstance(extra, dict):
            raise InvalidRequest("context must be a JSON object")
        check_caller_context(extra, reserved=self._reserved)
        check_context_value(extra, "context")
        return extra

    def _context(
        self,
        request: AccessRequest,
        keyed: tuple[DecisionInput, ...],
        identities: tuple[Principal, ...],
        now: datetime,
    ) -> dict[str, Any]:
        """The caller's context and the value of every input a policy reads (``keyed``),
        under the input's name; an input no policy reads is not computed."""
        context = self._caller_context(request)
        for source in keyed:
            context[source.name] = source.value(request, identities, now)
        return context
