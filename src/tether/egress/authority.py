"""Where a forward-proxy request goes: the host and port that ``CONNECT``, a ``Host``
header or an absolute-form URL name (:func:`parse_authority`), and which destination at
that host serves a request target (:func:`destination_for`).

A host is compared as Tether stores destinations' hosts: a DNS name in lower case without
a trailing dot, an IP address in its canonical form (an IPv6 one without brackets). Only
DNS names of letters, digits, dots and hyphens, IPv4 and bracketed IPv6 addresses, and
ports 1-65535 are authorities; anything else (user info, percent-encoding, a zone ID,
blanks) is not one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from tether.upstreams.destinations import Destination

__all__ = ["Authority", "destination_for", "parse_authority"]

_AUTHORITY = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]{2,45})\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True, slots=True)
class Authority:
    host: str  # lower case; an IP address without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_authority(text: str, *, default: int | None) -> Authority | None:
    """``host[:port]`` parsed (``default``: the port when none is given; None: one must be);
    None when it is not one."""
    found = _AUTHORITY.fullmatch(text.strip())
    if found is None:
        return None
    if found["port"] is None and default is None:
        return None
    port = int(found["port"]) if found["port"] is not None else default
    if port is None or not 0 < port < 65536:
        return None
    if found["v6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(found["v6"]))
        except ValueError:
            return None
    else:
        host = found["name"].lower().rstrip(".")
        with suppress(ValueError):
            host = str(ipaddress.ip_address(host))
    return Authority(host, port) if host else None


def destination_for(found: Sequence[Destination], target: str) -> Destination | None:
    """The destination whose base path holds ``target``'s path (the longest one)."""
    path = target.split("?", 1)[0]
    best: Destination | None = None
    for destination in found:
        base = destination.base_path
        if base and path != base and not path.startswith(base + "/"):
            continue
        if best is None or len(base) > len(best.base_path):
            best = destination
    return best
