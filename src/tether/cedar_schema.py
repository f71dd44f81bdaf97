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

import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import cedarpy

from tether.permissions import ACTIONS

__all__ = [
    "SCHEMA_TEXT",
    "args_mismatch",
    "args_read",
    "args_type",
    "pinned_args_type",
    "read_args_type",
    "schema",
    "schema_text",
]

_ACTION_LIST = ", ".join(f'"{action}"' for action in ACTIONS)
_SESSION = "{ labels: Set<String> }"


def schema_text(args: str = "{}", http: str = "{}") -> str:
    """The schema's text, ``context.args`` of type ``args`` and ``context.http`` of type
    ``http`` (Cedar record types)."""
    context = (
        "chain_depth: Long, on_behalf_of: String, time: Long, hour: Long, "
        f"args: {args}, session: {_SESSION}, http: {http}, risk: Long"
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


_SCALARS = {"string": "String", "integer": "Long", "boolean": "Bool", "number": "decimal"}
_MAX_DEPTH = 8


def args_type(input_schema: Mapping[str, Any]) -> str:
    """The Cedar record type of a tool's arguments from its JSON-schema ``inputSchema``:
    string -> String, integer -> Long, boolean -> Bool, number -> decimal, an array of T
    -> Set<T>, an object with ``properties`` -> a record; a ``required`` property is a
    required attribute, the others optional (``name?: T``); a property without one plain
    ``type`` (untyped, a union, ``anyOf``...) is left out, so a condition cannot read it."""
    return _record(input_schema, 0) or "{}"


def _record(node: Mapping[str, Any], depth: int) -> str | None:
    properties = node.get("properties")
    if not isinstance(properties, Mapping) or depth >= _MAX_DEPTH:
        return None
    required = node.get("required")
    needed = {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
    attrs = []
    for name, sub in properties.items():
        kind = _type(sub, depth + 1) if isinstance(name, str) else None
        if kind is not None:
            attrs.append(f"{json.dumps(name)}{'' if name in needed else '?'}: {kind}")
    return "{ " + ", ".join(attrs) + " }" if attrs else "{}"


def _type(node: Any, depth: int) -> str | None:
    if not isinstance(node, Mapping):
        return None
    kind = node.get("type")
    if isinstance(kind, str) and kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        inner = _type(node.get("items"), depth + 1)
        return f"Set<{inner}>" if inner is not None else None
    if kind == "object":
        return _record(node, depth)
    return None


_JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")


def args_mismatch(input_schema: Any, args: Mapping[str, Any]) -> str | None:
    """Where a call's arguments disagree with the JSON types the tool's pinned
    ``inputSchema`` declares (``args.fail is a string, the tool's input schema says
    boolean``), or ``None``. An upstream that coerces (``"true"`` to ``True``, ``"5"`` to
    ``5``, as lax validators do) would act on a value no rule on ``context.args`` saw:
    such a call cannot be decided on. Properties without a plain ``type`` (or a list of
    them) are not checked; a ``null`` member is absent (as ``context.args`` has it); the
    walk is as deep as the schema, at most 8 levels."""
    if not isinstance(input_schema, Mapping):
        return None
    return _mismatch(input_schema, args, "args", 0)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else "object"


def _mismatch(node: Mapping[str, Any], value: Any, where: str, depth: int) -> str | None:
    if depth >= _MAX_DEPTH:
        return None
    declared = node.get("type")
    kinds = [declared] if isinstance(declared, str) else declared
    if isinstance(kinds, list) and kinds and all(k in _JSON_TYPES for k in kinds):
        found = _json_type(value)
        fits = found in kinds or (found == "integer" and "number" in kinds)
        if not fits:
            said = " or ".join(kinds)
            article = "an" if found[0] in "aeiou" else "a"
            return f"{where} is {article} {found}, the tool's input schema says {said}"
    properties = node.get("properties")
    if isinstance(value, Mapping) and isinstance(properties, Mapping):
        for name, sub in properties.items():
            member = value.get(name) if isinstance(name, str) else None
            if member is None or not isinstance(sub, Mapping):
                continue
            shown = f"{where}.{name}" if name.isidentifier() and len(name) <= 64 else where
            found_here = _mismatch(sub, member, shown, depth + 1)
            if found_here:
                return found_here
    items = node.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        for item in value:
            found_here = _mismatch(items, item, f"{where}[]", depth + 1)
            if found_here:
                return found_here
    return None


def pinned_args_type(kind: str, definition: Mapping[str, Any]) -> str | None:
    """``context.args``'s type from a pinned definition: a tool's ``inputSchema``
    (:func:`args_type`), a prompt's ``arguments`` (each a String, required when it says
    so); ``None`` when the definition does not say."""
    if kind == "tool":
        found = definition.get("inputSchema")
        return args_type(found) if isinstance(found, Mapping) else None
    arguments = definition.get("arguments")
    if kind != "prompt" or not isinstance(arguments, list):
        return None
    attrs = [
        f"{json.dumps(a['name'])}{'' if a.get('required') is True else '?'}: String"
        for a in arguments
        if isinstance(a, Mapping) and isinstance(a.get("name"), str)
    ]
    return "{ " + ", ".join(attrs) + " }" if attrs else "{}"


def read_args_type(attrs: Iterable[str]) -> str:
    """A record type declaring each of ``attrs`` a required String: what a condition may
    read of ``context.args`` when no pinned input schema types it."""
    names = sorted(set(attrs))
    return "{ " + ", ".join(f"{json.dumps(n)}: String" for n in names) + " }" if names else "{}"


_ARGS = {".": {"left": {"Var": "context"}, "attr": "args"}}


def args_read(text: str) -> set[str]:
    """The attributes of ``context.args`` a policy reads (``.path``, ``["path"]``,
    ``has path``), from its JSON form; none when it does not parse (reported elsewhere)."""
    try:
        document = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError:
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for op in (".", "has"):
                inner = node.get(op)
                if isinstance(inner, dict) and inner.get("left") == _ARGS:
                    attr = inner.get("attr")
                    if isinstance(attr, str):
                        found.add(attr)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found
