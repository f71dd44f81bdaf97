"""Permissions: ``ACTION:RESOURCE``, resource patterns, and how both compile to Cedar.

Actions are MCP methods (``tools/call``, ``resources/read``, ``prompts/get``),
``delegate``, ``credentials/read``, or HTTP methods (``GET``, ``POST`` ...). A grant may
name ``*`` for any action (a broad grant).

A resource is a path of segments separated by ``/`` (``github/create_issue``); segments
use ``A-Z a-z 0-9 . _ ~ : @ + = , -``. A resource *pattern* may also use:

- ``*`` inside a segment: any run of characters within that one segment
  (``github/*`` matches ``github/create_issue``, not ``github/a/b``; ``fs/read_*``);
- ``**`` as the whole last segment, after literal segments: one or more further segments
  (``fs/docs/**`` matches ``fs/docs/a`` and ``fs/docs/a/b``).

For ``delegate`` the resource is an agent ID (a SPIFFE ID), or ``*`` for any agent.
A grant whose action is ``*``, or whose pattern's first segment (the server, or the whole
``delegate`` target) holds a wildcard anywhere (``*``, ``**``, ``*e*``, ``gh-*``), is *broad*:
it reaches across servers rather than within one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from tether.errors import InvalidRequest

__all__ = [
    "ACTIONS",
    "Permission",
    "cedar_match",
    "check_action",
    "check_pattern",
    "check_resource",
    "is_broad",
    "pattern_matches",
]

MCP_ACTIONS = ("tools/call", "resources/read", "prompts/get")
TETHER_ACTIONS = ("delegate", "credentials/read")
HTTP_ACTIONS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ACTIONS = MCP_ACTIONS + TETHER_ACTIONS + HTTP_ACTIONS

_SEGMENT = r"[A-Za-z0-9._~:@+=,-]+"
_RESOURCE = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9._~:@+=,*-]+")
_AGENT_ID = re.compile(r"spiffe://[a-z0-9.-]+/agent/[a-z0-9][a-z0-9._-]{0,62}")
_MAX_LEN = 512
_MAX_SEGMENTS = 16


def check_action(action: str, *, allow_any: bool = False) -> str:
    if allow_any and action == "*":
        return action
    if action not in ACTIONS:
        raise InvalidRequest(f"invalid action {action!r}: one of {', '.join(ACTIONS)}")
    return action


def check_resource(action: str, resource: str) -> str:
    """A concrete resource as a request names it (no wildcards)."""
    if action == "delegate":
        if not isinstance(resource, str) or _AGENT_ID.fullmatch(resource) is None:
            raise InvalidRequest(f"invalid resource {resource!r}: delegate takes an agent ID")
        return resource
    if (
        not isinstance(resource, str)
        or len(resource) > _MAX_LEN
        or _RESOURCE.fullmatch(resource) is None
        or resource.count("/") >= _MAX_SEGMENTS
        or any(seg in (".", "..") for seg in resource.split("/"))
    ):
        raise InvalidRequest(
            f"invalid resource {resource!r}: a path like server/name, segments of "
            "A-Z a-z 0-9 . _ ~ : @ + = , - (no empty, '.' or '..' segments)"
        )
    return resource


def check_pattern(action: str, pattern: str) -> str:
    """A resource pattern as a grant or a token scope names it."""
    if pattern == "*" and action in ("delegate", "*"):
        return pattern
    if action == "delegate":
        return check_resource(action, pattern)
    if not isinstance(pattern, str) or len(pattern) > _MAX_LEN:
        raise InvalidRequest(f"invalid resource pattern {pattern!r}")
    segments = pattern.split("/")
    problem = None
    if len(segments) > _MAX_SEGMENTS:
        problem = f"more than {_MAX_SEGMENTS} segments"
    for index, segment in enumerate(segments):
        if segment == "**":
            if index != len(segments) - 1:
                problem = "'**' may only be the last segment"
            elif any("*" in s for s in segments[:index]):
                problem = "'**' may only follow literal segments"
        elif _PATTERN_SEGMENT.fullmatch(segment) is None or segment in (".", ".."):
            problem = f"bad segment {segment!r}"
        elif "**" in segment:
            problem = "'**' must be a whole segment"
    if problem:
        raise InvalidRequest(f"invalid resource pattern {pattern!r}: {problem}")
    return pattern


def is_broad(action: str, pattern: str) -> bool:
    """Any action, or a wildcard anywhere in the first segment: such a pattern can match
    resources of more than one server (a narrow one names its server literally)."""
    return action == "*" or "*" in pattern.split("/", 1)[0]


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    if pattern == "**":
        return re.compile(r".+")
    parts = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        if segment == "**" and index == len(segments) - 1:
            parts.append(r"(?:/[^/]+)+")
            continue
        text = "[^/]*".join(re.escape(piece) for piece in segment.split("*"))
        parts.append(("/" if index else "") + text)
    return re.compile("".join(parts))


def pattern_matches(pattern: str, resource: str) -> bool:
    """Whether ``resource`` is inside ``pattern`` (the reference for the Cedar form)."""
    return _regex(pattern).fullmatch(resource) is not None


def cedar_match(action: str, pattern: str) -> str:
    """A Cedar condition true exactly when the request's resource is inside ``pattern``."""
    if (pattern in ("*", "**") and action in ("delegate", "*")) or pattern == "**":
        return "true"
    if action == "delegate":
        return f'resource.path == "{pattern}"'
    segments = pattern.split("/")
    if segments[-1] == "**":
        prefix = "/".join(segments[:-1])
        return f'resource.path like "{prefix}/*"'
    if "*" not in pattern:
        return f'resource.path == "{pattern}"'
    # With the segment count fixed, a wildcard cannot swallow a '/': every literal '/'
    # of the pattern must meet one of the resource's equally many '/'.
    return f'resource.path like "{pattern}" && resource.depth == {len(segments)}'


@dataclass(frozen=True, slots=True)
class Permission:
    """``ACTION:RESOURCE`` as token scopes write it; the resource may be a pattern."""

    action: str
    resource: str

    @classmethod
    def parse(cls, text: str) -> Permission:
        action, sep, resource = text.partition(":")
        if not sep:
            raise InvalidRequest(f"invalid permission {text!r}: use ACTION:RESOURCE")
        action = check_action(action, allow_any=True)
        return cls(action, check_pattern(action, resource))

    def covers(self, action: str, resource: str) -> bool:
        if self.action not in ("*", action):
            return False
        if self.resource == "*" and (action == "delegate" or self.action == "*"):
            return True  # as in cedar_match: "*" names any agent, and "*:*" anything
        return pattern_matches(self.resource, resource)

    def __str__(self) -> str:
        return f"{self.action}:{self.resource}"
