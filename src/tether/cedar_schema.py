"""Tether's Cedar schema: the text and its parsed form, what every Cedar policy and every
grant condition is validated against.

It lives below both :mod:`tether.grants` (which checks a grant's ``when`` condition
against it) and :mod:`tether.policy` (guardrails and the decision point), so neither
imports the other for it.

``context.args`` is a closed empty record here: the arguments differ per tool, so a
guardrail (validated against this schema) must guard every access with ``has``
(``context.args has path && context.args.path like "*/../*"``). A grant condition is
validated against a schema whose ``args`` is typed from the pinned tool's input schema
(:func:`schema_with_args`). What the entities, actions and context mean is told in
:mod:`tether.policy.schema`, which re-exports these names.
"""

from __future__ import annotations

from functools import cache

import cedarpy

from tether.permissions import ACTIONS

__all__ = ["SCHEMA_TEXT", "schema", "schema_text"]

_ACTION_LIST = ", ".join(f'"{action}"' for action in ACTIONS)
_SESSION = "{ labels: Set<String> }"


def schema_text(args: str = "{}") -> str:
    """The schema's text, ``context.args`` of type ``args`` (a Cedar record type)."""
    context = (
        "chain_depth: Long, on_behalf_of: String, time: Long, hour: Long, "
        f"args: {args}, session: {_SESSION}, risk: Long"
    )
    return f"""\
entity User = {{ email: String, groups: Set<String>, state: String }};
entity Agent = {{ owner: String, state: String, kind: String, parent: String }} tags String;
entity Resource = {{ path: String, depth: Long, labels: Set<String> }};
action {_ACTION_LIST} appliesTo {{
  principal: [Agent, User],
  resource: [Resource],
  context: {{ {context} }}
}};
"""


SCHEMA_TEXT = schema_text()


@cache
def schema() -> cedarpy.Schema:
    """The parsed schema (parsed once per process)."""
    return cedarpy.Schema.from_str(SCHEMA_TEXT)
