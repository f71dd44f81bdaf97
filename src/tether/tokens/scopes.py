"""Token scopes: lists of ``ACTION:RESOURCE`` permissions, and the rule that a scope
entry asks for no more than a grant (or a parent token's scope entry) gives."""

from __future__ import annotations

from datetime import UTC, datetime

from tether.errors import InvalidRequest, InvalidScope
from tether.grants import Grant
from tether.permissions import HTTP_ACTIONS, Permission, pattern_matches
from tether.principals import Principal

__all__ = [
    "allowed_to_all",
    "destination_of",
    "fits_destination",
    "fits_server",
    "parse_scope",
    "server_of",
    "within",
]


def parse_scope(text: str) -> list[Permission]:
    try:
        return [Permission.parse(entry) for entry in text.split()]
    except InvalidRequest as exc:
        raise InvalidScope(f"malformed scope: {exc.description}") from None


def server_of(issuer: str, audience: str) -> str | None:
    """The gateway server an audience ``<issuer>/mcp/NAME`` names, else None."""
    prefix = f"{issuer}/mcp/"
    return audience[len(prefix) :] if audience.startswith(prefix) else None


def destination_of(issuer: str, audience: str) -> str | None:
    """The egress destination an audience ``<issuer>/egress/NAME`` names, ``""`` for
    ``<issuer>/egress`` (the egress proxy as a whole: every destination), else None."""
    whole = f"{issuer}/egress"
    if audience == whole:
        return ""
    prefix = f"{whole}/"
    if not audience.startswith(prefix):
        return None
    return audience[len(prefix) :] or None  # "<issuer>/egress/" names no destination


def fits_destination(grant: Grant, destination: str) -> bool:
    """Whether ``grant`` can reach egress ``destination`` (any, when ``""``): an HTTP
    method (or ``*``) on a path of it."""
    if grant.action != "*" and grant.action not in HTTP_ACTIONS:
        return False
    return not destination or grant.resource.split("/", 1)[0] in (destination, "*", "**")


def fits_server(grant: Grant, server: str | None) -> bool:
    """Whether ``grant`` can reach the gateway server ``server`` (any, when None)."""
    return server is None or grant.resource.split("/", 1)[0] in (server, "*", "**")


def within(permission: Permission, grant: Grant) -> bool:
    """Whether ``permission`` asks for no more than ``grant`` gives."""
    if grant.action not in ("*", permission.action):
        return False
    inner, outer = permission.resource, grant.resource
    if outer in (inner, "**"):
        return True
    if "*" not in inner:
        return pattern_matches(outer, inner) or (outer == "*" and permission.action == "delegate")
    return outer.endswith("/**") and inner.startswith(outer[:-2]) and inner != outer[:-3]


def allowed_to_all(
    permission: Permission,
    holders: list[str],
    grants: dict[str, list[Grant]],
    parent: list[str] | None,
) -> bool:
    """Whether ``permission`` is within the ``parent`` token's scope (if any) and within
    some grant of every one of ``holders``."""
    if parent is not None and not any(
        within(permission, _as_grant(Permission.parse(entry))) for entry in parent
    ):
        return False
    return all(any(within(permission, g) for g in grants[h]) for h in holders)


def _as_grant(permission: Permission) -> Grant:
    """A token-scope entry seen as a grant, to reuse the containment rule."""
    epoch = datetime.min.replace(tzinfo=UTC)
    return Grant(
        id="scope",
        principal=Principal("agent", "-"),
        action=permission.action,
        resource=permission.resource,
        condition=None,
        broad=False,
        granted_by="",
        reason="",
        created_at=epoch,
        expires_at=epoch,
        revoked_at=None,
        revoked_by=None,
    )
