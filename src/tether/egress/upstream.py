"""The egress proxy's way out: one HTTP/1.1 request to a registered destination, safe by
construction.

- **Destinations only.** A request goes to its destination's ``host:port`` and nowhere
  else (the connection factory refuses any other), and is never redirected here (a
  redirect is the engine's to decide again, as a new request).
- **SSRF-proof.** The host is resolved once per new connection, *every* address it
  resolves to is checked (:func:`address_refusal`; a name with one refused address is
  refused whole), and the connection is made to a checked address, never to the name (no
  second lookup between check and connect: DNS rebinding). Unless the destination is
  ``internal``, only globally routable unicast is allowed: no private, loopback,
  link-local (cloud metadata ``169.254.169.254``), CGNAT (``100.64/10``), multicast,
  unspecified, reserved or documentation address, and no IPv6 address that embeds a
  refused IPv4 one (IPv4-mapped and -compatible, 6to4, NAT64, Teredo). An ``internal``
  destination may reach private, loopback and link-local addresses; never multicast, the
  unspecified address or broadcast. An IP-literal host is checked the same way. A pooled
  keep-alive connection was checked when it was opened.
- **TLS verified, always**: the system's trust store and certifi's; for an ``internal``
  destination also ``[egress] ca_file``. The certificate must name the destination's host
  (SNI and hostname check use the host, not the address). There is no switch to turn
  this off.
- **Bounded.** ``[egress] connect_timeout`` to resolve and connect (TLS included),
  ``[egress] timeout`` for the whole exchange; a request body above ``max_request_bytes``
  is refused (413) before anything is sent; the answer's body is read with a running count
  and abandoned, with its connection, past ``max_response_bytes``: nothing partial is
  ever returned. The answer must be plain: Tether asks for ``accept-encoding: identity``
  and refuses a compressed answer (the engine must read it to take credentials out).
- **Clean framing.** Hop-by-hop headers are stripped both ways (:mod:`tether.egress.headers`);
  ``host``, ``content-length`` and ``accept-encoding`` are Tether's.

Every failure is an :class:`EgressFailure` (502, or 504 for a timeout) whose description
names the destination and what failed, never a header value, a query or an answer's
bytes; it is also passed through the process's redactor (:data:`tether.redact.SECRETS`).

Why httpcore: it is the pool under httpx (already a dependency), speaks HTTP/1.1 through
h11 with its header limits, never follows redirects and lets the connection factory be
replaced (:class:`tether.egress.addresses.Guarded`), which is all the SSRF rules need;
raw asyncio + h11 would re-implement its pooling and connection state for no measurable
gain (on loopback it adds less per request than an httpx client does).
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import certifi
import httpcore

from tether.config import EgressSettings
from tether.egress.addresses import Guarded, Origin, Resolver, system_resolver
from tether.egress.failures import (
    AddressRefused,
    BadAnswer,
    EgressFailure,
    RequestTooLarge,
    ResponseTooLarge,
    TlsFailed,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tether.egress.headers import connection_named, inbound
from tether.errors import InvalidRequest
from tether.upstreams.destinations import Destination

__all__ = [
    "AddressRefused",
    "BadAnswer",
    "EgressFailure",
    "Origin",
    "RequestTooLarge",
    "Resolver",
    "Response",
    "ResponseTooLarge",
    "TlsFailed",
    "Upstream",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]

_POOLS_MAX = 256  # origins with a pool of their own (the oldest is closed beyond)
_KEEPALIVE = 20  # idle connections kept per origin
_KEEPALIVE_EXPIRY = 15.0  # seconds an idle connection (checked when opened) is kept
_CONNECTIONS = 100  # connections per origin at a time
_FRAMING = frozenset({"host", "content-length", "accept-encoding", "expect"})
_BODYFUL = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class Response:
    """The destination's answer: ``headers`` with lower-case names, hop-by-hop and
    framing ones stripped; the whole ``body``; ``address`` the IP connected to."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    address: str


