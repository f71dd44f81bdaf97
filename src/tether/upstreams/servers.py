"""Upstream MCP servers behind the gateway: what runs them, where they are, what they get.

A stdio upstream is a command the gateway starts; an HTTP upstream is reached over
streamable HTTP at its URL. Server NAME's resource ID is ``<issuer>/mcp/NAME``: tokens for
it carry that ``aud``, and grants name its tools as ``NAME/<tool>``. Only admins add and
remove upstreams; an upstream may name an accountable owner, who approves changed
definitions of its tools as admins do. Every change is an audit event (with credential
references, never secrets).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select

from tether.audit.record import Entry
from tether.callers import Caller
from tether.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tether.model import Email, parse_email, parse_name
from tether.services import Services
from tether.store import egress_destinations, gateway_labels, gateway_pins, gateway_servers
from tether.upstreams.credentials import Credential, parse_credential

__all__ = ["Upstream", "UpstreamSpec", "Upstreams"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MAX_ENV = 64
_MAX_ARGS = 64


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """What ``tether gateway add`` was given, unchecked."""

    name: str
    command: str | None = None
    url: str | None = None
    env: Sequence[str] = ()  # KEY=VALUE, not secret (secrets go in credentials)
    credentials: Sequence[str] = ()  # NAME=REF
    owner: str | None = None  # the accountable person's email


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    transport: str  # stdio | http
    command: tuple[str, ...]
    url: str | None
    env: dict[str, str] = field(default_factory=dict)
    credentials: tuple[Credential, ...] = ()
    created_by: str = ""
    created_at: datetime | None = None
    owner: Email | None = None

    def resource(self, issuer: str) -> str:
        return f"{issuer}/mcp/{self.name}"

    def to_dict(self, issuer: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "command": list(self.command),
            "url": self.url,
            "env": dict(self.env),
            "credentials": [c.to_dict() for c in self.credentials],
            "resource": self.resource(issuer),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "owner": self.owner,
        }


class Upstreams:
    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._settings = services.settings
        self._log = services.events
        self._clock = services.clock
        self._epoch = services.epoch

    def add(self, by: Caller, spec: UpstreamSpec) -> Upstream:
        upstream = self._check(spec, by)
        if not by.is_admin:
            self._refuse(by, upstream.name, "only admins add upstream servers")
        with self._store.write() as conn:
            if conn.execute(
                select(gateway_servers.c.name).where(gateway_servers.c.name == upstream.name)
            ).first():
                raise Conflict(f"an upstream server named {upstream.name} exists already")
            if conn.execute(  # both name resources NAME/...
                select(egress_destinations.c.name).where(
                    egress_destinations.c.name == upstream.name
                )
            ).first():
                raise Conflict(f"an egress destination named {upstream.name} exists already")
            conn.execute(insert(gateway_servers).values(**_row(upstream)))
            self._log.append(
                conn,
                Entry.of(
                    "gateway.server_added",
                    actor=by.subject,
                    subject=f"mcp:{upstream.name}",
                    detail=upstream.to_dict(self._settings.issuer),
                ),
            )
        return upstream

    def list(self) -> list[Upstream]:
        with self._store.read() as conn:
            rows = conn.execute(select(gateway_servers).order_by(gateway_servers.c.name))
            return [_upstream(row) for row in rows]

    def get(self, name: str) -> Upstream:
        name = parse_name(name)
        with self._store.read() as conn:
            row = conn.execute(
                select(gateway_servers).where(gateway_servers.c.name == name)
            ).first()
        if row is None:
            raise NotFound(f"no upstream server {name}")
        return _upstream(row)

    def remove(self, by: Caller, name: str, reason: str = "") -> None:
        name = parse_name(name)
        if not by.is_admin:
            self._refuse(by, name, "only admins remove upstream servers")
        with self._store.write() as conn:
            gone = conn.execute(delete(gateway_servers).where(gateway_servers.c.name == name))
            if gone.rowcount == 0:
                raise NotFound(f"no upstream server {name}")
            conn.execute(delete(gateway_pins).where(gateway_pins.c.server == name))
            conn.execute(delete(gateway_labels).where(gateway_labels.c.server == name))
            self._log.append(
                conn,
                Entry.of(
                    "gateway.server_removed",
                    actor=by.subject,
                    subject=f"mcp:{name}",
                    reason=reason,
                ),
            )
            self._epoch.bump(conn)  # tokens are no longer issued for it

    def _refuse(self, by: Caller, name: str, why: str) -> None:
        self._log.record(
            Entry.of(
                "access.refused",
                actor=by.subject,
                subject=f"mcp:{name}",
                reason=why,
                detail={"op": "gateway"},
            )
        )
        raise Forbidden(why)

    def _check(self, spec: UpstreamSpec, by: Caller) -> Upstream:
        name = parse_name(spec.name)
        if (spec.command is None) == (spec.url is None):
            raise InvalidRequest("give exactly one of --command (stdio) or --url (HTTP)")
        command: tuple[str, ...] = ()
        url: str | None = None
        if spec.command is not None:
            try:
                command = tuple(shlex.split(spec.command))
            except ValueError as exc:
                raise InvalidRequest(f"cannot parse --command: {exc}") from None
            if not command or len(command) > _MAX_ARGS or any("\x00" in a for a in command):
                raise InvalidRequest("--command needs a program and at most 64 arguments")
            transport = "stdio"
        else:
            url = str(spec.url)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidRequest(f"--url must be an http(s) URL: {url!r}")
            if parts.username or parts.password:
                raise InvalidRequest("--url must not carry credentials: use --credential")
            transport = "http"
        env: dict[str, str] = {}
        if len(spec.env) > _MAX_ENV:
            raise InvalidRequest(f"at most {_MAX_ENV} --env values")
        for item in spec.env:
            key, sep, value = item.partition("=")
            if not sep or _ENV_NAME.fullmatch(key) is None or "\x00" in value:
                raise InvalidRequest(f"--env takes KEY=VALUE with a variable name: {item!r}")
            if transport != "stdio":
                raise InvalidRequest("--env is for stdio upstreams (HTTP ones get headers)")
            env[key] = value
        credentials = tuple(parse_credential(c, transport) for c in spec.credentials)
        names = [c.name.lower() if transport == "http" else c.name for c in credentials]
        if len(set(names)) != len(names) or set(names) & set(env):
            raise InvalidRequest("each variable or header receives one value")
        return Upstream(
            name=name,
            transport=transport,
            command=command,
            url=url,
            env=env,
            credentials=credentials,
            created_by=by.subject,
            created_at=self._clock(),
            owner=parse_email(spec.owner) if spec.owner is not None else None,
        )


def _row(upstream: Upstream) -> dict[str, Any]:
    return {
        "name": upstream.name,
        "transport": upstream.transport,
        "command": list(upstream.command),
        "url": upstream.url,
        "env": dict(upstream.env),
        "credentials": [c.to_dict() for c in upstream.credentials],
        "created_by": upstream.created_by,
        "created_at": upstream.created_at,
        "owner": upstream.owner,
    }


def _upstream(row: Any) -> Upstream:
    return Upstream(
        name=row.name,
        transport=row.transport,
        command=tuple(row.command),
        url=row.url,
        env=dict(row.env),
        credentials=tuple(Credential(c["name"], c["ref"]) for c in row.credentials),
        created_by=row.created_by,
        created_at=row.created_at,
        owner=Email(row.owner) if row.owner is not None else None,
    )
