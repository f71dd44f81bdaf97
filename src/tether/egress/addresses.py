"""The addresses the egress proxy may connect to (its SSRF rules), and the connection
factory that enforces them.

:class:`Guarded` is the egress pool's network backend for one :class:`Origin`: it opens
connections to that origin's host and port only; it resolves the host once per
connection (:data:`Resolver`, by default :func:`system_resolver`: the system's A and
AAAA answers), refuses the connection if *any* address is refused
(:class:`~tether.egress.failures.AddressRefused`), and connects to a checked address,
never to the name, so no second lookup can rebind it. An IP-literal host is checked the
same way.

:func:`address_refusal` says why an IP address may not be reached, or None when it may.
For a destination that is not ``internal``, an address must be globally routable
unicast: refused are private (RFC 1918, ``fc00::/7``), loopback, link-local
(``169.254/16`` with the cloud metadata endpoint ``169.254.169.254``, ``fe80::/10``),
shared / CGNAT (``100.64/10``), multicast, unspecified (``0.0.0.0``, ``::``), broadcast,
reserved and documentation ranges, site-local, and every IPv6 form that carries an IPv4
address a host would reach instead: IPv4-mapped (``::ffff:a.b.c.d``, checked as the IPv4
address it maps), IPv4-compatible (``::a.b.c.d``, refused), 6to4 (``2002::/16``, checked
as the IPv4 address it embeds), NAT64 (``64:ff9b::/96`` and ``64:ff9b:1::/48``, checked as
the IPv4 address in their last 32 bits) and Teredo (``2001::/32``, refused). An
``internal`` destination may also reach private, loopback, shared and site-local
addresses, and link-local ones only when its base names that address itself (an IP
literal): a host *name* of an internal destination that resolves into link-local space
(where the cloud metadata endpoint lives) is refused, so a poisoned or rebound DNS answer
cannot turn an internal API into the metadata service. Never multicast, unspecified or
broadcast ones, which are not a host. A string that is not an IP address is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import anyio
import httpcore

from tether.egress.failures import AddressRefused, UpstreamUnreachable
from tether.errors import InvalidRequest
from tether.upstreams.destinations import Destination, parse_base

__all__ = ["Guarded", "Origin", "Resolver", "address_refusal", "system_resolver"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP addresses`` (the default: the system's, A and AAAA)."""


_SHARED = IPv4Network("100.64.0.0/10")  # RFC 6598 (CGNAT)
_COMPATIBLE = IPv6Network("::/96")  # RFC 4291 IPv4-compatible (deprecated), :: and ::1 too
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))  # RFC 6052, 8215
_SITE_LOCAL = IPv6Network("fec0::/10")
_BROADCAST = IPv4Address("255.255.255.255")


