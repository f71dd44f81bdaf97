"""Tether's Cedar schema and its built-in guardrails.

Entities:
- ``Agent``: ``owner`` (email, ``""`` when unowned), ``state``, ``kind``, ``parent``
  (SPIFFE ID or ``""``), and its labels as Cedar tags (``principal.getTag("team")``).
- ``User``: ``email``, ``groups``, ``state`` (always ``"active"``).
- ``Resource``: ``path`` (``github/create_issue``) and ``depth`` (its number of segments).

Actions: ``Action::"tools/call"`` and the other names in :mod:`tether.permissions`.

Context: every key of the schema's context record is server-computed, by a decision
input (:mod:`tether.policy.inputs`, the record is made from
:data:`~tether.policy.inputs.BUILTIN_INPUTS`): ``chain_depth`` (agents in the delegation
chain, the acting one included), ``on_behalf_of`` (the person's email, ``""`` without
one), ``time`` (Unix seconds) and ``hour`` (0-23, UTC). Decisions whose policies read
``context.time`` or ``context.hour`` are never cached. ``risk``, ``args`` and ``session``
are reserved for inputs to come. A caller may set none of these keys; the context it
gives otherwise is passed on as it is.
"""

from __future__ import annotations

from functools import cache

import cedarpy

from tether.permissions import ACTIONS
from tether.policy.inputs import BUILTIN_INPUTS

__all__ = ["BUILTIN_GUARDRAILS", "BUILTIN_IDS", "SCHEMA_TEXT", "schema"]

_ACTION_LIST = ", ".join(f'"{action}"' for action in ACTIONS)
_CONTEXT_TYPE = ", ".join(f"{i.name}: {i.cedar_type}" for i in BUILTIN_INPUTS)

SCHEMA_TEXT = f"""\
entity User = {{ email: String, groups: Set<String>, state: String }};
entity Agent = {{ owner: String, state: String, kind: String, parent: String }} tags String;
entity Resource = {{ path: String, depth: Long }};
action {_ACTION_LIST} appliesTo {{
  principal: [Agent, User],
  resource: [Resource],
  context: {{ {_CONTEXT_TYPE} }}
}};
"""

BUILTIN_GUARDRAILS = """\
@id("tether-not-active")
forbid (principal, action, resource)
when { principal.state != "active" };

@id("tether-unowned")
forbid (principal, action, resource)
when { principal is Agent && principal.owner == "" };
"""

BUILTIN_IDS = frozenset({"tether-not-active", "tether-unowned"})


@cache
def schema() -> cedarpy.Schema:
    """The parsed schema (parsed once per process)."""
    return cedarpy.Schema.from_str(SCHEMA_TEXT)
