"""OpenID AuthZEN 1.0: Tether as the decision point of other gateways.

``POST /access/v1/evaluation`` answers one request, ``POST /access/v1/evaluations`` a
batch in request order. The subject is the acting agent (``type`` ``agent``) or person
(``type`` ``user``); a delegation chain comes as ``context.on_behalf_of`` (the person)
and ``context.chain`` (agents, earliest first, the acting one last or omitted), with the
person's identity-provider groups in ``context.groups``, or from a Tether access token in
``context.token`` (then its scope and the groups it carries apply too; a token that does
not verify is a deny).
Other context keys reach Cedar as request context, except the server-computed ones
(:mod:`tether.policy.inputs`: ``time``, ``hour``, ``chain_depth``, ``risk``, ``args``,
``session`` ...): a context that sets one, of an evaluation or of any item of a batch,
is refused whole with a 400 naming the key, before anything is decided. A call's
arguments, for rules on ``context.args``, come as ``action.properties.args`` (a JSON
object, mapped as :mod:`tether.policy.args` says), never in the context; the session and
an approval are the gateway's alone and cannot be given at all. Callers authenticate as
admins.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tether.api.deps import CallerDep, TetherDep
from tether.core import Tether
from tether.errors import Forbidden, InvalidRequest, InvalidToken, TetherError
from tether.policy.decision import AccessRequest, Decision
from tether.policy.inputs import check_caller_context

__all__ = ["router"]

router = APIRouter(tags=["AuthZEN"])

_MAX_BATCH = 1000
# context keys AuthZEN reads itself (who asks, through which chain, with which token):
# they never reach Cedar as context
_PROTOCOL = frozenset({"on_behalf_of", "chain", "groups", "token", "audience"})


class Subject(BaseModel):
    type: str
    id: str
    properties: dict[str, Any] = Field(default_factory=dict)


class Action(BaseModel):
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)


class Resource(BaseModel):
    type: str = "resource"
    id: str
    properties: dict[str, Any] = Field(default_factory=dict)


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Subject | None = None
    action: Action | None = None
    resource: Resource | None = None
    context: dict[str, Any] | None = None


class Options(BaseModel):
    evaluations_semantic: Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"] = (
        "execute_all"
    )


class Evaluations(Evaluation):
    evaluations: list[Evaluation] | None = None
    options: Options = Field(default_factory=Options)


def _admin(tether: Tether, caller: Any) -> None:
    if not caller.is_admin:
        why = "only admins (or gateways holding the admin token) ask the PDP"
        tether.refused(caller.subject, why, "authzen")
        raise Forbidden(why)


def _server_computed(tether: Tether, body: Evaluation | Evaluations) -> None:
    """Refuse the whole call (a 400 naming the key, before anything is decided or
    recorded) when any of its contexts sets a key the server computes."""
    reserved = tether.reserved_context - _PROTOCOL
    contexts = [("context", body.context)]
    if isinstance(body, Evaluations):
        items = body.evaluations or []
        contexts += [(f"evaluations[{i}].context", item.context) for i, item in enumerate(items)]
    for where, context in contexts:
        if context:
            check_caller_context(context, where, reserved)


def _args(item: Evaluation) -> dict[str, Any] | None:
    """The call's arguments (``action.properties.args``), when given."""
    assert item.action is not None
    args = item.action.properties.get("args")
    if args is not None and not isinstance(args, dict):
        raise InvalidRequest("action.properties.args must be a JSON object: the call's arguments")
    return args


