"""What the egress proxy records of each request it sent, and the scan of an answer for
secrets before the agent sees it.

Each request sent upstream (each hop of a redirect too) has its ``egress.result`` event,
written with the next commit of the audit log (deferred, as the gateway's
``tool.result``: the decision was recorded before the request left), with
``detail = {"outcome", "status", "size", "sent", "latency_ms", "address"?, "redacted"?,
"error"?}``: the outcome (``ok``; ``redirect`` for a hop that was followed; ``withheld``
for an answer that could not be checked; ``failed`` when the destination could not be
reached or answered unusably, with the ``error``; ``cancelled`` when a kill cut it off),
the destination's status, the bytes received (``size``) and sent (``sent``), the time it
took, the address connected to, and what was taken out of the answer (type and
fingerprint, never a value: :func:`tether.gateway.scrub.summary`). The bytes received
count against the byte budgets of the grants that allowed the request (not for a
failure: Tether's own answer is not the destination's).

With ``[guard] scan_results`` (the default), a textual answer (``text/*``, JSON, XML,
form data, YAML, JavaScript) of at most :data:`SCAN_MAX` bytes that is valid UTF-8 is
searched for secrets as the gateway searches tool results (:mod:`tether.gateway.scrub`):
each becomes ``[redacted:<type>:<fingerprint>]``. An answer that could not be checked is
withheld (:class:`Withheld`: 502); a binary or larger answer is not scanned (its injected
credentials are still taken out: :func:`tether.egress.inject.redact`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from tether.audit.record import Entry
from tether.core import Tether
from tether.egress.admission import Judged
from tether.egress.upstream import Response
from tether.gateway import scrub
from tether.tokens import VerifiedToken

__all__ = ["SCAN_INLINE", "SCAN_MAX", "Results", "Sent", "Withheld", "is_textual"]

SCAN_MAX = 1_048_576  # bytes: larger answers are not scanned (only their injected secrets)
SCAN_INLINE = 64 * 1024  # bytes: larger answers are scanned off the event loop
_TEXTUAL = ("json", "xml", "yaml", "javascript", "x-www-form-urlencoded", "csv")


class Withheld(Exception):
    """The answer could not be checked for secrets, so it is not shown."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A request that went (or was to go) upstream: its method, the decision on it, the
    bytes of its body and when it started (``time.perf_counter``)."""

    method: str
    judged: Judged
    size: int
    started: float


def is_textual(content_type: str | None) -> bool:
    """Whether a ``content-type`` names text the scan reads (see the module docstring)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith("text/") or any(word in kind for word in _TEXTUAL)


class Results:
    """The results of the egress proxy of ``tether``."""

    def __init__(self, tether: Tether) -> None:
        self.tether = tether

    async def scanned(
        self, headers: Sequence[tuple[str, str]], body: bytes
    ) -> tuple[bytes, Counter[scrub.Found]]:
        """``body`` with every secret the scan finds taken out, and what was; raises
        :class:`Withheld` when it could not be checked."""
        if not self.tether.settings.guard.scan_results or not body or len(body) > SCAN_MAX:
            return body, Counter()
        kinds = [v for k, v in headers if k.lower() == "content-type"]
        if len(kinds) != 1 or not is_textual(kinds[0]):
            return body, Counter()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body, Counter()  # not text after all: only injected secrets come out
        try:
            if len(body) > SCAN_INLINE:
                cleaned, found = await to_thread.run_sync(self._scrub, text)
            else:
                cleaned, found = self._scrub(text)
        except Exception as exc:  # not checked, not shown (fail closed)
            self.tether.metrics.inc("tether_egress_results_withheld_total")
            raise Withheld(
                f"the answer was withheld: it could not be checked for secrets "
                f"({type(exc).__name__})"
            ) from None
        return (cleaned.encode("utf-8") if found else body), found

    def _scrub(self, text: str) -> tuple[str, Counter[scrub.Found]]:
        cleaned, found = scrub.scrub({"text": text}, self.tether.settings.home)
        return str(cleaned["text"]), found

    def record(
        self,
        token: VerifiedToken,
        sent: Sent,
        response: Response,
        outcome: str,
        redacted: Mapping[scrub.Found, int] | None = None,
    ) -> None:
        """Record the result of a request the destination answered (and spend its
        bytes against the budgets of the grants that allowed it)."""
        decision = sent.judged.decision
        if decision.budget:
            self.tether.budgets.spend(decision, len(response.body))
        detail: dict[str, Any] = {
            "outcome": outcome,
            "status": response.status,
            "size": len(response.body),
            "sent": sent.size,
            "latency_ms": _since(sent.started),
            "address": response.address,
        }
        if redacted:
            detail["redacted"] = scrub.summary(redacted)
            for item, count in redacted.items():
                self.tether.metrics.inc("tether_egress_redactions_total", count, type=item.type)
        self._defer(token, sent, detail)

    def failed(self, token: VerifiedToken, sent: Sent, error: str) -> None:
        """Record a request that got no usable answer (``error``: why, as the agent was
        told; ``cancelled`` for a kill)."""
        outcome = "cancelled" if error == "cancelled" else "failed"
        detail: dict[str, Any] = {
            "outcome": outcome,
            "status": None,
            "size": 0,
            "sent": sent.size,
            "latency_ms": _since(sent.started),
        }
        if outcome == "failed":
            detail["error"] = error
        self._defer(token, sent, detail)

    def _defer(self, token: VerifiedToken, sent: Sent, detail: dict[str, Any]) -> None:
        actor = token.client_id
        self.tether.events.defer(
            Entry.of(
                "egress.result",
                actor=actor,
                subject=actor,
                chain=token.chain,
                action=sent.method,
                resource=sent.judged.resource,
                detail={**detail, "decision": sent.judged.decision.seq},
            )
        )


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
