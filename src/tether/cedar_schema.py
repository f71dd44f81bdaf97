"""Tether's Cedar schema: the text and its parsed form, what every Cedar policy and every
grant condition is validated against.

It lives below both :mod:`tether.grants` (which checks a grant's ``when`` condition
against it) and :mod:`tether.policy` (guardrails and the decision point), so neither
imports the other for it. What the entities, actions and context mean is told in
:mod:`tether.policy.schema`, which re-exports these names.
"""

from __future__ import annotations

from functools import cache

import cedarpy

from tether.permissions import ACTIONS

__all__ = ["SCHEMA_TEXT", "schema"]

_ACTION_LIST = ", ".join(f'"{action}"' for action in ACTIONS)

SCHEMA_TEXT = f"""\
entity User = {{ email: String, groups: Set<String>, state: String }};
entity Agent = {{ owner: String, state: String, kind: String, parent: String }} tags String;
entity Resource = {{ path: String, depth: Long }};
action {_ACTION_LIST} appliesTo {{
  principal: [Agent, User],
  resource: [Resource],
  context: {{ chain_depth: Long, on_behalf_of: String, time: Long, hour: Long, risk: Long }}
}};
"""


@cache
def schema() -> cedarpy.Schema:
    """The parsed schema (parsed once per process)."""
    return cedarpy.Schema.from_str(SCHEMA_TEXT)
