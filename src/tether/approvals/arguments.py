"""A call's arguments as the audit log may keep them: the digest that binds an approval to
one exact call, and a redacted copy with every secret-looking string taken out.

- :func:`call_digest` is the SHA-256 (hex) of the RFC 8785 canonical JSON of
  ``{"chain": [...], "action": ..., "resource": ..., "args": {...}}``: two calls share a
  digest exactly when the same chain asks for the same action on the same resource with
  the same arguments (key order and number spelling do not matter, anything else does).
- :func:`redact_arguments` replaces, in every string of a JSON value (keys included), what
  looks like a secret by ``[redacted:<type>:<fingerprint>]``: a whole value discovery
  recognises (:func:`tether.discover.classify.classify`: AI keys, detect-secrets' named
  detectors, well-known prefixes), a value under a secret-sounding name (``password``,
  ``api_key``, ``token``, ``pin``...; a number too), inside longer text a
  ``NAME=VALUE`` or ``NAME: VALUE`` under such a name and the credential after
  ``Bearer`` / ``Basic``, known keys, PEM private keys, and long random-looking runs
  (high entropy); then the process's known credentials (:data:`tether.redact.SECRETS`:
  the upstreams' injected credentials) are taken out of what is left. The fingerprint is
  :func:`tether.discover.interface.fingerprint` (keyed: it matches the same secret seen
  twice, it cannot confirm a guess).

The redacted form errs on the side of taking too much out: it is what the log, the
webhook and a list of approvals show; the approver sees the exact arguments.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import rfc8785

from tether.discover.classify import classify, entropy, find_keys, name_type
from tether.discover.interface import fingerprint
from tether.redact import SECRETS

__all__ = ["UNDIGESTABLE", "call_digest", "redact_arguments", "redact_text"]

UNDIGESTABLE = (
    "the call's arguments have no RFC 8785 canonical form (an integer beyond 2^53, a "
    "number that is not finite, or a string that is not valid Unicode)"
)

_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# a run of characters a key, a token or a base64 blob is made of
_RUN = re.compile(r"[A-Za-z0-9+/=_\-.~:]{20,}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH|COOKIE|SESSION|BEARER"
    r"|(?:^|_)(?:PIN|OTP|CVV|CVC|TOTP)(?:_|$)"
)
# NAME=VALUE or NAME: VALUE inside text (a query string, a header, a config line) whose
# name sounds secret, and the credential after "Bearer" / "Basic"
_ASSIGNED = re.compile(
    r"(?i)(?<![\w:.\[-])([a-z0-9_.-]*(?:pass|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|credential|auth|cookie|session)[a-z0-9_.-]*)"
    r"(\s*[=:]\s*[\"']?)([^\s\"'&;,]{4,})"
)
_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_MAX_DEPTH = 64


def call_digest(
    chain: Sequence[str], action: str, resource: str, args: dict[str, Any] | None
) -> str:
    """The SHA-256 (hex) of the call's canonical JSON (RFC 8785): what an approval is bound
    to. Raises ``ValueError`` (:data:`UNDIGESTABLE`) for a value JSON cannot carry
    exactly: such a call can never be approved."""
    body: dict[str, Any] = {
        "chain": list(chain),
        "action": action,
        "resource": resource,
        "args": args or {},
    }
    try:
        return hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    except (rfc8785.CanonicalizationError, UnicodeError, TypeError):
        raise ValueError(UNDIGESTABLE) from None


def redact_arguments(value: Any, name: str | None = None, depth: int = 0) -> Any:
    """``value`` (a JSON value) with every secret-looking string replaced (see the module
    documentation); ``name`` is the key the value was given under, if any."""
    if depth > _MAX_DEPTH:
        return "[redacted:too-deep]"
    if isinstance(value, str):
        return redact_text(value, name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # a number under a secret-sounding name (a numeric password, PIN code or token)
        if name is not None and _secret_name(name):
            return _marker(name_type(name), str(value))
        return value
    if isinstance(value, dict):
        return {
            redact_text(str(k)): redact_arguments(v, str(k), depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_arguments(v, name, depth + 1) for v in value]
    return value


def redact_text(text: str, name: str | None = None) -> str:
    """One string with what looks like a secret in it replaced (``name``: its key)."""
    whole = text.strip()
    if whole:
        kind = classify(whole, name)
        if kind is None and name is not None and _secret_name(name) and len(whole) >= 4:
            kind = name_type(name)
        if kind is not None:
            return _marker(kind, whole)
    text = _PRIVATE_KEY.sub(lambda m: _marker("private-key", m.group(0)), text)
    text = _ASSIGNED.sub(_assigned, text)
    text = _SCHEME.sub(lambda m: m.group(1) + m.group(2) + _marker("token", m.group(3)), text)
    for found in sorted(find_keys(text), key=lambda f: f.start, reverse=True):
        text = text[: found.start] + _marker(found.type, found.value) + text[found.end :]
    text = _RUN.sub(_random_run, text)
    return SECRETS.redact(text)


def _assigned(match: re.Match[str]) -> str:
    name, between, value = match.groups()
    if value.lower() in ("bearer", "basic"):  # the credential follows: see _SCHEME
        return match.group(0)
    return name + between + _marker(classify(value, name) or name_type(name), value)


def _secret_name(name: str) -> bool:
    return _SECRET_NAME.search(re.sub(r"[^A-Z0-9]+", "_", name.upper())) is not None


def _random_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if run.startswith("redacted:"):  # a marker put in before
        return run
    kind = classify(run)
    if kind is not None:
        return _marker(kind, run)
    hexed = _HEX.sub(_random_hex, run)  # a digest or hex key, even glued to a word
    if hexed != run:
        return hexed
    letters = any(c.isalpha() for c in run)
    digits = any(c.isdigit() for c in run)
    if letters and digits and entropy(run) >= 4.0 and not _looks_like_path(run):
        return _marker("high-entropy", run)
    return run


def _random_hex(match: re.Match[str]) -> str:
    run = match.group(0)
    return _marker("high-entropy-hex", run) if entropy(run) >= 3.0 else run


def _looks_like_path(run: str) -> bool:
    """A path or a dotted name made of words (``/srv/reports/2024-q1.txt``): its parts
    are short or low in entropy."""
    parts = [p for p in re.split(r"[/.:]", run) if p]
    return len(parts) > 1 and all(len(p) < 20 or entropy(p) < 3.5 for p in parts)


def _marker(kind: str, secret: str) -> str:
    return f"[redacted:{kind}:{fingerprint(secret)}]"
