"""What ``tether egress add`` is given, parsed and checked: a destination's base URL, the
credentials injected into its requests and its OAuth client.

Everything here is admin input, but it decides where secrets go, so it is read strictly
and one way only:

- **A base URL** (:func:`parse_base`) is ``http(s)://HOST[:PORT][/PATH]`` in printable
  ASCII without blanks, at most 2,048 characters: no user information (``u:p@``, or a
  bare ``@`` that hides the real host), no query, no fragment, no percent-encoding, no
  backslash (a WHATWG parser reads it as ``/``), no empty, ``.`` or ``..`` path segment.
  ``HOST`` is a DNS name (lower-cased, one trailing dot dropped, whose last label is not a
  number: ``127.1`` and ``0x7f.1`` are addresses to a resolver), a dotted-quad IPv4
  address, or an IPv6 literal in brackets (no zone). ``PORT`` is 1-65535 in digits; the
  scheme's default is left out of the normal form. A non-ASCII host is refused: give its
  IDNA (``xn--``) form.
- **An injection** (:func:`parse_injection`), ``--credential``: ``HEADER=REF``,
  ``HEADER=TEXT{REF}TEXT``, ``query:NAME=REF`` or ``basic:USER=REF``; ``REF`` is where the
  secret lives (``env:VAR`` or ``vault:<path>#<field>``; ``vault-token:`` is for agents),
  never the secret. A header is an RFC 9110 token that is not one of the headers that
  frame or route a request (``Host``, ``Content-Length``, ``Transfer-Encoding``,
  ``Connection``, ``Proxy-Authorization`` ...); a template's text is printable ASCII that
  neither starts nor ends with a blank.
- **An OAuth client** (:func:`parse_oauth`): a token URL read as a base URL is (a query
  allowed), a client ID and scope of printable ASCII, the client secret a reference.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tether.errors import InvalidRequest
from tether.upstreams.credentials import FORBIDDEN_HEADERS, HEADER_NAME, check_ref

__all__ = [
    "MAX_URL",
    "Injection",
    "OAuthClient",
    "Url",
    "parse_base",
    "parse_injection",
    "parse_oauth",
    "parse_url",
]

MAX_URL = 2048
_MAX_SPEC = 1024
_MAX_CLIENT_ID = 256
_URL_TEXT = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no blank
_TEXT = re.compile(r"[\x20-\x7e]*")
_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]@]+)(?::(?P<port>[0-9]{1,5}))?")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label an IPv4 parser takes for a number
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,=:@-]+")  # RFC 3986 pchar, without % and ;
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_USER = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]{0,128}")  # no ':' (RFC 7617)
_TEMPLATE = re.compile(r"(?P<before>[^{}]*)\{(?P<ref>[^{}]+)\}(?P<after>[^{}]*)")
# headers an injection may not set: the framing, the route, the hop, the body's meaning
NOT_SET = FORBIDDEN_HEADERS | {
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-encoding",
    "content-type",
}


@dataclass(frozen=True, slots=True)
class Injection:
    """One secret injected into every request: ``kind`` ``header`` (``name`` the header,
    ``template`` its value with ``{}`` for the secret), ``query`` (``name`` the
    parameter) or ``basic`` (``name`` the user name, the secret its password)."""

    kind: str
    name: str
    ref: str
    template: str = "{}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "ref": self.ref, "template": self.template}

    def describe(self) -> str:
        """As ``--credential`` takes it (references only)."""
        if self.kind == "query":
            return f"query:{self.name}={self.ref}"
        if self.kind == "basic":
            return f"basic:{self.name}={self.ref}"
        if self.template == "{}":
            return f"{self.name}={self.ref}"
        return f"{self.name}={self.template.replace('{}', '{' + self.ref + '}')}"


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """An OAuth client (RFC 6749 §4.4) whose access token Tether injects as a bearer."""

    token_url: str
    client_id: str
    client_secret: str  # a reference
    scope: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class Url:
    """An http(s) URL as :func:`parse_url` read it. ``host`` is lower case (an IP literal
    without brackets), ``path`` is ``""`` or ``/seg/...`` without a trailing slash."""

    normal: str
    scheme: str
    host: str
    port: int
    path: str
    query: str = ""


def parse_url(text: object, what: str, *, query: bool = False) -> Url:
    """``text`` read as the module docstring says a base URL is (with a query when
    ``query``); InvalidRequest naming ``what`` and the rule otherwise."""
    if not isinstance(text, str) or len(text) > MAX_URL or _URL_TEXT.fullmatch(text) is None:
        raise InvalidRequest(
            f"{what} must be an http(s) URL of at most {MAX_URL} printable ASCII characters "
            "without blanks (a non-ASCII host: give its xn-- form)"
        )
    if "%" in text or "\\" in text or "#" in text or (not query and "?" in text):
        raise InvalidRequest(
            f"{what} takes no percent-encoding, backslash, fragment"
            + ("" if query else " or query: grants name the paths below it")
        )
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not text.lower().startswith(f"{scheme}://"):
        raise InvalidRequest(f"{what} must be an http or https URL with a host")
    if "@" in parts.netloc:
        raise InvalidRequest(f"{what} must not carry user information (use --credential)")
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if authority is None:
        raise InvalidRequest(f"{what} has no usable host[:port]")
    host = _host(authority["host"], what)
    port = int(authority["port"]) if authority["port"] else (443 if scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise InvalidRequest(f"{what}'s port must be 1-65535")
    path = parts.path.rstrip("/")
    for segment in path.split("/")[1:]:
        if _SEGMENT.fullmatch(segment) is None or segment in (".", ".."):
            raise InvalidRequest(
                f"{what}'s path must be plain segments (no empty, '.', '..' or ';' segment)"
            )
    shown = f"[{host}]" if ":" in host else host
    default = (scheme, port) in (("https", 443), ("http", 80))
    normal = f"{scheme}://{shown}{'' if default else f':{port}'}{path}"
    if parts.query:
        normal += f"?{parts.query}"
    return Url(normal, scheme, host, port, path, parts.query)


def _host(text: str, what: str) -> str:
    if text.startswith("["):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise InvalidRequest(f"{what}: {text!r} is not an IPv6 address") from None
    host = text.lower()
    host = host.removesuffix(".")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if len(host) > 253 or _DNS_NAME.fullmatch(host) is None:
        raise InvalidRequest(f"{what}: {text!r} is not a DNS name or IP address")
    if _NUMBER.fullmatch(host.rsplit(".", 1)[-1]):
        raise InvalidRequest(
            f"{what}: {text!r} ends in a number, which resolvers read as an address: "
            "write an IPv4 address as four decimal numbers"
        )
    return host


def parse_base(base: object) -> tuple[str, str, str, int, str]:
    """``base`` checked: (normalised base, scheme, host, port, base path)."""
    url = parse_url(base, "--base")
    return url.normal, url.scheme, url.host, url.port, url.path


def parse_injection(text: object) -> Injection:
    """One ``--credential``: ``HEADER=REF``, ``HEADER=TEXT{REF}TEXT``, ``query:NAME=REF``
    or ``basic:USER=REF`` (see the module docstring)."""
    if not isinstance(text, str) or len(text) > _MAX_SPEC:
        raise InvalidRequest(f"a credential is text of at most {_MAX_SPEC} characters")
    name, sep, value = text.partition("=")
    if not sep or not value:  # the text is not shown: it may be a pasted secret
        raise InvalidRequest(
            "a credential is HEADER=REF, 'HEADER=Bearer {REF}', query:NAME=REF or "
            "basic:USER=REF (REF: env:VAR or vault:<path>#<field>)"
        )
    if name.startswith("query:"):
        param = name.removeprefix("query:")
        if _QUERY_NAME.fullmatch(param) is None:
            raise InvalidRequest(f"{param!r} is not a query parameter name Tether may set")
        return Injection("query", param, _ref(value, f"query:{param}"))
    if name.startswith("basic:"):
        user = name.removeprefix("basic:")
        if _USER.fullmatch(user) is None:
            raise InvalidRequest(f"{user!r} is not a basic-auth user name (no ':' or blanks)")
        return Injection("basic", user, _ref(value, f"basic:{user}"))
    if HEADER_NAME.fullmatch(name) is None or name.lower() in NOT_SET:
        raise InvalidRequest(f"{name!r} is not a header Tether may set")
    found = _TEMPLATE.fullmatch(value)
    if found is None:
        if "{" in value or "}" in value:
            raise InvalidRequest(f"{name}: a header template holds one {{REF}}")
        return Injection("header", name, _ref(value, name))
    before, after = found["before"], found["after"]
    if _TEXT.fullmatch(before + after) is None:
        raise InvalidRequest("a header template's text must be printable ASCII")
    if before[:1] in (" ", "\t") or after[-1:] in (" ", "\t"):
        raise InvalidRequest("a header value neither starts nor ends with a blank (RFC 9110)")
    return Injection("header", name, _ref(found["ref"], name), f"{before}{{}}{after}")


def _ref(value: str, where: str) -> str:
    """``value`` if it is a reference (:func:`check_ref`). What is not one is refused
    without being shown: it may be the secret itself, pasted."""
    if value.partition(":")[0] not in ("env", "vault", "vault-token"):
        raise InvalidRequest(
            f"{where}: give where the secret lives (env:VAR or vault:<path>#<field>), "
            "never the secret itself (what was given is not shown)"
        )
    return check_ref(value)


def parse_oauth(
    token_url: str | None,
    client_id: str | None,
    client_secret: str | None,
    scope: str | None,
    *,
    internal: bool,
) -> OAuthClient | None:
    """The OAuth client of ``--oauth-*``, or None when none is given. Its token URL is
    https unless the destination is ``internal`` (the client secret travels on it)."""
    given = [token_url, client_id, client_secret]
    if all(v is None for v in given):
        if scope:
            raise InvalidRequest("--oauth-scope needs an OAuth client (--oauth-token-url ...)")
        return None
    if token_url is None or client_id is None or client_secret is None:
        raise InvalidRequest(
            "an OAuth client needs --oauth-token-url, --oauth-client-id and --oauth-client-secret"
        )
    url = parse_url(token_url, "--oauth-token-url", query=True)
    if url.scheme != "https" and not internal:
        raise InvalidRequest(
            "--oauth-token-url must be https (the client secret travels on it); plain http "
            "only for an --internal destination"
        )
    if (
        not isinstance(client_id, str)
        or not 1 <= len(client_id) <= _MAX_CLIENT_ID
        or _URL_TEXT.fullmatch(client_id) is None
    ):
        raise InvalidRequest(
            f"--oauth-client-id must be 1-{_MAX_CLIENT_ID} printable ASCII characters, no blank"
        )
    scope = scope or ""
    if not isinstance(scope, str) or len(scope) > _MAX_SPEC or _TEXT.fullmatch(scope) is None:
        raise InvalidRequest(f"--oauth-scope must be at most {_MAX_SPEC} printable ASCII")
    if not isinstance(client_secret, str):
        raise InvalidRequest("--oauth-client-secret is a reference: env:VAR or vault:<path>#<f>")
    return OAuthClient(url.normal, client_id, _ref(client_secret, "--oauth-client-secret"), scope)
