"""URLs in an MCP server's configuration taken apart: what they reach (a database, an
origin), the secrets they hold (a userinfo password, a secret query parameter, a
secret-looking path segment), and the URL shown without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from tether.discover.classify import classify, is_placeholder, looks_random
from tether.discover.interface import fingerprint
from tether.discover.mcp_literals import is_secret_name, literal_secret_type, reference_in

__all__ = ["URL_IN_TEXT", "Url", "analyse_url"]

_DB_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "mongodb",
        "mongodb+srv",
        "redis",
        "rediss",
        "mssql",
        "sqlserver",
        "sqlite",
        "oracle",
        "cockroachdb",
        "clickhouse",
        "snowflake",
    }
)
_ADMIN_USERS = frozenset({"root", "postgres", "sa", "admin", "administrator", "superuser"})
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


@dataclass
class Url:
    """A URL taken apart: its sanitised form, its access, its secrets."""

    shown: str
    access: str | None
    admin: bool = False
    secrets: list[tuple[str, str, str]] = field(default_factory=list)  # (type, value, where)
    references: list[tuple[str, str]] = field(default_factory=list)  # (where, ref)


def _scheme(raw: str) -> str:
    """``postgresql+psycopg`` → ``postgresql`` (``mongodb+srv`` stays)."""
    low = raw.lower()
    return low if low == "mongodb+srv" else low.split("+", 1)[0]


def analyse_url(url: str, where: str) -> Url | None:
    """Sanitise ``url`` and say what it reaches and which secrets it holds."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
        user = parts.username
        password = parts.password
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme:
        return None
    base = _scheme(scheme)
    is_db = base in _DB_SCHEMES
    found = Url(shown=url, access=None)
    if password:
        ref = reference_in(password)
        if ref is not None:
            found.references.append((f"{where}:password", ref))
        elif not is_placeholder(password):
            kind = "database-password" if is_db else "url-password"
            found.secrets.append((kind, password, f"{where}:password"))
    query = _clean_query(parts.query, where, found)
    path = _clean_path(parts.path, where, found)
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    found.shown = urlunsplit((parts.scheme, netloc, path, query, ""))
    if is_db:
        found.admin = bool(user and user.lower() in _ADMIN_USERS)
        if base == "sqlite":
            found.access = f"database:sqlite:{parts.netloc}{parts.path}"
        else:
            database = parts.path.strip("/").split("/", 1)[0]
            found.access = f"database:{base}://{host}/{database}"
    elif scheme in ("http", "https", "ws", "wss"):
        found.access = f"url:{scheme}://{netloc}"
    return found


def _clean_query(query: str, where: str, found: Url) -> str:
    """The query without its secrets (noted in ``found``)."""
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        ref = reference_in(value)
        if is_secret_name(key) and ref is not None:
            found.references.append((f"{where}:query:{key}", ref))
            continue
        kind = literal_secret_type(key, value)
        if kind is not None:
            found.secrets.append((kind, value, f"{where}:query:{key}"))
            continue
        kept.append((key, value))
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kept)


def _clean_path(path: str, where: str, found: Url) -> str:
    """The path with secret-looking segments replaced: a known key prefix (Zapier-style
    ``sk-ak-...``), or a long mixed-case random token (not a hex ID or a UUID)."""
    segments = []
    for segment in path.split("/"):
        kind = classify(segment)
        if kind is None and _random_token(segment):
            kind = "url-token"
        if kind is not None and not is_placeholder(segment):
            found.secrets.append((kind, segment, f"{where}:path"))
            segments.append(f"<secret:{fingerprint(segment)}>")
        else:
            segments.append(segment)
    return "/".join(segments)


def _random_token(segment: str) -> bool:
    return (
        len(segment) >= 32
        and re.fullmatch(r"[A-Za-z0-9_\-]+", segment) is not None
        and any(c.islower() for c in segment)
        and any(c.isupper() for c in segment)
        and looks_random(segment)
    )
