"""The addresses the egress proxy may connect to (its SSRF rules), and the system resolver.

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
``internal`` destination may also reach private, loopback, link-local, shared and
site-local addresses, but never multicast, unspecified or broadcast ones, which are not
a host. A string that is not an IP address is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import anyio

__all__ = ["address_refusal", "system_resolver"]

_SHARED = IPv4Network("100.64.0.0/10")  # RFC 6598 (CGNAT)
_COMPATIBLE = IPv6Network("::/96")  # RFC 4291 IPv4-compatible (deprecated), :: and ::1 too
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))  # RFC 6052, 8215
_SITE_LOCAL = IPv6Network("fec0::/10")
_BROADCAST = IPv4Address("255.255.255.255")


def address_refusal(address: str, *, internal: bool) -> str | None:
    """Why ``address`` may not be reached by a destination (``internal`` or not); None
    when it may."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "which is not an IP address"
    if isinstance(ip, IPv6Address):
        return _v6(ip, internal)
    return _v4(ip, internal)


def _v4(ip: IPv4Address, internal: bool) -> str | None:
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
    if ip in _SHARED:
        return "a shared (CGNAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "not a globally routable address"
    return None


def _v6(ip: IPv6Address, internal: bool) -> str | None:
    if ip.ipv4_mapped is not None:
        why = _v4(ip.ipv4_mapped, internal)
        return f"an IPv4-mapped address of one that is {why}" if why else None
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "not a host's address"
    if internal:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in _COMPATIBLE:
        return "an IPv4-compatible address"
    if ip.teredo is not None:
        return "a Teredo address"
    embedded = ip.sixtofour or next(
        (IPv4Address(int(ip) & 0xFFFFFFFF) for net in _NAT64 if ip in net), None
    )
    if embedded is not None:
        why = _v4(embedded, internal)
        return f"an address that embeds one that is {why}" if why else None
    if ip in _SITE_LOCAL:
        return "a site-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "not a globally routable address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses (A and AAAA) the system resolves ``host`` to, in its order."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]
