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

The person's identity-provider groups come with the request (``AccessRequest.groups``,
carried in Tether's delegated tokens) and reach Cedar as ``User.groups``; being a field
of the request they are part of the decision cache key, and the compiled entities are
cached per chain *and* groups.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import cedarpy

from tether.callers import Caller
from tether.config import Settings
from tether.epoch import StateEpoch
from tether.errors import InvalidRequest
from tether.grants import Grants
from tether.permissions import Permission, check_action, check_resource
from tether.policy.decision import AccessRequest, Decision
from tether.policy.guardrails import Guardrails
from tether.policy.state import PolicyState
from tether.principals import Principal, parse_principal
from tether.registry import Registry

__all__ = ["DecisionPoint"]

log = logging.getLogger("tether.pdp")
_RESERVED_CONTEXT = frozenset({"chain_depth", "on_behalf_of", "time", "hour"})
_SYSTEM = Caller.system("pdp")


class DecisionPoint:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        grants: Grants,
        guardrails: Guardrails,
        epoch: StateEpoch,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._grants = grants
        self._guardrails = guardrails
        self._epoch = epoch
        self._clock = clock
        self._state: PolicyState | None = None
        self._build_lock = threading.Lock()
        self._cache_size = settings.decision_cache_size

    # ---- the answer ---------------------------------------------------------------------

    def decide(self, request: AccessRequest) -> Decision:
        """Decide; a deny is a Decision with reasons. Malformed requests raise
        :class:`InvalidRequest`; every other failure is a deny (fail closed)."""
        try:
            state, now = self._current()
            cached = state.decisions.get(request)
            if cached is not None:
                return cached
            decision = self._evaluate(state, request, now)
            if not state.time_sensitive and len(state.decisions) < self._cache_size:
                state.decisions[request] = _as_cached(decision)
            return decision
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
        self._context(request, [], self._clock())

    def _current(self) -> tuple[PolicyState, datetime]:
        epoch = self._epoch.current()
        now = self._clock()
        state = self._state
        if state is not None and state.epoch == epoch and now < state.valid_until:
            return state, now
        with self._build_lock:
            state = self._state
            if state is None or state.epoch != epoch or now >= state.valid_until:
                state = self._build(epoch, now)
                self._state = state
        return state, now

    def _build(self, epoch: int, now: datetime) -> PolicyState:
        grace = self._settings.unowned_grace
        rails = "".join(rail.text for rail in self._guardrails.list())
        return PolicyState.build(
            epoch,
            now,
            self._registry.list(_SYSTEM),
            self._grants.live(),
            rails,
            lambda since: since + grace,
        )

    # ---- the delegation rule ----------------------------------------------------------

    def _evaluate(self, state: PolicyState, request: AccessRequest, now: datetime) -> Decision:
        action = check_action(request.action)
        resource = check_resource(action, request.resource)
        identities = self._identities(request)
        td = self._settings.trust_domain
        chain = tuple(p.display(td) for p in identities)

        def deny(*reasons: str, policies: tuple[str, ...] = ()) -> Decision:
            return Decision(
                False, chain, action, resource, reasons, policies=policies, epoch=state.epoch
            )

        agents = [p for p in identities if p.kind == "agent"]
        if len(agents) > self._settings.max_chain_depth:
            return deny(
                f"delegation chain of {len(agents)} agents is deeper than the cap "
                f"({self._settings.max_chain_depth})"
            )
        for principal in agents:
            if principal.id not in state.agents:
                return deny(f"{principal.display(td)} is not a registered agent")
        if request.scope is not None and not any(
            Permission.parse(entry).covers(action, resource) for entry in request.scope
        ):
            return deny(f"{action}:{resource} is outside the token's scope")
        # Serialised once for every identity; resources and actions are checked to hold
        # no characters that JSON would escape.
        context = json.dumps(self._context(request, agents, now))
        compiled = state.chain(identities, request.groups)
        depth = resource.count("/") + 1
        delta = (
            f'[{{"uid":{{"type":"Resource","id":"{resource}"}},'
            f'"attrs":{{"path":"{resource}","depth":{depth}}},"parents":[]}}]'
        )
        entities = compiled.entities.with_added_json_str(delta)
        results = cedarpy.is_authorized_batch(
            [
                {
                    "principal": {"type": p.cedar_type, "id": p.id},
                    "action": {"type": "Action", "id": action},
                    "resource": {"type": "Resource", "id": resource},
                    "context": context,
                }
                for p in identities
            ],
            compiled.policies,
            entities,
        )
        return self._judge(state, identities, chain, action, resource, results)

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

    def _context(
        self, request: AccessRequest, agents: list[Principal], now: datetime
    ) -> dict[str, Any]:
        try:
            extra = json.loads(request.context) if request.context else {}
        except ValueError:
            raise InvalidRequest("context must be a JSON object") from None
        if not isinstance(extra, dict):
            raise InvalidRequest("context must be a JSON object")
        clash = _RESERVED_CONTEXT.intersection(extra)
        if clash:
            raise InvalidRequest(f"context key {sorted(clash)[0]!r} is set by Tether")
        _check_context_value(extra, "context")
        on_behalf_of = request.on_behalf_of or ""
        return {
            **extra,
            "chain_depth": len(agents),
            "on_behalf_of": on_behalf_of.removeprefix("user:").lower(),
            "time": int(now.timestamp()),
            "hour": now.hour,
        }

    def _judge(
        self,
        state: PolicyState,
        identities: tuple[Principal, ...],
        chain: tuple[str, ...],
        action: str,
        resource: str,
        results: list[cedarpy.AuthzResult],
    ) -> Decision:
        reasons: list[str] = []
        granted: list[str] = []
        forbidden: list[str] = []
        allowed = True
        hop = action == "delegate"
        for index, (name, result) in enumerate(zip(chain, results, strict=True)):
            diagnostics = result.diagnostics
            ids = [diagnostics.id_annotations_by_reason.get(r, r) for r in diagnostics.reasons]
            delegator = index == len(chain) - 1
            if diagnostics.errors:
                allowed = False
                reasons.append(
                    f"policy evaluation error for {name}: {'; '.join(diagnostics.errors)}"
                )
            elif result.allowed and any(i.startswith("grant:") for i in ids):
                used = [i.removeprefix("grant:") for i in ids if i.startswith("grant:")]
                granted.extend(used)
                reasons.append(f"{name} allowed by grant {', '.join(used)}")
            elif ids and not result.allowed:
                allowed = False
                forbidden.extend(ids)
                reasons.append(f"{name} forbidden by policy {', '.join(ids)}")
            elif hop and not delegator:
                reasons.append(f"no guardrail forbids the hop for {name}")
            elif hop and identities[index].kind == "user":
                reasons.append(
                    f"{name} hands their own task to {resource} (a person needs no "
                    "delegate grant) and no guardrail forbids it"
                )
            else:
                allowed = False
                reasons.append(f"{name} holds no grant for {action} on {resource}")
        if not allowed:
            reasons = [r for r in reasons if " allowed by " not in r and "no guardrail" not in r]
        return Decision(
            allowed=allowed,
            chain=chain,
            action=action,
            resource=resource,
            reasons=tuple(reasons),
            grants=tuple(dict.fromkeys(granted)) if allowed else (),
            policies=tuple(dict.fromkeys(forbidden)),
            epoch=state.epoch,
        )


_LONG = 2**63


def _check_context_value(value: Any, where: str) -> None:
    """Context must be what Cedar can hold: strings (no NUL), booleans, 64-bit integers,
    lists and objects of those. Floats and nulls are refused, not silently denied."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_LONG <= value < _LONG:
            raise InvalidRequest(f"{where}: integer out of Cedar's 64-bit range")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidRequest(f"{where}: NUL is not allowed in context strings")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_context_value(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise InvalidRequest(f"{where}: NUL is not allowed in context keys")
            _check_context_value(item, f"{where}.{key}")
        return
    kind = "null" if value is None else type(value).__name__
    raise InvalidRequest(f"{where}: {kind} values are not allowed in Cedar context")


def _as_cached(d: Decision) -> Decision:
    return Decision(
        d.allowed, d.chain, d.action, d.resource, d.reasons, d.grants, d.policies, d.epoch, True
    )
