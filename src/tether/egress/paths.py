"""Request targets through the egress proxy: one reading, decided and sent upstream.

Every request an agent sends through the proxy is a decision on the resource
``NAME/<path>`` (:func:`resource`), the path *normalised* here (:func:`normalise`). What
goes upstream is built from the normalised parts only (:attr:`Target.upstream`), never from
the agent's bytes, so the destination reads exactly the path and query Tether decided on.
The rules (docs/egress-paths.md says the same for users):

**The target.** At most 8 KiB of printable ASCII (a raw space, control, non-ASCII byte or
``#`` is refused); at most 256 query pairs. In reverse-proxy mode (``absolute=False``) the
target is what follows ``/egress/NAME``: ``""``, ``/path...`` or ``?query``. In forward
mode (``absolute=True``) it is the origin-form target sent to the host (``/path?query``):
its path must begin with the base's segments (``/v1/...`` for the base path ``/v1``;
``/v1x`` and ``/V1`` are outside); the rest is the path below the base.

**The path**, one segment at a time:

1. Percent-escapes are decoded once, to bytes (``%2e`` and ``%2E`` alike); a ``%`` not
   followed by two hex digits is refused.
2. Refused, raw or encoded: ``/`` from ``%2F`` (an encoded slash), ``\\`` (a backslash),
   ``;`` (matrix parameters: Tomcat and Spring read ``/a;x/..;/b`` their own way), a
   ``%`` from ``%25`` (a double-decoding upstream would see another path), NUL and every
   other control.
3. The bytes must be strict UTF-8 (no overlong form such as ``%c0%ae``, no surrogate).
4. Empty segments are dropped (``//`` is ``/``), then ``.`` and ``..`` are resolved as in
   RFC 3986 §5.2.4; a ``..`` that would climb above the base is refused, not clamped.
   A segment of three or more dots is refused (some servers read it as a climb).
5. Every segment left must be a resource segment (``A-Z a-z 0-9 . _ ~ : @ + = , -``,
   :func:`tether.permissions.check_resource`), else the path is refused: a grant cannot
   name it. At most 15 segments (the destination's NAME is the 16th). Case is kept:
   paths are case-sensitive.

Every character a segment may hold is sent as itself, so the path upstream carries no
percent-escape at all: an upstream that decodes once, twice or never reads the same path.
``+`` in a path is a plus (RFC 3986), not a space. A path ending in ``/`` (or in a dot
segment) keeps its trailing slash upstream (:attr:`Target.trailing_slash`); the resource
never has one.

**The query** is split on ``&`` (empty pieces dropped), each piece on its first ``=``
(none: a blank value); ``+`` is a space (as form parsers read it); names and values are
percent-decoded with the path's rules for malformed escapes, UTF-8, controls and ``%``
(any other text is allowed). Upstream, the pairs are re-encoded canonically: every byte
but ``A-Z a-z 0-9 - . _ ~`` percent-encoded (a space as ``%20``, a plus as ``%2B``), names
and values joined by ``=`` and ``&``, in order.

**Hosts** (:func:`normalise_host`): lower case, no trailing dot, an IPv6 literal without
brackets (and without a zone), a DNS name of ``a-z 0-9 -`` labels. A non-ASCII name is
refused (clients send the IDNA A-label, ``xn--...``), and so is a numeric name that is not
a plain dotted quad (``127.1``, ``0x7f.0.0.1``, ``2130706433``: resolvers read them as
addresses).

**Redirects** (:func:`within`): a ``Location`` is followed only when it resolves to the
destination's own scheme, host and port, carries no user information and its path
normalises under the base; anything else (``//evil.com``, ``\\\\evil.com``,
``https://api.github.com@evil.com/``, a control or a backslash anywhere) is not followed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

from tether.errors import InvalidRequest
from tether.permissions import check_resource

__all__ = ["BadTarget", "Target", "normalise", "normalise_host", "resource", "within"]

MAX_TARGET = 8192
MAX_QUERY_PAIRS = 256
MAX_PATH_SEGMENTS = 15  # the destination's NAME is the 16th segment of the resource
MAX_RESOURCE = 512

_PRINTABLE = re.compile(r"[\x21-\x7e]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SEGMENT = re.compile(r"[A-Za-z0-9._~:@+=,-]+")
_DOTS = re.compile(r"\.{3,}")
_QUERY_SAFE = "-._~"  # with letters and digits: nothing else goes upstream unencoded
_DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_SHOWN = 80
# what a path segment may not hold, raw or decoded, with why
_DECODED_REFUSALS = (
    (b"/", "an encoded slash (%2F)"),
    (b"\\", "a backslash"),
    (b";", "a ';' (matrix parameters: some servers read '/a;x/..;/b' their own way)"),
    (b"%", "an encoded '%' (%25: a double-decoding upstream would read another path)"),
)


class BadTarget(InvalidRequest):
    """A request target (or host) Tether refuses to decide on; ``description`` says why,
    quoting at most a short piece of the input."""


def _shown(text: str) -> str:
    """``text`` for an error message: repr'd, cut to a few dozen characters."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


