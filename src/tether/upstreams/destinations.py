"""HTTP API destinations agents reach through the egress proxy (``tether egress add``).

A destination is a base URL (``https://api.github.com``, or with a path prefix:
``https://api.example.com/v1``) with what Tether injects into every request to it, an
accountable owner and labels. Destination NAME's resource ID is ``<issuer>/egress/NAME``
(tokens for it carry that ``aud``; ``<issuer>/egress`` is the proxy as a whole), and
grants name its paths as ``NAME/<path below the base>`` with the HTTP method as the action
(``GET:github/repos/acme/**``). A destination and an upstream MCP server never share a
name: both name resources ``NAME/...``.

What is injected (``--credential``), the secret found at a reference (``env:VAR`` or
``vault:<path>#<field>``, as for upstream servers; never the secret itself):

- ``HEADER=REF``: the header ``HEADER`` set to the secret (``Authorization=vault:gh#token``);
- ``HEADER=TEXT{REF}TEXT``: the header set to the text with the secret in place of the
  braces (``Authorization=Bearer {vault:gh#token}``);
- ``query:NAME=REF``: the query parameter ``NAME`` set to the secret;
- ``basic:USER=REF``: HTTP basic authentication as ``USER`` with the secret as password;

and, for APIs that want an OAuth access token, an OAuth client (``--oauth-token-url``,
``--oauth-client-id``, ``--oauth-client-secret REF``, ``--oauth-scope``): Tether gets a
token with the client-credentials grant, keeps it until shortly before it expires, and
sends it as ``Authorization: Bearer``.

Only admins add and remove destinations; admins and the destination's owner change its
labels. A destination is ``internal`` when it may resolve to private, loopback or
link-local addresses (an API inside the network); otherwise such addresses are refused on
every request. Every change is an audit event (with references, never secrets) and moves
the state epoch.
"""

from __future__ import annotations

import ipaddress
import re
import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select, update

from tether.audit.record import Entry
from tether.callers import Caller
from tether.config import LABELS
from tether.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tether.model import Email, parse_email, parse_name
from tether.services import Services
from tether.store import egress_destinations, gateway_servers
from tether.upstreams.credentials import FORBIDDEN_HEADERS, HEADER_NAME, check_ref

__all__ = [
    "Destination",
    "DestinationSpec",
    "Destinations",
    "Injection",
    "OAuthClient",
    "parse_injection",
]

