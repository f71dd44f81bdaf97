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

How the base URL, each ``--credential`` and the OAuth client are read (strictly, one way
only) is :mod:`tether.upstreams.injections`. Credentials travel over https only: a
plain-http base with credentials, or a plain-http token URL, is refused unless the
destination is ``internal``. One source sets ``Authorization`` (a header, ``basic:`` or
the OAuth client); each header or query parameter receives one value.

Only admins add and remove destinations; admins and the destination's owner change its
labels (``plain``, none of the others, stands alone; a destination nobody labelled counts
as ``[egress] unlabelled``). A refusal is recorded (``access.refused``). A destination is
``internal`` when it may resolve to private, loopback or link-local addresses (an API
inside the network); otherwise such addresses are refused on every request. Every change
is an audit event (``egress.destination_added``, ``egress.destination_removed``,
``egress.labelled``: references, never secrets) and moves the state epoch. Bad input
changes and records nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from tether.upstreams.injections import (
    Injection,
    OAuthClient,
    parse_base,
    parse_injection,
    parse_oauth,
)

__all__ = [
    "Destination",
    "DestinationSpec",
    "Destinations",
    "Injection",
    "OAuthClient",
    "parse_base",
    "parse_injection",
]

_MAX_CREDENTIALS = 16


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


class Destinations:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._settings = services.settings
        self._log = services.events
        self._clock = services.clock
        self._epoch = services.epoch

    def add(self, by: Caller, spec: DestinationSpec) -> Destination:
        """Register a destination (admins only; recorded; moves the epoch). Raises
        InvalidRequest (nothing changed, nothing recorded), Forbidden (recorded), Conflict
        (the name is taken, by a destination or an upstream server)."""
        destination = self._check(spec, by)
        if not by.is_admin:
            self._refuse(by, destination.name, "only admins add egress destinations")
        with self._store.write() as conn:
            for table, what in (
                (egress_destinations, "an egress destination"),
                (gateway_servers, "an upstream MCP server"),
            ):
                if conn.execute(
                    select(table.c.name).where(table.c.name == destination.name)
                ).first():
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
        name = _name(name)
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
        """Remove a destination (admins only; recorded; moves the epoch, so tokens for it
        are no longer issued, nor accepted by the proxy). Raises Forbidden (recorded),
        NotFound."""
        name = _name(name)
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
            self._epoch.bump(conn)

    def label(
        self, by: Caller, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Destination:
        """Add and remove labels of destination ``name``: an admin or its owner (others:
        Forbidden, recorded); recorded (``egress.labelled``) with the epoch moved, when
        something changed. ``plain`` (none of the others) stands alone. The change is read
        and written in one transaction, so two changes at once both count."""
        added, removed = _labels(add, "add"), _labels(remove, "remove")
        if not added and not removed:
            raise InvalidRequest("give a label to --add or --remove")
        if set(added) & set(removed):
            raise InvalidRequest("a label cannot be both added and removed")
        destination = self.get(name)
        if not (by.is_admin or by.owns(destination.owner)):
            self._refuse(by, destination.name, "only admins and its owner label a destination")
        with self._store.write() as conn:
            row = conn.execute(
                select(egress_destinations)
                .where(egress_destinations.c.name == destination.name)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no egress destination {destination.name}")
            destination = _destination(row)
            labels = _plain_alone((set(destination.labels) | set(added)) - set(removed))
            if labels == destination.labels:
                return destination
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
        return replace(destination, labels=labels)

    def effective_labels(self, destination: Destination) -> frozenset[str]:
        """What its calls count as: its labels, or ``[egress] unlabelled`` while it has
        none; ``plain`` means none (the decision point's label snapshot reads them so)."""
        return frozenset(destination.labels or self._settings.egress.unlabelled) - {"plain"}

    def view(self, by: Caller, destination: Destination) -> dict[str, Any]:
        """``destination`` as ``by`` may see it. Admins and its owner see its definition
        (base, credentials as references, OAuth client, labels, owner) with what it
        counts as (``effective_labels``, ``labels_from``: ``explicit`` or
        ``[egress] unlabelled``) and how agents reach it (``route``, ``audience``, the
        forward ``proxy``); anyone else sees what an agent needs: name, audience, route."""
        issuer = self._settings.issuer
        shown = {
            "name": destination.name,
            "resource": destination.resource(issuer),
            "route": f"{issuer}/egress/{destination.name}/",
        }
        if not (by.is_admin or by.owns(destination.owner)):
            return shown
        return {
            **destination.to_dict(issuer),
            **shown,
            "effective_labels": sorted(self.effective_labels(destination)),
            "labels_from": "explicit" if destination.labels else "[egress] unlabelled",
            "proxy": self._proxy(),
        }

    def _proxy(self) -> str | None:
        """The forward proxy's address as agents put it in ``HTTPS_PROXY`` (without the
        token), or None when ``tether up`` serves none (``[egress] port = 0``)."""
        egress = self._settings.egress
        if not egress.port:
            return None
        host = egress.host
        if not host or host in ("0.0.0.0", "::"):  # noqa: S104 (every address: use the issuer's)
            host = urlsplit(self._settings.issuer).hostname or "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{egress.port}"

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
        name = _name(spec.name)
        base, scheme, host, port, path = parse_base(spec.base)
        if len(spec.credentials) > _MAX_CREDENTIALS:
            raise InvalidRequest(f"at most {_MAX_CREDENTIALS} --credential values")
        credentials = tuple(parse_injection(c) for c in spec.credentials)
        keys = [(c.kind, c.name.lower() if c.kind == "header" else c.name) for c in credentials]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("each header or query parameter receives one value")
        internal = spec.internal is True
        oauth = parse_oauth(
            spec.oauth_token_url,
            spec.oauth_client_id,
            spec.oauth_client_secret,
            spec.oauth_scope,
            internal=internal,
        )
        basic = [c for c in credentials if c.kind == "basic"]
        authorization = [
            c for c in credentials if c.kind == "header" and c.name.lower() == "authorization"
        ]
        if len(basic) > 1 or (basic and authorization) or (oauth and (basic or authorization)):
            raise InvalidRequest(
                "one source sets Authorization: a header, basic: or an OAuth client, not several"
            )
        if scheme == "http" and (credentials or oauth) and not internal:
            raise InvalidRequest(
                "credentials are sent over https only: a plain-http --base with credentials "
                "must be an --internal destination (an API inside the network)"
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
            labels=_plain_alone(set(_labels(spec.labels, "label"))),
            internal=internal,
            owner=parse_email(spec.owner) if spec.owner is not None else None,
            created_by=by.subject,
            created_at=self._clock(),
        )


def _name(name: str) -> str:
    try:
        return parse_name(name)
    except InvalidRequest:
        raise InvalidRequest(
            f"invalid destination name {name!r}: use 1-63 lowercase letters, digits, '.', "
            "'_' or '-', starting with a letter or digit, without '..' or '/'"
        ) from None


def _labels(labels: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(labels, str):
        labels = [labels]
    for label in labels:
        if label not in LABELS:
            shown = label if isinstance(label, str) else type(label).__name__
            raise InvalidRequest(f"--{what}: {shown!r} is not a label ({', '.join(LABELS)})")
    return tuple(sorted(set(labels)))


def _plain_alone(labels: set[str]) -> tuple[str, ...]:
    if "plain" in labels and len(labels) > 1:
        others = ", ".join(sorted(labels - {"plain"}))
        raise InvalidRequest(
            f"plain means none of the other labels: it cannot be set with {others} "
            "(remove those first)"
        )
    return tuple(sorted(labels))


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
