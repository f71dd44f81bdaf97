"""What the gateway answers instead of a result: a refusal (recorded, with the reason), a
call held for a person's approval (naming the pending approval), and the MCP tool result
that carries either."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from tether.errors import TetherError

__all__ = ["APPROVAL_META", "Held", "Progress", "Refused", "error_result", "reason_of"]


class Refused(Exception):
    """The request was refused (and recorded); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def message(self) -> str:
        """What the agent is told."""
        return f"denied: {self.reason}"

    @property
    def meta(self) -> dict[str, Any] | None:
        """What the answer's ``_meta`` (a tool result) or error ``data`` carries."""
        return None


class Held(Refused):
    """The call waits for a person's approval (pending approval ``approval``); the held
    decision is recorded, and so is the approval."""

    def __init__(self, approval: str, reasons: Sequence[str]) -> None:
        why = "; ".join(reasons) or "the call needs approval"
        how = f"approve with: tether approvals approve {approval}"
        super().__init__(f"held for approval {approval}: {why}; {how}")
        self.approval = approval

    @property
    def message(self) -> str:
        return self.reason

    @property
    def meta(self) -> dict[str, Any] | None:
        return {APPROVAL_META: self.approval}


APPROVAL_META = "tether/approval"  # the pending approval's ID, in a held answer's _meta

# progress(progress, total, message): tells a waiting client how long it has waited
Progress = Callable[[float, float | None, str], Awaitable[None]]


def error_result(text: str, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An MCP tool result that says why nothing was done (``meta``: its ``_meta``)."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if meta:
        result["_meta"] = dict(meta)
    return result


def reason_of(exc: Exception) -> str:
    """Why ``exc`` stopped a request, in words fit for the agent (never a traceback)."""
    if isinstance(exc, Refused):
        return exc.reason
    return exc.description if isinstance(exc, TetherError) else type(exc).__name__