_MAX_CREDENTIALS = 16
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_USER = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]{0,128}")  # no ':' (RFC 7617)
_TEMPLATE = re.compile(r"(?P<before>[^{}]*)\{(?P<ref>[^{}]+)\}(?P<after>[^{}]*)")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
# headers an injection may not set: the framing, the route, the hop
_NOT_SET = FORBIDDEN_HEADERS | {
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
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
class DestinationSpec:
    """What ``tether egress add`` was given, unchecked."""

    name: str
    base: str
    credentials: Sequence[str] = ()
    labels: Sequence[str] = ()
    internal: bool = False
    owner: str | None = None
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_scope: str = ""


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    base: str  # scheme://host[:port][/prefix], no trailing slash, no query
    scheme: str
    host: str  # lower case (an IP literal without brackets)
    port: int
    base_path: str  # "" or "/prefix"
    credentials: tuple[Injection, ...] = ()
    oauth: OAuthClient | None = None
    labels: tuple[str, ...] = ()  # explicit labels; none: [egress] unlabelled applies
    internal: bool = False
    owner: Email | None = None
    created_by: str = ""
    created_at: datetime | None = None

    def resource(self, issuer: str) -> str:
        return f"{issuer}/egress/{self.name}"

    def to_dict(self, issuer: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "host": self.host,
            "port": self.port,
            "credentials": [c.describe() for c in self.credentials],
            "oauth": self.oauth.to_dict() if self.oauth else None,
            "labels": list(self.labels),
            "internal": self.internal,
            "owner": self.owner,
            "resource": self.resource(issuer),
            "route": f"{issuer}/egress/{self.name}/",
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def parse_injection(text: str) -> Injection:
    """One ``--credential``: ``HEADER=REF``, ``HEADER=TEXT{REF}TEXT``, ``query:NAME=REF``
    or ``basic:USER=REF`` (see the module docstring)."""
    name, sep, value = text.partition("=")
    if not sep or not value:
        raise InvalidRequest(
            "a credential is HEADER=REF, 'HEADER=Bearer {REF}', query:NAME=REF or "
            f"basic:USER=REF (REF: env:VAR or vault:<path>#<field>): {text!r}"
        )
    if name.startswith("query:"):
        param = name.removeprefix("query:")
        if _QUERY_NAME.fullmatch(param) is None:
            raise InvalidRequest(f"{param!r} is not a query parameter name Tether may set")
        return Injection("query", param, check_ref(value))
    if name.startswith("basic:"):
        user = name.removeprefix("basic:")
        if _USER.fullmatch(user) is None:
            raise InvalidRequest(f"{user!r} is not a basic-auth user name (no ':' or blanks)")
        return Injection("basic", user, check_ref(value))
    if HEADER_NAME.fullmatch(name) is None or name.lower() in _NOT_SET:
        raise InvalidRequest(f"{name!r} is not a header Tether may set")
    found = _TEMPLATE.fullmatch(value)
    if found is None:
        if "{" in value or "}" in value:
            raise InvalidRequest(f"a header template holds one {{REF}}: {value!r}")
        return Injection("header", name, check_ref(value))
    before, after = found["before"], found["after"]
    if _PRINTABLE.fullmatch(before + after) is None:
        raise InvalidRequest("a header template's text must be printable ASCII")
    return Injection("header", name, check_ref(found["ref"]), f"{before}{{}}{after}")


def parse_base(base: str) -> tuple[str, str, str, int, str]:
    """``base`` checked: (normalised base, scheme, host, port, base path)."""
    if not isinstance(base, str) or len(base) > 2048 or _PRINTABLE.fullmatch(base) is None:
        raise InvalidRequest("--base must be an http(s) URL of printable ASCII")
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"--base is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"--base must be an http(s) URL with a host: {base!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("--base must not carry credentials: use --credential")
    if parts.query or parts.fragment or "?" in base or "#" in base:
        raise InvalidRequest("--base takes no query or fragment: grants name paths below it")
    host = parts.hostname.lower().rstrip(".")
    if not host or " " in host:
        raise InvalidRequest(f"--base has no usable host: {base!r}")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if (
            re.fullmatch(
                r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", host
            )
            is None
        ):
            raise InvalidRequest(f"--base host {host!r} is not a DNS name or IP address") from None
    port = port or (443 if scheme == "https" else 80)
    path = parts.path.rstrip("/")
    if path and (
        not path.startswith("/")
        or "//" in path
        or "%" in path
        or any(seg in (".", "..") for seg in path.split("/"))
    ):
        raise InvalidRequest("--base's path must be plain segments (no '.', '..', '//' or '%')")
    shown_host = f"[{host}]" if ":" in host else host
    default = (scheme, port) in (("https", 443), ("http", 80))
    normal = f"{scheme}://{shown_host}{'' if default else f':{port}'}{path}"
    return normal, scheme, host, port, path


class Destinations:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._settings = services.settings
        self._log = services.events
        self._clock = services.clock
        self._epoch = services.epoch

    def add(self, by: Caller, spec: DestinationSpec) -> Destination:
        """Register a destination (admins only; recorded; moves the epoch). Raises
        InvalidRequest, Forbidden (recorded), Conflict (the name is taken, by a
        destination or an upstream server)."""
        destination = self._check(spec, by)
        if not by.is_admin:
            self._refuse(by, destination.name, "only admins add egress destinations")
        with self._store.write() as conn:
            for table in (egress_destinations, gateway_servers):
                if conn.execute(
                    select(table.c.name).where(table.c.name == destination.name)
                ).first():
                    what = (
                        "an egress destination"
                        if table is egress_destinations
                        else ("an upstream MCP server")
                    )
                    raise Conflict(f"{what} named {destination.name} exists already")
            conn.execute(insert(egress_destinations).values(**_row(destination)))
            self._log.append(
                conn,
                Entry.of(
                    "egress.destination_added",
                    actor=by.subject,
                    subject=f"egress:{destination.name}",
                    detail=destination.to_dict(self._settings.issuer),
                ),
            )
            self._epoch.bump(conn)
        return destination

    def list(self) -> builtins.list[Destination]:
        with self._store.read() as conn:
            rows = conn.execute(select(egress_destinations).order_by(egress_destinations.c.name))
            return [_destination(row) for row in rows]

    def get(self, name: str) -> Destination:
        name = parse_name(name)
        with self._store.read() as conn:
            row = conn.execute(
                select(egress_destinations).where(egress_destinations.c.name == name)
            ).first()
        if row is None:
            raise NotFound(f"no egress destination {name}")
        return _destination(row)

    def by_host(self, host: str, port: int) -> builtins.list[Destination]:
        """The destinations served at ``host``:``port`` (``host`` as CONNECT names it;
        compared in lower case, without a trailing dot)."""
        host = host.lower().rstrip(".").strip("[]")
        with self._store.read() as conn:
            rows = conn.execute(
                select(egress_destinations)
                .where(egress_destinations.c.host == host, egress_destinations.c.port == port)
                .order_by(egress_destinations.c.name)
            )
            return [_destination(row) for row in rows]

    def remove(self, by: Caller, name: str, reason: str = "") -> None:
        name = parse_name(name)
        if not by.is_admin:
            self._refuse(by, name, "only admins remove egress destinations")
        with self._store.write() as conn:
            gone = conn.execute(
                delete(egress_destinations).where(egress_destinations.c.name == name)
            )
            if gone.rowcount == 0:
                raise NotFound(f"no egress destination {name}")
            self._log.append(
                conn,
                Entry.of(
                    "egress.destination_removed",
                    actor=by.subject,
                    subject=f"egress:{name}",
                    reason=reason,
                ),
            )
            self._epoch.bump(conn)  # tokens are no longer issued for it, nor accepted

    def label(
        self, by: Caller, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Destination:
        """Add and remove labels of destination ``name``: an admin or its owner; recorded
        (``egress.labelled``) with the epoch moved, when something changed."""
        destination = self.get(name)
        added, removed = _labels(add, "add"), _labels(remove, "remove")
        if not added and not removed:
            raise InvalidRequest("give a label to --add or --remove")
        if set(added) & set(removed):
            raise InvalidRequest("a label cannot be both added and removed")
        if not by.is_admin and (destination.owner is None or by.subject != destination.owner):
            self._refuse(by, destination.name, "only admins and its owner label a destination")
        labels = tuple(sorted((set(destination.labels) | set(added)) - set(removed)))
        if labels == destination.labels:
            return destination
        with self._store.write() as conn:
            conn.execute(
                update(egress_destinations)
                .where(egress_destinations.c.name == destination.name)
                .values(labels=list(labels))
            )
            self._log.append(
                conn,
                Entry.of(
                    "egress.labelled",
                    actor=by.subject,
                    subject=f"egress:{destination.name}",
                    detail={"added": list(added), "removed": list(removed), "labels": list(labels)},
                ),
            )
            self._epoch.bump(conn)
        return Destination(**{**_fields(destination), "labels": labels})

    def effective_labels(self, destination: Destination) -> frozenset[str]:
        """Its labels, or ``[egress] unlabelled`` while it has none."""
        return frozenset(destination.labels or self._settings.egress.unlabelled)

    def _refuse(self, by: Caller, name: str, why: str) -> None:
        self._log.record(
            Entry.of(
                "access.refused",
                actor=by.subject,
                subject=f"egress:{name}",
                reason=why,
                detail={"op": "egress"},
            )
        )
        raise Forbidden(why)

    def _check(self, spec: DestinationSpec, by: Caller) -> Destination:
        name = parse_name(spec.name)
        base, scheme, host, port, path = parse_base(spec.base)
        if len(spec.credentials) > _MAX_CREDENTIALS:
            raise InvalidRequest(f"at most {_MAX_CREDENTIALS} --credential values")
        credentials = tuple(parse_injection(c) for c in spec.credentials)
        keys = [(c.kind, c.name.lower() if c.kind == "header" else c.name) for c in credentials]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("each header or query parameter receives one value")
        oauth = _oauth(spec)
        basic = [c for c in credentials if c.kind == "basic"]
        authorization = [
            c for c in credentials if c.kind == "header" and c.name.lower() == "authorization"
        ]
        if len(basic) > 1 or (basic and authorization) or (oauth and (basic or authorization)):
            raise InvalidRequest(
                "one source sets Authorization: a header, basic: or an OAuth client, not several"
            )
        return Destination(
            name=name,
            base=base,
            scheme=scheme,
            host=host,
            port=port,
            base_path=path,
            credentials=credentials,
            oauth=oauth,
            labels=_labels(spec.labels, "label"),
            internal=bool(spec.internal),
            owner=parse_email(spec.owner) if spec.owner is not None else None,
            created_by=by.subject,
            created_at=self._clock(),
        )


def _oauth(spec: DestinationSpec) -> OAuthClient | None:
    given = [spec.oauth_token_url, spec.oauth_client_id, spec.oauth_client_secret]
    if all(v is None for v in given):
        if spec.oauth_scope:
            raise InvalidRequest("--oauth-scope needs an OAuth client (--oauth-token-url ...)")
        return None
    if any(v is None for v in given):
        raise InvalidRequest(
            "an OAuth client needs --oauth-token-url, --oauth-client-id and --oauth-client-secret"
        )
    url, client, secret = (
        str(spec.oauth_token_url),
        str(spec.oauth_client_id),
        str(spec.oauth_client_secret),
    )
    parts = urlsplit(url) if _PRINTABLE.fullmatch(url) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidRequest(f"--oauth-token-url must be an http(s) URL: {url!r}")
    if parts.username or parts.password or parts.fragment:
        raise InvalidRequest("--oauth-token-url must not carry credentials or a fragment")
    if not client or _PRINTABLE.fullmatch(client) is None:
        raise InvalidRequest("--oauth-client-id must be printable ASCII")
    scope = spec.oauth_scope or ""
    if _PRINTABLE.fullmatch(scope) is None:
        raise InvalidRequest("--oauth-scope must be printable ASCII")
    return OAuthClient(url, client, check_ref(secret), scope)


def _labels(labels: Sequence[str], what: str) -> tuple[str, ...]:
    for label in labels:
        if label not in LABELS:
            raise InvalidRequest(f"--{what}: {label!r} is not a label ({', '.join(LABELS)})")
    return tuple(sorted(set(labels)))


def _fields(destination: Destination) -> dict[str, Any]:
    return {
        "name": destination.name,
        "base": destination.base,
        "scheme": destination.scheme,
        "host": destination.host,
        "port": destination.port,
        "base_path": destination.base_path,
        "credentials": destination.credentials,
        "oauth": destination.oauth,
        "labels": destination.labels,
        "internal": destination.internal,
        "owner": destination.owner,
        "created_by": destination.created_by,
        "created_at": destination.created_at,
    }


def _row(destination: Destination) -> dict[str, Any]:
    return {
        "name": destination.name,
        "base": destination.base,
        "host": destination.host,
        "port": destination.port,
        "credentials": [c.to_dict() for c in destination.credentials],
        "oauth": destination.oauth.to_dict() if destination.oauth else None,
        "labels": list(destination.labels),
        "internal": destination.internal,
        "owner": destination.owner,
        "created_by": destination.created_by,
        "created_at": destination.created_at,
    }


def _destination(row: Any) -> Destination:
    _, scheme, host, port, path = parse_base(row.base)
    return Destination(
        name=row.name,
        base=row.base,
        scheme=scheme,
        host=host,
        port=port,
        base_path=path,
        credentials=tuple(
            Injection(c["kind"], c["name"], c["ref"], c.get("template", "{}"))
            for c in row.credentials
        ),
        oauth=OAuthClient(**row.oauth) if row.oauth else None,
        labels=tuple(row.labels),
        internal=bool(row.internal),
        owner=Email(row.owner) if row.owner is not None else None,
        created_by=row.created_by,
        created_at=row.created_at,
    )
