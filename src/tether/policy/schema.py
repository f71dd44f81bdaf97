"""Tether's Cedar schema and its built-in guardrails.

Entities:
- ``Agent``: ``owner`` (email, ``""`` when unowned), ``state``, ``kind``, ``parent``
  (SPIFFE ID or ``""``), and its labels as Cedar tags (``principal.getTag("team")``).
- ``User``: ``email``, ``groups``, ``state`` (always ``"active"``).
- ``Resource``: ``path`` (``github/create_issue``) and ``depth`` (its number of segments).

Actions: ``Action::"tools/call"`` and the other names in :mod:`tether.permissions`.

Context: every key of the schema's context record is server-computed, by a decision
input (:mod:`tether.policy.inputs`; the record in :mod:`tether.cedar_schema` is
:data:`~tether.policy.inputs.BUILTIN_INPUTS` and ``risk``, a test holds them equal): ``chain_depth``
(agents in the delegation chain, the acting one included), ``on_behalf_of`` (the person's
email, ``""`` without one), ``time`` (Unix seconds) and ``hour`` (0-23, UTC); and
``risk`` (0-100, the highest risk score of the chain's agents from their open alerts: the
detector's input, :class:`tether.detect.risk.RiskInput`, which the core passes to the
decision point; decisions are cached per request and those agents' scores).
Decisions whose policies read ``context.time`` or ``context.hour`` are never cached.
``args`` and ``session`` are reserved for inputs to come. A caller may set none
of these keys; the context it gives otherwise is passed on as it is.
"""

from __future__ import annotations

from tether.cedar_schema import SCHEMA_TEXT, schema

__all__ = ["BUILTIN_GUARDRAILS", "BUILTIN_IDS", "SCHEMA_TEXT", "schema"]

BUILTIN_GUARDRAILS = """\
@id("tether-not-active")
forbid (principal, action, resource)
when { principal.state != "active" };

@id("tether-unowned")
forbid (principal, action, resource)
when { principal is Agent && principal.owner == "" };
"""

BUILTIN_IDS = frozenset({"tether-not-active", "tether-unowned"})
