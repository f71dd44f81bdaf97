"""Tether's Cedar schema and its built-in guardrails.

Entities:
- ``Agent``: ``owner`` (email, ``""`` when unowned), ``state``, ``kind``, ``parent``
  (SPIFFE ID or ``""``), and its labels as Cedar tags (``principal.getTag("team")``).
- ``User``: ``email``, ``groups``, ``state`` (always ``"active"``).
- ``Resource``: ``path`` (``github/create_issue``), ``depth`` (its number of segments) and
  ``labels`` (``sensitive``, ``untrusted``, ``egress``, ``destructive``: from the decision
  point's label source, :mod:`tether.policy.labels`; empty without one).

Actions: ``Action::"tools/call"`` and the other names in :mod:`tether.permissions`.

Context: every key of the schema's context record is server-computed, by a decision
input (:mod:`tether.policy.inputs`; the record in :mod:`tether.cedar_schema` is
:data:`~tether.policy.inputs.BUILTIN_INPUTS` and ``risk``, a test holds them equal): ``chain_depth``
(agents in the delegation chain, the acting one included), ``on_behalf_of`` (the person's
email, ``""`` without one), ``time`` (Unix seconds) and ``hour`` (0-23, UTC); and
``risk`` (0-100, the highest risk score of the chain's agents from their open alerts: the
detector's input, :class:`tether.detect.risk.RiskInput`, which the core passes to the
decision point; decisions are cached per request and those agents' scores).
``args`` (the call's arguments, :mod:`tether.policy.args`; an empty record in this
schema, so guardrails read it behind ``has``) and ``session`` (``{ labels: Set<String> }``:
the labels the work has touched so far, computed by the gateway).
Decisions whose policies read ``context.time`` or ``context.hour`` are never cached.
A caller may set none of these keys; the context it gives otherwise is passed on as it is.

Built-in guardrails (:func:`builtin_guardrails`): ``tether-not-active`` and
``tether-unowned`` always; ``tether-trifecta`` as ``[guard] trifecta`` says: once the work
has read ``sensitive`` data and taken in ``untrusted`` content, a call to an ``egress``
item is forbidden (``deny``), or forbidden until a person approves it (``approval``: the
policy carries ``@approval("owner")``), or not guarded (``off``: the policy is absent).
Their IDs are reserved whatever the mode.
"""

from __future__ import annotations

from tether.cedar_schema import SCHEMA_TEXT, schema
from tether.config import FlowMode

__all__ = [
    "BUILTIN_GUARDRAILS",
    "BUILTIN_IDS",
    "SCHEMA_TEXT",
    "TRIFECTA",
    "builtin_guardrails",
    "schema",
]

BUILTIN_GUARDRAILS = """\
@id("tether-not-active")
forbid (principal, action, resource)
when { principal.state != "active" };

@id("tether-unowned")
forbid (principal, action, resource)
when { principal is Agent && principal.owner == "" };
"""

TRIFECTA = "tether-trifecta"

_TRIFECTA_RULE = f"""\
@id("{TRIFECTA}")
forbid (principal, action, resource)
when {{
  context.session.labels.contains("sensitive") &&
  context.session.labels.contains("untrusted") &&
  resource.labels.contains("egress")
}};
"""

BUILTIN_IDS = frozenset({"tether-not-active", "tether-unowned", TRIFECTA})


def builtin_guardrails(trifecta: FlowMode = "deny") -> str:
    """The built-in guardrails' Cedar text for a ``[guard] trifecta`` mode."""
    if trifecta == "off":
        return BUILTIN_GUARDRAILS
    held = '@approval("owner")\n' if trifecta == "approval" else ""
    return BUILTIN_GUARDRAILS + "\n" + held + _TRIFECTA_RULE
