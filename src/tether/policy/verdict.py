"""From Cedar's answers for every identity of a chain to one :class:`Decision` and its
reasons: the delegation rule's last step.

Each identity's answer is one of: allowed (by a grant, or needing none for a delegation
hop); *held* — allowed only once a person approves, because every grant that allows it
carries ``approval``, or because only guardrails annotated ``@approval(...)`` forbid it
(and without them it would be allowed); or refused (no grant, a plain guardrail, an
evaluation error). An approval names the acting agent, so "the agent's owner" is the
acting agent's owner: a hold of an earlier agent of the chain with another owner is an
admin's to lift. The call is allowed when every identity is; *held* (``allowed`` false,
``Decision.approval`` the strongest role needed: ``admin`` beats ``owner``) when nothing
but holds stand in its way; refused otherwise.

Reasons name the rules. A guardrail that reads ``context.session`` also says what the work
touched and the decision event that touched each label (``the work read sensitive data
(event 12, fs/read_text_file) and took in untrusted content (event 14, web/fetch)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import cedarpy

from tether.policy.decision import Decision
from tether.policy.labels import touched
from tether.policy.schema import TRIFECTA
from tether.policy.state import PolicyState, reads
from tether.principals import Principal

__all__ = ["Verdicts", "stronger"]

_RANK = {"owner": 0, "admin": 1}
_WHO = {"owner": "the agent's owner", "admin": "an admin"}


def stronger(a: str | None, b: str | None) -> str | None:
    """The stronger of two approver roles (``admin`` beats ``owner``; ``None`` is none)."""
    if a is None or b is None:
        return a or b
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True, slots=True)
class _Answer:
    """One identity's answer."""

    reason: str
    ok: bool = False
    held: str | None = None  # the role whose approval lets it through
    grants: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()