@dataclass(frozen=True, slots=True)
class Target:
    """A request target, normalised.

    ``path``: decoded, relative to the destination's base, segments joined by ``/``
    (``"repos/acme/x"``; ``""`` for the base itself), every segment a resource segment.
    ``trailing_slash``: the agent's path ended in ``/`` (sent upstream, not part of the
    resource). ``query``: the decoded ``(name, value)`` pairs, in order. ``upstream``: the
    origin-form target sent to the destination, built from the parts above only."""

    path: str
    trailing_slash: bool
    query: tuple[tuple[str, str], ...]
    upstream: str


def normalise(target: str, base_path: str, *, absolute: bool) -> Target:
    """``target`` read by the rules of this module's docstring; :class:`BadTarget` when
    they refuse it. ``base_path``: the destination's (``""`` or ``/prefix``).
    ``absolute``: forward mode (the path includes the base path), else reverse mode."""
    if not isinstance(target, str) or len(target) > MAX_TARGET:
        raise BadTarget(f"the request target is longer than {MAX_TARGET} characters")
    if _PRINTABLE.fullmatch(target) is None:
        raise BadTarget(
            f"the request target {_shown(target)} holds a space, a control or a non-ASCII "
            "character: percent-encode it"
        )
    if "#" in target:
        raise BadTarget(f"the request target {_shown(target)} holds a fragment ('#')")
    raw_path, has_query, raw_query = target.partition("?")
    if absolute and not raw_path.startswith("/"):
        raise BadTarget(f"the request target {_shown(target)} is not in origin form (/path)")
    if not absolute and raw_path and not raw_path.startswith("/"):
        raise BadTarget(f"the path {_shown(raw_path)} does not start with '/'")
    segments = [_segment(raw) for raw in raw_path.split("/")[1:]]
    if absolute:
        segments = _below_base(segments, base_path, raw_path)
    path, trailing = _resolve(segments, raw_path)
    query = _query(raw_query) if has_query else ()
    return Target(path, trailing, query, _upstream(base_path, path, trailing, query))


def resource(name: str, target: Target) -> str:
    """The resource a request is decided on: ``NAME`` for the base itself, else
    ``NAME/path``, a valid resource (:func:`tether.permissions.check_resource`);
    :class:`BadTarget` when it is not (longer than a resource may be)."""
    found = f"{name}/{target.path}" if target.path else name
    try:
        return check_resource("GET", found)
    except InvalidRequest:
        raise BadTarget(
            f"the resource {_shown(found)} is longer than {MAX_RESOURCE} characters or not a "
            "resource: a grant cannot name it"
        ) from None


def normalise_host(host: str) -> str:
    """``host`` as destinations are registered: lower case, no trailing dot, an IP address
    in its canonical form (IPv6 without brackets); :class:`BadTarget` for anything else
    (see the module docstring)."""
    if not isinstance(host, str) or not host or len(host) > 255:
        raise BadTarget("the host is empty or too long")
    if not host.isascii():
        raise BadTarget(f"the host {_shown(host)} is not ASCII: send its IDNA A-label (xn--...)")
    name = host.lower()
    if name.startswith("[") and name.endswith("]"):
        return _ipv6(name[1:-1], host)
    if ":" in name:
        return _ipv6(name, host)
    name = name.removesuffix(".")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            address = None
        if address is None or str(address) != name:
            raise BadTarget(f"the host {_shown(host)} is not a plain dotted-quad IPv4 address")
        return name
    if len(name) > 253 or _DNS_NAME.fullmatch(name) is None:
        raise BadTarget(f"the host {_shown(host)} is not a DNS name or an IP address")
    return name


def within(
    base_scheme: str, base_host: str, base_port: int, base_path: str, location: str, current: str
) -> str | None:
    """The origin-form target to request next for a redirect to ``location`` (absolute or
    relative, resolved against ``current``, the target just requested upstream), when it
    stays within the destination: the same scheme, host and port, no user information,
    and a path that :func:`normalise` accepts under ``base_path``. None otherwise (it is
    not followed). What is returned is already normal:
    ``normalise(result, base_path, absolute=True).upstream == result``."""
    if (
        not isinstance(location, str)
        or not location
        or len(location) > MAX_TARGET
        or _PRINTABLE.fullmatch(location) is None
        or "\\" in location
    ):
        return None
    reference = location.partition("#")[0]
    if not reference:
        return None  # the current target again: a loop
    if reference.startswith("//"):
        reference = f"{base_scheme}:{reference}"
    found: str | None = reference
    if _SCHEME.match(reference):
        found = _same_origin(base_scheme, base_host, base_port, reference)
    elif not reference.startswith("/"):
        found = _merge(current, reference)
    if found is None:
        return None
    try:
        return normalise(found, base_path, absolute=True).upstream
    except BadTarget:
        return None