def _request(tether: Tether, item: Evaluation) -> AccessRequest:
    if item.subject is None or item.action is None or item.resource is None:
        raise InvalidRequest("an evaluation needs subject, action and resource")
    context = dict(item.context or {})
    if "token" in context:
        return _from_token(tether, item, context)
    on_behalf_of = context.pop("on_behalf_of", None)
    chain = context.pop("chain", [])
    groups = context.pop("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidRequest("context.groups must be a list of the person's group names")
    if on_behalf_of is not None and not isinstance(on_behalf_of, str):
        raise InvalidRequest("context.on_behalf_of must be a string: user:<email>")
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise InvalidRequest("context.chain must be a list of agent IDs")
    if on_behalf_of and not on_behalf_of.startswith("user:"):
        on_behalf_of = "user:" + on_behalf_of
    if item.subject.type not in ("agent", "user"):
        raise InvalidRequest("subject.type must be agent or user")
    subject = item.subject.id
    if item.subject.type == "user" and not subject.startswith("user:"):
        subject = "user:" + subject
    request = AccessRequest.of(
        subject,
        item.action.name,
        item.resource.id,
        on_behalf_of=on_behalf_of,
        chain=chain,
        context=context,
        groups=groups,
        args=_args(item),
    )
    tether.validate(request)
    return request


def _from_token(tether: Tether, item: Evaluation, context: dict[str, Any]) -> AccessRequest:
    """The chain and scope come from a verified Tether token (``context.token``); the
    subject must be the token's client. ``context.audience``, when given, must be its aud."""
    assert item.subject is not None
    assert item.action is not None
    assert item.resource is not None
    token = context.pop("token")
    audience = context.pop("audience", None)
    if not isinstance(token, str) or not isinstance(audience, str) or not audience:
        raise InvalidRequest(
            "with context.token, context.audience must name the resource asking (RFC 8707)"
        )
    if audience.startswith("spiffe://"):
        raise InvalidRequest("context.audience must be a resource, not an agent")
    if "chain" in context or "on_behalf_of" in context or "groups" in context:
        raise InvalidRequest("with context.token the chain and groups come from the token only")
    verified = tether.tokens.verify(token, audience)
    client = str(verified.claims["client_id"])
    if item.subject.id not in (client, client.rsplit("/", 1)[-1]):
        raise InvalidToken("the token belongs to another client than the subject")
    request = verified.request(item.action.name, item.resource.id, context, args=_args(item))
    tether.validate(request)
    return request


def _record_token_deny(tether: Tether, item: Evaluation, exc: InvalidToken) -> None:
    """A request whose token does not verify is a deny, and recorded like any other."""
    subject = item.subject.id if item.subject else "?"
    action = item.action.name if item.action else "?"
    resource = item.resource.id if item.resource else "?"
    reason = f"the token does not verify: {exc.description}"
    tether.record([Decision(False, (subject,), action, resource, (reason,))])


def _answer(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.allowed,
        "context": {
            "reason_admin": {"en": "; ".join(decision.reasons)},
            "tether": decision.to_dict(),
        },
    }


def _error(exc: TetherError) -> dict[str, Any]:
    return {"decision": False, "context": {"error": exc.to_dict()}}


def _merged(base: Evaluations, item: Evaluation) -> Evaluation:
    return Evaluation(
        subject=item.subject or base.subject,
        action=item.action or base.action,
        resource=item.resource or base.resource,
        context=item.context if item.context is not None else base.context,
    )


@router.get("/.well-known/authzen-configuration", tags=["AuthZEN"])
def configuration(request: Request) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    return {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
    }


@router.post("/access/v1/evaluation")
def evaluation(tether: TetherDep, caller: CallerDep, body: Evaluation) -> dict[str, Any]:
    _admin(tether, caller)
    _server_computed(tether, body)
    try:
        request = _request(tether, body)
    except InvalidToken as exc:  # a forged or dead token is a deny, not a caller error
        _record_token_deny(tether, body, exc)
        return _error(exc)
    [decision] = tether.decide_all([request])
    return _answer(decision)


@router.post("/access/v1/evaluations")
def evaluations(tether: TetherDep, caller: CallerDep, body: Evaluations) -> dict[str, Any]:
    _admin(tether, caller)
    _server_computed(tether, body)
    if not body.evaluations:
        [decision] = tether.decide_all([_request(tether, body)])
        return _answer(decision)
    if len(body.evaluations) > _MAX_BATCH:
        raise InvalidRequest(f"at most {_MAX_BATCH} evaluations in one batch")
    semantic = body.options.evaluations_semantic
    parsed: list[AccessRequest | TetherError] = []
    for item in body.evaluations:
        merged = _merged(body, item)
        try:
            parsed.append(_request(tether, merged))
        except TetherError as exc:
            if isinstance(exc, InvalidToken):
                _record_token_deny(tether, merged, exc)
            parsed.append(exc)
    if semantic == "execute_all":
        valid = [p for p in parsed if isinstance(p, AccessRequest)]
        decided = iter(tether.decide_all(valid))
        return {
            "evaluations": [
                _error(p) if isinstance(p, TetherError) else _answer(next(decided)) for p in parsed
            ]
        }
    answers: list[dict[str, Any]] = []
    for entry in parsed:
        if isinstance(entry, TetherError):
            answers.append(_error(entry))
            allowed = False
        else:
            [decision] = tether.decide_all([entry])
            answers.append(_answer(decision))
            allowed = decision.allowed
        if allowed == (semantic == "permit_on_first_permit"):
            break
    return {"evaluations": answers}