def address_refusal(address: str, *, internal: bool, literal: bool = False) -> str | None:
    """Why ``address`` may not be reached by a destination (``internal`` or not); None
    when it may. ``literal``: the destination's base names this very address (an
    internal destination reaches link-local space only so)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "which is not an IP address"
    why = _refusal(ip, internal)
    if why is None and internal and not literal and _link_local(ip):
        return (
            "a link-local address (cloud metadata lives there): an internal destination "
            "reaches one only when its --base names the address itself"
        )
    return why


def _link_local(ip: IPv4Address | IPv6Address) -> bool:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_link_local
    return ip.is_link_local


def _refusal(ip: IPv4Address | IPv6Address, internal: bool) -> str | None:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        why = _refusal(ip.ipv4_mapped, internal)
        return f"an IPv4-mapped address of one that is {why}" if why else None
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip == _BROADCAST:
        return "not a host's address"
    if internal:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if isinstance(ip, IPv6Address):
        embedded = _embedded(ip)
        if isinstance(embedded, str):
            return embedded
        if embedded is not None:
            why = _refusal(embedded, internal)
            return f"an address that embeds one that is {why}" if why else None
    return _unroutable(ip)


def _unroutable(ip: IPv4Address | IPv6Address) -> str | None:
    """Why ``ip``, not loopback nor link-local, is not globally routable; None if it is."""
    if ip in _SHARED:
        return "a shared (CGNAT) address"
    if ip in _SITE_LOCAL:
        return "a site-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "not a globally routable address"
    return None


def _embedded(ip: IPv6Address) -> IPv4Address | str | None:
    """The IPv4 address a host reaches through ``ip`` (6to4, NAT64), why it is refused
    outright (IPv4-compatible, Teredo), or None when it embeds none."""
    if ip in _COMPATIBLE:
        return "an IPv4-compatible address (deprecated)"
    if ip.teredo is not None:
        return "a Teredo address"
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses (A and AAAA) the system resolves ``host`` to, in its order."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request goes (``name``: what messages call it) and under which rules."""

    scheme: str
    host: str
    port: int
    internal: bool
    name: str

    @classmethod
    def of(cls, destination: Destination) -> Origin:
        return cls(
            destination.scheme,
            destination.host,
            destination.port,
            destination.internal,
            destination.name,
        )

    @classmethod
    def from_url(cls, url: str, *, internal: bool, name: str) -> tuple[Origin, str]:
        """The origin and the origin-form target of an ``http(s)`` ``url`` (its host
        checked as a destination's base is; InvalidRequest when it is not usable)."""
        scheme, sep, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        if not sep or "?" in authority or "#" in url:
            raise InvalidRequest(f"{name}: not an http(s) URL without a fragment")
        _, scheme, host, port, _ = parse_base(f"{scheme}://{authority}")
        return cls(scheme, host, port, internal, name), f"/{path}" if slash else "/"

    @property
    def authority(self) -> str:
        """As the ``host`` header says it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = (self.scheme, self.port) in (("https", 443), ("http", 80))
        return host if default else f"{host}:{self.port}"


class Guarded(httpcore.AnyIOBackend):
    """Opens connections to one origin only, at an address checked for it."""

    def __init__(self, origin: Origin, resolve: Resolver) -> None:
        self._origin = origin
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        origin = self._origin
        if host != origin.host or port != origin.port:  # never: the pool is the origin's
            raise AddressRefused(f"{origin.name}: a connection elsewhere than its host")
        try:
            with anyio.fail_after(timeout):
                addresses = await self._checked()
                return await self._first(addresses, local_address, socket_options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {origin.name}") from None

    async def _first(
        self,
        addresses: list[str],
        local_address: str | None,
        socket_options: Iterable[Any] | None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to the first of ``addresses`` (all checked) that takes one."""
        origin = self._origin
        for address in addresses:
            with contextlib.suppress(httpcore.ConnectError):
                return await super().connect_tcp(
                    address, origin.port, None, local_address, socket_options
                )
        raise UpstreamUnreachable(
            f"{origin.name}: no connection to {origin.authority} could be made "
            f"(tried {', '.join(addresses)})"
        )

    async def _checked(self) -> list[str]:
        """Every address of the origin's host, each allowed; else AddressRefused."""
        origin = self._origin
        try:
            literal = _literal(origin.host)
            found = [origin.host] if literal else await self._resolve(origin.host, origin.port)
        except OSError as exc:
            raise UpstreamUnreachable(
                f"{origin.name}: {origin.host} does not resolve ({type(exc).__name__})"
            ) from None
        addresses = list(dict.fromkeys(found))
        if not addresses:
            raise UpstreamUnreachable(f"{origin.name}: {origin.host} resolves to no address")
        for address in addresses:
            why = (
                address_refusal(address, internal=origin.internal, literal=literal)
                if isinstance(address, str)
                else "which is not an IP address"
            )
            if why is not None:
                raise AddressRefused(
                    f"{origin.name}: {origin.host} resolves to {address}, {why}"
                    + ("" if origin.internal else " (the destination is not internal)")
                )
        return addresses


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