def _segment(raw: str) -> str:
    """One raw path segment, decoded by rules 1 to 3 (raw text is printable ASCII)."""
    if _BAD_ESCAPE.search(raw):
        raise BadTarget(f"the path segment {_shown(raw)} holds a malformed percent-escape")
    data = unquote_to_bytes(raw)
    for byte, why in _DECODED_REFUSALS:
        if byte in data:
            raise BadTarget(f"the path segment {_shown(raw)} holds {why}")
    if any(b < 0x20 or b == 0x7F for b in data):
        raise BadTarget(f"the path segment {_shown(raw)} holds a control character")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(
            f"the path segment {_shown(raw)} is not valid UTF-8 (an overlong or broken sequence)"
        ) from None


def _below_base(segments: list[str], base_path: str, raw_path: str) -> list[str]:
    """Forward mode: the segments after the base's own, which must open the path (empty
    segments between them are the duplicate slashes rule 4 drops)."""
    index = 0
    for expected in base_path.split("/")[1:] if base_path else []:
        while index < len(segments) and segments[index] == "":
            index += 1
        if index == len(segments) or segments[index] != expected:
            raise BadTarget(f"the path {_shown(raw_path)} is not under the destination's base")
        index += 1
    return segments[index:]


def _resolve(segments: list[str], raw_path: str) -> tuple[str, bool]:
    """Rules 4 and 5: (the path, whether it ends in a slash)."""
    out: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not out:
                raise BadTarget(f"the path {_shown(raw_path)} climbs above the destination's base")
            out.pop()
        elif _DOTS.fullmatch(segment):
            raise BadTarget(f"the path segment {_shown(segment)} is dots only")
        elif _SEGMENT.fullmatch(segment) is None:
            raise BadTarget(
                f"the path segment {_shown(segment)} holds a character outside "
                "A-Z a-z 0-9 . _ ~ : @ + = , - : a grant cannot name it"
            )
        else:
            out.append(segment)
    if len(out) > MAX_PATH_SEGMENTS:
        raise BadTarget(f"the path has more than {MAX_PATH_SEGMENTS} segments")
    trailing = bool(segments) and segments[-1] in ("", ".", "..")
    return "/".join(out), trailing


def _query(raw: str) -> tuple[tuple[str, str], ...]:
    pieces = [piece for piece in raw.split("&") if piece]
    if len(pieces) > MAX_QUERY_PAIRS:
        raise BadTarget(f"the query has more than {MAX_QUERY_PAIRS} parameters")
    pairs = []
    for piece in pieces:
        name, _, value = piece.partition("=")
        pairs.append((_query_text(name), _query_text(value)))
    return tuple(pairs)


def _query_text(raw: str) -> str:
    """A query name or value, decoded (``+`` a space) by the path's rules 1 to 3."""
    if _BAD_ESCAPE.search(raw):
        raise BadTarget(f"the query part {_shown(raw)} holds a malformed percent-escape")
    data = unquote_to_bytes(raw.replace("+", " "))
    if b"%" in data:
        raise BadTarget(
            f"the query part {_shown(raw)} holds an encoded '%' (%25: a double-decoding "
            "upstream would read another value)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(f"the query part {_shown(raw)} is not valid UTF-8") from None
    if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in text):
        raise BadTarget(f"the query part {_shown(raw)} holds a control character")
    return text


def _upstream(base_path: str, path: str, trailing: bool, query: tuple[tuple[str, str], ...]) -> str:
    if path:
        # every resource character is a pchar: quote() changes nothing, and says so here
        target = f"{base_path}/{quote(path, safe='/:@+=,~')}{'/' if trailing else ''}"
    else:
        target = f"{base_path}/" if trailing or not base_path else base_path
    if query:
        encoded = (f"{quote(n, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}" for n, v in query)
        target += "?" + "&".join(encoded)
    return target


def _ipv6(text: str, shown: str) -> str:
    try:
        if "%" not in text:
            return str(ipaddress.IPv6Address(text))
    except ValueError:
        pass
    raise BadTarget(f"the host {_shown(shown)} is not an IPv6 address (zones are refused)")


def _same_origin(scheme: str, host: str, port: int, url: str) -> str | None:
    """The origin-form part of absolute ``url`` when it names (scheme, host, port)."""
    try:
        parts = urlsplit(url)
        found_port = parts.port
        found_host = normalise_host(parts.hostname or "")
    except (ValueError, BadTarget):
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if (
        parts.scheme.lower() != scheme
        or "@" in parts.netloc
        or found_host != host
        or (found_port if found_port is not None else default) != port
    ):
        return None
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _merge(current: str, reference: str) -> str:
    """RFC 3986 §5.2.2-5.2.3 for a reference without scheme or authority: a query alone
    keeps the current path; a relative path replaces the current one's last segment."""
    path = current.partition("?")[0]
    if reference.startswith("?"):
        return path + reference
    return path[: path.rfind("/") + 1] + reference
