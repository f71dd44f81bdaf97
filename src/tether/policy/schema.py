"""Tether's Cedar schema and its built-in guardrails.

Entities:
- ``Agent``: ``owner`` (email, ``""`` when unowned), ``state``, ``kind``, ``parent``
  (SPIFFE ID or ``""``), and its labels as Cedar tags (``principal.getTag("team")``).
- ``User``: ``email``, ``groups``, ``state`` (always ``"active"``).
- ``Resource``: ``path`` (``github/create_issue``) and ``depth`` (its number of segments).

Actions: ``Action::"tools/call"`` and the other names in :mod:`tether.permissions`.

Context: ``chain_depth`` (agents in the delegation chain, the acting one included),
``on_behalf_of`` (the person's email, ``""`` without one), ``time`` (Unix seconds) and
``hour`` (0-23, UTC). Decisions whose policies read ``context.time`` or ``context.hour``
are never cached.
"""

from __future__ import annotations

from functools import cache

import cedarpy

from tether.permissions import ACTIONS

__all__ = ["BUILTIN_GUARDRAILS", "BUILTIN_IDS", "SCHEMA_TEXT", "schema"]

_ACTION_LIST = ", ".join(f'"{action}"' for action in ACTIONS)

SCHEMA_TEXT = f"""\
entity User = {{ email: String, groups: Set<String>, state: String }};
entity Agent = {{ owner: String, state: String, kind: String, parent: String }} tags String;
entity Resource = {{ path: String, depth: Long }};
action {_ACTION_LIST} appliesTo {{
  principal: [Agent, User],
  resource: [Resource],
  context: {{ chain_depth: Long, on_behalf_of: String, time: Long, hour: Long }}
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
