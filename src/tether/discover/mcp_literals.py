"""The values of an MCP server's configuration: which names sound secret, which values are
references to a secret kept elsewhere (``${VAR}``, ``${input:id}``, ``$VAR``, ``%VAR%``,
``env:VAR``, ``${{ secrets.X }}``), and which literals are secrets — typed by the one
classifier, :mod:`tether.discover.classify`.
"""

from __future__ import annotations

import re

from tether.discover.classify import classify, entropy, is_placeholder, name_type

__all__ = [
    "AUTH_SCHEME",
    "is_secret_name",
    "literal_secret_type",
    "reference_in",
    "referenced_name",
]

_SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"(?:^|[_\-.])key(?:$|[_\-.])|auth(?!or(?!iz))|credential|cookie|session|bearer|"
    r"(?:^|[_\-.])pat(?:$|[_\-.])",
    re.I,
)
_BRACED_REFERENCE = re.compile(
    r"\$\{\{\s*[^{}]*?\s*\}\}"  # ${{ secrets.X }} (Continue)
    r"|\$\{[^{}\s]+\}"  # ${VAR} ${env:VAR} ${input:id}
    r"|\{env:[A-Za-z_][A-Za-z0-9_]*\}"  # {env:VAR}
)
_BARE_REFERENCE = re.compile(
    r"\$[A-Za-z_][A-Za-z0-9_]*"  # $VAR
    r"|%[A-Za-z_][A-Za-z0-9_]*%"  # %VAR%
    r"|env:[A-Za-z_][A-Za-z0-9_]*"  # env:VAR
)
AUTH_SCHEME = re.compile(r"^(?:bearer|basic|token|bot|apikey)\s+", re.I)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def _looks_like_path_or_url(value: str) -> bool:
    if "://" in value:
        return True
    if value.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return True
    return bool(" " in value.strip())


def literal_secret_type(name: str, value: str) -> str | None:
    """The credential type of a literal ``value`` given as ``name``, or None when it is not a
    secret (a placeholder, empty, a path, a plain URL, low entropy, an innocent name). A
    value the classifier knows by its form is a secret whatever its name."""
    text = value.strip()
    if not text or is_placeholder(text):
        return None
    known = classify(text, name)
    if known is not None:
        return known
    if not is_secret_name(name) or _looks_like_path_or_url(text):
        return None
    if len(text) < 8 or (text.isdigit() and len(text) < 16):
        return None
    if len(set(text)) < 5 or entropy(text) < 2.5:
        return None
    return name_type(name)


def reference_in(value: str) -> str | None:
    """The reference that ``value`` is (``$VAR``, ``%VAR%``, ``env:VAR`` ...) or contains
    (``${VAR}``, ``${input:id}``, ``${{ secrets.X }}``), or None."""
    text = value.strip()
    if _BARE_REFERENCE.fullmatch(text) or _BRACED_REFERENCE.fullmatch(text):
        return text
    match = _BRACED_REFERENCE.search(text)
    return None if match is None else match.group()


def referenced_name(reference: str) -> str:
    inner = reference.strip("${}% ")
    for lead in ("env:", "input:", "secrets.", "inputs."):
        if lead in inner:
            inner = inner.split(lead, 1)[1]
    return inner.strip("{} ")