class Verdicts:
    """Judges one request's Cedar results (see the module docstring)."""

    def __init__(
        self,
        state: PolicyState,
        identities: tuple[Principal, ...],
        chain: tuple[str, ...],
        action: str,
        resource: str,
        session: Mapping[str, Any],
    ) -> None:
        self._state = state
        self._identities = identities
        self._chain = chain
        self._action = action
        self._resource = resource
        self._session = session

    def decide(
        self,
        results: list[cedarpy.AuthzResult],
        unheld: Callable[[], list[cedarpy.AuthzResult]] | None,
        labels: tuple[str, ...],
    ) -> Decision:
        """The decision; ``unheld`` evaluates the chain without the ``@approval``
        guardrails (asked only when one of them forbids)."""
        answers: list[_Answer] = []
        retried: list[cedarpy.AuthzResult] | None = None
        for index, result in enumerate(results):
            answer = self._answer(index, result)
            if answer.held and answer.policies:  # held by guardrails: do grants allow it?
                if unheld is None:  # no way to tell: a plain refusal (fail closed)
                    answer = _Answer(answer.reason, policies=answer.policies)
                else:
                    retried = retried if retried is not None else unheld()
                    answer = self._behind(answer, self._answer(index, retried[index]))
            answers.append(self._approver(index, answer, len(results) - 1))
        return self._combine(answers, labels)

    def _approver(self, index: int, answer: _Answer, acting: int) -> _Answer:
        """An agent's hold for "the agent's owner": the approval the gateway asks names the
        *acting* agent, so its owner decides. When the held agent is an earlier one with
        another owner (or none), that person is not the acting agent's owner: only an
        admin may lift the hold (fail closed; never the next owner down the chain)."""
        if answer.held != "owner" or index == acting:
            return answer
        principal = self._identities[index]
        if principal.kind != "agent":
            return answer
        mine = self._state.agents.get(principal.id)
        theirs = self._state.agents.get(self._identities[acting].id)
        if mine is not None and theirs is not None and mine.owner and mine.owner == theirs.owner:
            return answer
        reason = answer.reason.replace(f"by {_WHO['owner']}", f"by {_WHO['admin']}", 1)
        return replace(
            answer,
            reason=f"{reason} (its owner is not the acting agent's owner)",
            held="admin",
        )

    def _combine(self, answers: list[_Answer], labels: tuple[str, ...]) -> Decision:
        refused = [a for a in answers if not a.ok and a.held is None]
        held = [a for a in answers if a.held is not None]
        policies = tuple(dict.fromkeys(p for a in answers for p in a.policies))
        grants = tuple(dict.fromkeys(g for a in answers for g in a.grants))
        role: str | None = None
        for answer in held:
            role = stronger(role, answer.held)
        if refused:
            reasons = [a.reason for a in answers if not a.ok]
            allowed, grants, role = False, (), None
        elif held:
            reasons = [a.reason for a in held]
            allowed = False
        else:
            reasons = [a.reason for a in answers]
            allowed = True
        return Decision(
            allowed=allowed,
            chain=self._chain,
            action=self._action,
            resource=self._resource,
            reasons=tuple(reasons),
            grants=grants,
            policies=policies,
            epoch=self._state.epoch,
            approval=role,
            labels=labels,
        )

    def _answer(self, index: int, result: cedarpy.AuthzResult) -> _Answer:
        name = self._chain[index]
        diagnostics = result.diagnostics
        ids = [diagnostics.id_annotations_by_reason.get(r, r) for r in diagnostics.reasons]
        hop = self._action == "delegate"
        if diagnostics.errors:
            errors = "; ".join(diagnostics.errors)
            return _Answer(f"policy evaluation error for {name}: {errors}")
        if result.allowed and any(i.startswith("grant:") for i in ids):
            return self._granted(
                name, [i.removeprefix("grant:") for i in ids if i.startswith("grant:")]
            )
        if ids and not result.allowed:
            return self._forbidden(name, ids)
        if hop and index != len(self._chain) - 1:
            return _Answer(f"no guardrail forbids the hop for {name}", ok=True)
        if hop and self._identities[index].kind == "user":
            return _Answer(
                f"{name} hands their own task to {self._resource} (a person needs no "
                "delegate grant) and no guardrail forbids it",
                ok=True,
            )
        return _Answer(f"{name} holds no grant for {self._action} on {self._resource}")

    def _granted(self, name: str, used: list[str]) -> _Answer:
        roles = [g.approval if (g := self._state.by_id.get(i)) else None for i in used]
        if used and all(roles):
            weakest = min((r for r in roles if r), key=_RANK.__getitem__)
            return _Answer(
                f"{name} held for approval by {_WHO[weakest]}: grant "
                f"{', '.join(used)} requires approval",
                held=weakest,
                grants=tuple(used),
            )
        return _Answer(f"{name} allowed by grant {', '.join(used)}", ok=True, grants=tuple(used))

    def _forbidden(self, name: str, ids: list[str]) -> _Answer:
        rails = [self._state.rails.get(i) for i in ids]
        roles = [rail.approval if rail else None for rail in rails]
        touched_by = self._touched(ids)
        if all(roles):
            role: str | None = None
            for each in roles:
                role = stronger(role, each)
            assert role is not None
            what = f"egress tool {self._resource} held" if TRIFECTA in ids else ""
            return _Answer(
                f"{name} held for approval by {_WHO[role]}: policy {', '.join(ids)} "
                f"requires approval{_detail(touched_by, what)}",
                held=role,
                policies=tuple(ids),
            )
        what = f"egress tool {self._resource} refused" if TRIFECTA in ids else ""
        return _Answer(
            f"{name} forbidden by policy {', '.join(ids)}{_detail(touched_by, what)}",
            policies=tuple(ids),
        )

    def _behind(self, hold: _Answer, beneath: _Answer) -> _Answer:
        """An identity held by guardrails, and its answer without them (``beneath``)."""
        if beneath.ok:
            return _Answer(
                hold.reason, held=hold.held, grants=beneath.grants, policies=hold.policies
            )
        if beneath.held is not None:
            return _Answer(
                f"{hold.reason}; {beneath.reason.split(': ', 1)[-1]}",
                held=stronger(hold.held, beneath.held),
                grants=beneath.grants,
                policies=hold.policies + beneath.policies,
            )
        return _Answer(
            f"{beneath.reason}; {hold.reason}", policies=hold.policies + beneath.policies
        )

    def _touched(self, ids: list[str]) -> list[str]:
        """What the work touched, when one of ``ids`` reads the session: for the trifecta
        the labels it needs, otherwise every label of the session."""
        readers = [
            i for i in ids if (rail := self._state.rails.get(i)) and reads(rail.reads, "session")
        ]
        if not readers or not self._session:
            return []
        wanted = [*self._session]
        if readers == [TRIFECTA]:
            wanted = [label for label in ("sensitive", "untrusted") if label in self._session]
        return [_event(label, self._session[label]) for label in sorted(wanted)]


def _event(label: str, entry: Any) -> str:
    seq = entry.get("seq") if isinstance(entry, dict) else None
    where = entry.get("resource") if isinstance(entry, dict) else None
    event = f"event {seq}" if seq is not None else "an earlier event"
    return f"{touched(label)} ({event}, {where})" if where else f"{touched(label)} ({event})"


def _detail(touched_by: list[str], what: str) -> str:
    if not touched_by:
        return f": {what}" if what else ""
    said = touched_by[0] if len(touched_by) == 1 else ", ".join(touched_by[:-1])
    if len(touched_by) > 1:
        said += f" and {touched_by[-1]}"
    return f": the work {said}" + (f"; {what}" if what else "")
