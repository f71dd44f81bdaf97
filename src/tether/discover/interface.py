"""What every discovery scanner shares: findings, credentials as fingerprints, the files
a scan reads, and the warnings it counts.

A scanner is read-only and offline: it is handed files (already found by the walker, under
the scanned paths, size-capped, not binary) and yields :class:`Finding` objects. It never
keeps a secret: a credential becomes its type, where it was given, and a fingerprint (the
first 12 hex digits of its HMAC-SHA256 under the installation's discovery key, see
:mod:`tether.discover.key`), via :meth:`Credential.of`. Malformed input is not an error:
the scanner calls :meth:`SourceFile.warn` and yields what it could read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "FLAGS",
    "KINDS",
    "Credential",
    "Finding",
    "Scanner",
    "SourceFile",
    "Warnings",
    "fingerprint",
    "fingerprint_key",
]

# What was found. Every kind but "credential" is an agent (it can be registered).
KINDS = (
    "mcp-server",  # an MCP server wired into a client's configuration
    "agent-code",  # Python / JS / TS code that builds an agent or an MCP server
    "k8s-workload",  # a Kubernetes workload that runs an agent
    "ci-workflow",  # a CI job that runs an agent
    "cloud-role",  # a cloud IAM role that agents assume
    "credential",  # a secret in a file (an agent credential), not itself an agent
)

# Risk flags.
FLAGS = (
    "admin",  # administrator rights (cluster-admin, AdministratorAccess, ...)
    "wildcard",  # wildcard rights ("*" actions or resources)
    "static-key",  # a long-lived key rather than a short-lived token
    "plaintext-secret",  # a secret written in the file itself
    "no-owner",  # nobody knowable is accountable for it
)


# The key fingerprints are made with: the installation's, while a scan handed one runs
# (:func:`fingerprint_key`); else one made for this process, so no fingerprint is ever an
# unkeyed hash (those match only within the process).
_KEY: ContextVar[bytes | None] = ContextVar("tether_fingerprint_key", default=None)
_PROCESS_KEY = secrets.token_bytes(32)


def fingerprint(secret: str) -> str:
    """The first 12 hex digits of the secret's HMAC-SHA256 under the discovery key: enough
    to match the same key found twice, useless to anyone who wants the key (without the
    discovery key a guess of the secret cannot be checked against it)."""
    key = _KEY.get() or _PROCESS_KEY
    data = secret.encode("utf-8", "surrogatepass")
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:12]


@contextmanager
def fingerprint_key(key: bytes) -> Iterator[None]:
    """Make the fingerprints of this context (a scan) with ``key``."""
    if len(key) < 16:
        raise ValueError("a fingerprint key has at least 16 bytes")
    token = _KEY.set(key)
    try:
        yield
    finally:
        _KEY.reset(token)


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential, never its value: ``type`` (e.g. ``openai-api-key``, ``aws-access-key``,
    ``env-reference``), ``where`` it is given (an environment variable, a header, a key in a
    file), its ``fingerprint``, and whether it is written in the file (``plaintext``)."""

    type: str
    where: str
    fingerprint: str
    plaintext: bool = True

    @classmethod
    def of(cls, type: str, secret: str, where: str, *, plaintext: bool = True) -> Credential:
        return cls(type, where, fingerprint(secret), plaintext)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "where": self.where,
            "fingerprint": self.fingerprint,
            "plaintext": self.plaintext,
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a scanner found.

    ``name``: a short human name (the MCP server's key, the workload's name, the role's
    name ...). ``path``: the file, relative to the scanned root it was found under (POSIX
    separators); ``line``: 1-based, when known; ``pointer``: the JSON/YAML path inside the
    file when that says more (``$.mcpServers.github.env.GITHUB_TOKEN``). ``access``: what it
    can reach, as ``kind:target`` strings (``filesystem:/srv/docs``, ``database:postgres://
    db.internal/app``, ``url:https://api.example.com``, ``k8s:cluster-admin``,
    ``aws:bedrock:*``). ``detail``: what else the scanner can say (command, image,
    framework, tools ...) — never a secret.
    """

    kind: str
    name: str
    scanner: str
    path: str
    line: int | None = None
    pointer: str | None = None
    access: tuple[str, ...] = ()
    credentials: tuple[Credential, ...] = ()
    flags: tuple[str, ...] = ()
    creator: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable across rescans: the same thing in the same place gets the same ID, even
        when lines above it move (so the line number is not part of it)."""
        where = self.pointer if self.pointer is not None else self.name
        key = json.dumps([self.kind, self.scanner, self.path, where], separators=(",", ":"))
        return "f-" + hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def is_agent(self) -> bool:
        return self.kind != "credential"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "scanner": self.scanner,
            "path": self.path,
            "line": self.line,
            "pointer": self.pointer,
            "access": list(self.access),
            "credentials": [c.to_dict() for c in self.credentials],
            "flags": sorted(set(self.flags)),
            "creator": self.creator,
            "detail": dict(self.detail),
        }


class Warnings:
    """Counted reasons for skipping (``malformed``, ``too-large``, ``binary``,
    ``unreadable``, ``symlink-loop``, ``outside-root`` ...), with a few examples each."""

    EXAMPLES = 5

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.EXAMPLES:
            shown.append(where)

    def to_dict(self) -> dict[str, Any]:
        return {
            reason: {"count": n, "examples": self.examples.get(reason, [])}
            for reason, n in sorted(self.counts.items())
        }


@dataclass
class SourceFile:
    """A file handed to scanners: its real path, the scanned root it was found under, and
    its text (decoded as UTF-8 with replacement; read once, lazily)."""

    path: Path
    root: Path
    warnings: Warnings
    _text: str | None = None

    @property
    def relpath(self) -> str:
        """The path findings report: relative to the root, POSIX separators (for a root that
        is the file itself, its name)."""
        try:
            rel = self.path.relative_to(self.root)
        except ValueError:
            rel = Path(self.path.name)
        return rel.as_posix() if str(rel) != "." else self.path.name

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.path.read_bytes().decode("utf-8", errors="replace")
        return self._text

    def read(self) -> str | None:
        """The text, or None (counted as ``unreadable``) when the file cannot be read."""
        try:
            return self.text
        except OSError as exc:
            self.warn("unreadable", type(exc).__name__)
            return None

    def warn(self, reason: str, why: str = "") -> None:
        """Count a problem with this file (``malformed`` JSON/YAML/TOML ...)."""
        self.warnings.add(reason, f"{self.relpath}: {why}" if why else self.relpath)

    def line_of(self, needle: str, start: int = 0) -> int | None:
        """The 1-based line where ``needle`` first occurs (at or after offset ``start``)."""
        at = self.text.find(needle, start)
        return None if at < 0 else self.text.count("\n", 0, at) + 1


class Scanner(Protocol):
    """One source of findings. ``name`` is stable (it is part of finding IDs)."""

    name: str

    def wants(self, path: Path) -> bool:
        """Whether to be handed this file (by name and place only: no reading here)."""
        ...

    def scan(self, file: SourceFile) -> Iterable[Finding]:
        """The findings in ``file``; malformed input is warned about, never raised."""
        ...
