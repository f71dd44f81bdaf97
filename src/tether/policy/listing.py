"""Whether some call could be allowed whatever its arguments: the question a listing asks
when a policy reads ``context.args`` (see
:meth:`tether.policy.pdp.DecisionPoint.could_allow`).

Each identity of the chain is evaluated with Cedar's partial evaluation
(``cedarpy.is_authorized_partial``, an experimental Cedar feature used here only to *hide*
items, never to allow a call) with ``context.args`` unknown
(``{"__extn": {"fn": "unknown", "arg": "args"}}``) and without the ``@approval``
guardrails (an approval could lift them): ``Deny`` for any identity means no call with
any arguments could be allowed, so the item is hidden; ``Allow``, or ``NoDecision`` (the
answer depends on the arguments), shows it. An evaluation error hides it.
"""

from __future__ import annotations

import json
from typing import Any

import cedarpy

from tether.policy.state import PolicyState, resource_entity
from tether.principals import Principal

__all__ = ["UNKNOWN_ARGS", "args_may_allow"]

UNKNOWN_ARGS = {"__extn": {"fn": "unknown", "arg": "args"}}


def args_may_allow(
    state: PolicyState,
    identities: tuple[Principal, ...],
    action: str,
    resource: str,
    context: dict[str, Any],
    groups: tuple[str, ...],
) -> bool:
    """Whether every identity may be allowed for some value of ``context.args``
    (``context`` holds every other input's value; its ``args`` is replaced)."""
    compiled = state.chain(identities, groups)
    labels = tuple(sorted(state.labels.of(action, resource)))
    entities = compiled.entities.with_added_json_str(resource_entity(resource, labels))
    policies = compiled.unheld if compiled.unheld is not None else compiled.policies
    context = {**context, "args": UNKNOWN_ARGS}
    for p in identities:
        answer = cedarpy.is_authorized_partial(
            {
                "principal": f"{p.cedar_type}::{json.dumps(p.id)}",
                "action": f"Action::{json.dumps(action)}",
                "resource": f"Resource::{json.dumps(resource)}",
                "context": context,
            },
            policies,
            entities,
        )
        if answer.decision == cedarpy.Decision.Deny or answer.diagnostics.errors:
            return False
    return True
