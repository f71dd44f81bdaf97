"""Sending an allowed request to its destination: the credential injected, redirects
within the destination followed (each hop judged again), an OAuth destination's token
refreshed once on a 401, the secrets taken out of the answer and the result recorded
(see :mod:`tether.egress.engine` for the rules, :mod:`tether.egress.results` for what is
recorded)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from anyio import to_thread

from tether.core import Tether
from tether.discover.interface import fingerprint
from tether.egress import headers as hygiene
from tether.egress import paths
from tether.egress.admission import Admission, Judged, Stop
from tether.egress.connections import Authenticated
from tether.egress.exchange import Answer, Outbound, refusal
from tether.egress.inject import Injector, redact
from tether.egress.results import Results, Sent, Withheld
from tether.egress.upstream import EgressFailure, Resolver, Response, Upstream
from tether.gateway import scrub
from tether.upstreams.destinations import Destination

__all__ = ["REDIRECTS", "Forwarding"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language", "digest"})


@dataclass(frozen=True, slots=True)
class _Hop:
    """One request sent upstream: what, and the decision that let it go."""

    method: str
    judged: Judged
    body: bytes
    headers: tuple[tuple[str, str], ...]


class Forwarding:
    """The forwarding half of the egress proxy of ``tether``."""

    def __init__(
        self, tether: Tether, admission: Admission, *, resolve: Resolver | None = None
    ) -> None:
        self.tether = tether
        self.admission = admission
        self.upstream = Upstream(tether.settings.egress, resolve=resolve)
        self.injector = Injector(tether.vault, self.upstream, clock=tether.clock)
        self.results = Results(tether)

    async def aclose(self) -> None:
        self.injector.close()
        await self.upstream.aclose()

    async def forward(
        self,
        token: Authenticated,
        destination: Destination,
        outbound: Outbound,
        judged: Judged,
    ) -> Answer:
        """Send the allowed request (and the redirects it leads to, each judged); the
        agent's answer."""
        hop = _Hop(outbound.method, judged, outbound.body, outbound.headers)
        followed = 0
        while True:
            sent = await self._send(token, destination, hop)
            if isinstance(sent, Answer):
                return sent
            response, secrets, started = sent
            location = _location(response)
            if response.status not in REDIRECTS or location is None:
                return await self._answer(token, destination, hop, response, secrets, started)
            await self._recorded(token, hop, response, started, outcome="redirect")
            current = hop.judged.target.upstream
            following = paths.within(
                destination.scheme,
                destination.host,
                destination.port,
                destination.base_path,
                location,
                current,
            )
            if following is None:
                return await self._refused_redirect(token, destination, hop, location)
            followed += 1
            if followed > self.tether.settings.egress.max_redirects:
                limit = self.tether.settings.egress.max_redirects
                why = f"more than {limit} redirects ([egress] max_redirects): not followed"
                await self._refuse(token, hop, why)
                return refusal(502, "too_many_redirects", why)
            after = await self._next(token, destination, hop, response.status, following)
            if isinstance(after, Answer):
                return after
            hop = after

    async def _send(
        self, token: Authenticated, destination: Destination, hop: _Hop
    ) -> tuple[Response, tuple[tuple[str, str], ...], float] | Answer:
        """One hop upstream (once more with a fresh token for an OAuth destination that
        answers 401); the response, the secrets injected and when it started, or the
        answer for a failure (recorded)."""
        outgoing = hygiene.outbound(hop.headers, token.bearer)
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                injected = await self.injector.inject(
                    destination, hop.judged.target.upstream, outgoing
                )
                response = await self.upstream.send(
                    destination, hop.method, injected.target, injected.headers, hop.body
                )
            except EgressFailure as failure:
                await self._failed(token, hop, failure, started)
                return refusal(failure.status, failure.error, failure.description)
            if (
                response.status == 401
                and destination.oauth is not None
                and attempt == 1
                and self.injector.invalidate(destination)  # an older token may be revoked
            ):
                continue
            return response, injected.secrets, started
        raise AssertionError("unreachable")  # pragma: no cover

    async def _next(
        self,
        token: Authenticated,
        destination: Destination,
        hop: _Hop,
        status: int,
        following: str,
    ) -> _Hop | Answer:
        """The next hop of a redirect to ``following`` (origin-form, within the
        destination), judged and recorded as a request of its own."""
        method, body, headers = hop.method, hop.body, hop.headers
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method, body = "GET", b""
            headers = tuple((k, v) for k, v in headers if k.lower() not in _BODY_HEADERS)
        try:
            judged = await to_thread.run_sync(
                lambda: self.admission.judge(
                    token, destination, method, following, headers, body, absolute=True
                )
            )
        except Stop as stop:
            return stop.answer
        return _Hop(method, judged, body, headers)

    async def _answer(
        self,
        token: Authenticated,
        destination: Destination,
        hop: _Hop,
        response: Response,
        secrets: tuple[tuple[str, str], ...],
        started: float,
    ) -> Answer:
        """The destination's answer as the agent may see it, recorded."""
        kept = hygiene.inbound(response.headers)
        shown, body, counts = redact(kept, response.body, secrets)
        prints = {what: fingerprint(value) for what, value in secrets if what in counts}
        found = scrub.injected(counts, prints)
        try:
            body, scanned = await self.results.scanned(shown, body)
        except Withheld as withheld:
            await self._recorded(token, hop, response, started, outcome="withheld")
            return refusal(502, "result_withheld", str(withheld))
        redacted: Counter[scrub.Found] = Counter(found)
        redacted.update(scanned)
        await self._recorded(token, hop, response, started, outcome="ok", redacted=redacted)
        detail = {"decision": hop.judged.decision.seq, "resource": hop.judged.resource}
        return Answer(response.status, tuple(shown), body, detail=detail)

    async def _refused_redirect(
        self, token: Authenticated, destination: Destination, hop: _Hop, location: str
    ) -> Answer:
        where = _origin_of(location)
        why = (
            f"{destination.name} redirected to {where}, outside the destination "
            f"({destination.base}): not followed"
        )
        await self._refuse(token, hop, why)
        return refusal(502, "redirect_refused", why)

    async def _refuse(self, token: Authenticated, hop: _Hop, why: str) -> None:
        await to_thread.run_sync(
            self.admission.refuse, token.client_id, why, hop.judged.resource, hop.method
        )

    async def _failed(
        self, token: Authenticated, hop: _Hop, failure: EgressFailure, started: float
    ) -> None:
        sent = Sent(hop.method, hop.judged, len(hop.body), started)
        self.results.failed(token, sent, failure.error)

    async def _recorded(
        self,
        token: Authenticated,
        hop: _Hop,
        response: Response,
        started: float,
        *,
        outcome: str,
        redacted: Counter[scrub.Found] | None = None,
    ) -> None:
        sent = Sent(hop.method, hop.judged, len(hop.body), started)
        self.results.record(token, sent, response, outcome, redacted)

    def cancelled(self, token: Authenticated, method: str, judged: Judged, why: str) -> None:
        """Record an exchange cancelled by a kill (its result: ``cancelled``)."""
        self.admission.refuse(token.client_id, why, judged.resource, method)
        self.results.failed(token, Sent(method, judged, 0, time.perf_counter()), "cancelled")


def _location(response: Response) -> str | None:
    found = [v for k, v in response.headers if k.lower() == "location"]
    return found[0] if len(found) == 1 else None


def _origin_of(location: str) -> str:
    """Where a ``Location`` points, as a refusal may say (its origin, never its path or
    query: they could carry anything)."""
    try:
        parts = urlsplit(location)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or '?'}://{host}{port}"
    except ValueError:
        return "an address that does not parse"