class Upstream:
    """Sends requests to destinations (see the module doc); one per process, closed with
    :meth:`aclose`. Connections are pooled per origin and kept alive briefly."""

    def __init__(self, settings: EgressSettings, *, resolve: Resolver | None = None) -> None:
        self._settings = settings
        self._resolve = resolve or system_resolver
        self._public = _tls_context(None)
        self._internal = _tls_context(settings.ca_file) if settings.ca_file else self._public
        self._pools: OrderedDict[Origin, httpcore.AsyncConnectionPool] = OrderedDict()

    async def send(
        self,
        destination: Destination,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> Response:
        """``method target`` with ``headers`` and ``body`` to ``destination``; its answer,
        whole. ``target`` is origin-form (``/v1/repos/x?a=b``), normalised, the base's
        path included. Raises :class:`EgressFailure`."""
        return await self.request(Origin.of(destination), method, target, headers, body)

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        max_bytes: int | None = None,
    ) -> Response:
        """:meth:`send` to any ``origin`` under its rules (the OAuth token endpoint of a
        destination), the answer capped at ``max_bytes`` (default: the setting's)."""
        settings = self._settings
        if len(body) > settings.max_request_bytes:
            raise RequestTooLarge(
                f"the request body to {origin.name} is larger than "
                f"{settings.max_request_bytes} bytes ([egress] max_request_bytes)"
            )
        if not target.startswith("/") or any(c in target for c in "\r\n\x00 #"):
            raise InvalidRequest(f"the request target for {origin.name} is not origin-form")
        limit = settings.max_response_bytes if max_bytes is None else max_bytes
        total = settings.timeout.total_seconds()
        try:
            outgoing = self._outgoing(origin, method, target, headers, body)
            with anyio.fail_after(total):
                return await self._exchange(await self._pool(origin), origin, outgoing, limit)
        except EgressFailure:
            raise
        except (httpcore.LocalProtocolError, UnicodeEncodeError):
            raise InvalidRequest(
                f"the request to {origin.name} cannot be sent as HTTP/1.1: a header name or "
                "value, the method or the target is not valid"
            ) from None
        except (TimeoutError, httpcore.TimeoutException):
            raise UpstreamTimeout(
                f"{origin.name} ({origin.authority}) did not answer within "
                f"{total:g} s ([egress] timeout / connect_timeout)"
            ) from None
        except Exception as exc:
            raise _failure(origin, exc) from None

    def _outgoing(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> httpcore.Request:
        settings = self._settings
        total = settings.timeout.total_seconds()
        url = httpcore.URL(
            scheme=origin.scheme.encode(),
            host=origin.host.encode(),
            port=origin.port,
            target=target.encode("ascii"),
        )
        timeouts = {"connect": settings.connect_timeout.total_seconds()}
        timeouts |= {"read": total, "write": total, "pool": total}
        return httpcore.Request(
            method.encode("ascii"),
            url,
            headers=_framed(headers, origin, method, body),
            content=body,
            extensions={"timeout": timeouts},
        )

    async def _exchange(
        self,
        pool: httpcore.AsyncConnectionPool,
        origin: Origin,
        outgoing: httpcore.Request,
        limit: int,
    ) -> Response:
        answer = await pool.handle_async_request(outgoing)
        try:
            raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in answer.headers]
            _check_plain(raw, origin)
            _check_declared(raw, origin, limit)
            body = bytearray()
            async for chunk in answer.aiter_stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(origin, limit)
            stream = answer.extensions.get("network_stream")
            peer = stream.get_extra_info("server_addr") if stream is not None else None
        finally:
            await answer.aclose()
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        return Response(answer.status, tuple(inbound(raw)), bytes(body), address)

    async def _pool(self, origin: Origin) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(origin)
        if pool is not None:
            self._pools.move_to_end(origin)
            return pool
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self._internal if origin.internal else self._public,
            max_connections=_CONNECTIONS,
            max_keepalive_connections=_KEEPALIVE,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
            http1=True,
            http2=False,
            retries=0,
            network_backend=Guarded(origin, self._resolve),
        )
        self._pools[origin] = pool
        while len(self._pools) > _POOLS_MAX:
            _, oldest = self._pools.popitem(last=False)
            await oldest.aclose()
        return pool

    async def aclose(self) -> None:
        """Close every pooled connection."""
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


def _tls_context(extra: Any) -> ssl.SSLContext:
    """Verification on: the system's CAs, certifi's, and ``extra`` (a PEM file)."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    if extra is not None:
        try:
            context.load_verify_locations(str(extra))
        except (OSError, ssl.SSLError) as exc:
            raise InvalidRequest(
                f"[egress] ca_file {extra} cannot be read as PEM certificates "
                f"({type(exc).__name__})"
            ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _framed(
    headers: Sequence[tuple[str, str]], origin: Origin, method: str, body: bytes
) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop or framing ones, then Tether's framing."""
    drop = connection_named(headers) | _FRAMING
    framed = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name.lower() not in drop
    ]
    framed += [(b"host", origin.authority.encode("ascii")), (b"accept-encoding", b"identity")]
    if body or method.upper() in _BODYFUL:
        framed.append((b"content-length", str(len(body)).encode("ascii")))
    return framed


def _check_plain(raw: list[tuple[str, str]], origin: Origin) -> None:
    codings = [
        c.strip().lower()
        for name, value in raw
        if name == "content-encoding"
        for c in value.split(",")
    ]
    if any(c not in ("", "identity") for c in codings):
        raise BadAnswer(
            f"{origin.name} answered with a compressed body ({', '.join(codings)}) although "
            "asked for identity: Tether must read an answer to take credentials out of it"
        )


def _check_declared(raw: list[tuple[str, str]], origin: Origin, limit: int) -> None:
    for name, value in raw:
        if name == "content-length" and value.strip().isdigit() and int(value) > limit:
            raise _too_large(origin, limit)


def _too_large(origin: Origin, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"the answer of {origin.name} is larger than {limit} bytes ([egress] max_response_bytes)"
    )


def _failure(origin: Origin, exc: Exception) -> EgressFailure:
    """What failed, said without the exception's text (which may quote an answer's bytes)
    but for a certificate check's reason."""
    where = f"{origin.name} ({origin.authority})"
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TlsFailed(f"the TLS certificate of {where} is refused: {cause.verify_message}")
        if isinstance(cause, ssl.SSLError):
            return TlsFailed(
                f"the TLS handshake with {where} failed ({cause.reason or 'SSLError'})"
            )
    if isinstance(exc, httpcore.RemoteProtocolError):
        return BadAnswer(f"{where} answered something that is not valid HTTP/1.1")
    return UpstreamUnreachable(f"the connection to {where} failed ({type(exc).__name__})")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
