"""The one secret classifier of discovery: what kind of credential a value is.

Every scanner that reports a credential (secrets in files, Kubernetes manifests, MCP client
configurations, CI workflows) types it here, so the same value is reported with the same
``type`` — and, fingerprinted by :meth:`tether.discover.interface.Credential.of`, the same
fingerprint — wherever it is found. (The cloud IAM and agent code scanners report no
credential values: a key written in code is the secrets scanner's.)

* :func:`classify` — a value recognised by its form, most precise first: the AI-provider
  key patterns of :mod:`tether.discover.ai_keys` (a key without a prefix only with a
  ``name`` that says whose it is), then detect-secrets' named detectors
  (:func:`tether.discover.detectors.typed`: ``github-token``, ``aws-access-key``,
  ``slack-token`` ...), then a table of other well-known key prefixes followed by
  random-looking text (``glpat-``, ``lin_api_``, ``ntn_``, ``npm_`` ...).
* :func:`name_type` — the type a value has by the name it is given, when its form says
  nothing (``GITHUB_TOKEN`` → ``github-token``, ``DB_PASSWORD`` → ``password``,
  ``X-API-Key`` → ``api-key``, ``KUBE_TOKEN`` → ``token``, ``JWT_SECRET`` → ``secret``).
* :func:`secret_type` — both: ``classify`` else ``name_type``.
* :func:`find_keys` — known keys anywhere in a text (AI keys, AWS key IDs, GitHub tokens).
* :func:`is_placeholder` (from :mod:`tether.discover.placeholders`) — never a secret.

Whether a value is worth reporting at all (long enough, under a secret-sounding name, in
the right place) stays with each scanner: a CI ``with:`` input, a Kubernetes ``env`` entry
and an MCP server's argument are read by different rules; the type they report is this
module's.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from tether.discover import ai_keys, detectors
from tether.discover.ai_keys import normalise_name
from tether.discover.placeholders import is_placeholder

__all__ = [
    "FoundKey",
    "classify",
    "classify_source",
    "decode_base64",
    "entropy",
    "find_keys",
    "is_ai_type",
    "is_placeholder",
    "looks_random",
    "name_type",
    "prefix_type",
    "secret_type",
]

_MAX_VALUE = 64 * 1024  # longer values are not one key (AI keys: ai_keys caps at 512)

# Well-known prefixes neither the AI patterns nor detect-secrets know precisely: a value
# with one of them followed by random-looking text (:func:`looks_random`) is that kind.
# Also the lenient fallback for the AI and GitHub prefixes whose precise pattern a newer
# or shorter key does not match.
_PREFIX_TYPES: tuple[tuple[str, str], ...] = (
    ("github_pat_", "github-token"),
    ("ghp_", "github-token"),
    ("gho_", "github-token"),
    ("ghu_", "github-token"),
    ("ghs_", "github-token"),
    ("ghr_", "github-token"),
    ("glpat-", "gitlab-token"),
    ("sk-ant-", "anthropic-api-key"),
    ("sk-or-", "openrouter-api-key"),
    ("sk-", "openai-api-key"),
    ("xoxb-", "slack-token"),
    ("xoxp-", "slack-token"),
    ("xoxa-", "slack-token"),
    ("xoxs-", "slack-token"),
    ("xapp-", "slack-token"),
    ("AIza", "google-api-key"),
    ("sk_live_", "stripe-api-key"),
    ("rk_live_", "stripe-api-key"),
    ("sk_test_", "stripe-api-key"),
    ("hf_", "huggingface-token"),
    ("npm_", "npm-token"),
    ("pplx-", "perplexity-api-key"),
    ("gsk_", "groq-api-key"),
    ("lin_api_", "linear-api-key"),
    ("ntn_", "notion-token"),
    ("sntrys_", "sentry-token"),
    ("dop_v1_", "digitalocean-token"),
    ("shpat_", "shopify-token"),
    ("eyJ", "jwt"),
)
_AWS_KEY = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
# Keys found anywhere in a text besides the AI keys (those are ai_keys.find_keys').
_OTHER_KEYS = (
    ("aws-access-key", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])")),
    ("github-token", re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,}")),
    ("github-token", re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}")),
)
_AI_TYPES = frozenset(p.type for p in (*ai_keys.PREFIXED, *ai_keys.HINTED)) | {
    "azure-openai-api-key",
}


def entropy(value: str) -> float:
    """Shannon entropy of ``value``, in bits per character."""
    counts: dict[str, int] = {}
    for char in value:
        counts[char] = counts.get(char, 0) + 1
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def looks_random(rest: str) -> bool:
    """Whether what follows a key prefix looks like key material, not a word
    (``sk-learn-server`` is not a key)."""
    core = rest.strip("-_")
    return (
        len(core) >= 16
        and any(c.isdigit() for c in core)
        and any(c.isalpha() for c in core)
        and not any(c.isspace() for c in core)
        and entropy(core) >= 3.0
    )


def prefix_type(value: str) -> str | None:
    """The type of a value with a well-known key prefix followed by random-looking text
    (the lenient tier of :func:`classify`), or None."""
    if _AWS_KEY.fullmatch(value):
        return "aws-access-key"
    for prefix, kind in _PREFIX_TYPES:
        if value.startswith(prefix) and looks_random(value[len(prefix) :]):
            return kind
    return None


def classify(value: str, name: str | None = None) -> str | None:
    """The credential type of a whole ``value`` recognised by its form (``name``, when
    given, lets a key without a prefix be recognised: ``MISTRAL_API_KEY``), or None (also
    for a placeholder). See the module documentation for the order."""
    found = classify_source(value, name)
    return None if found is None else found[0]


def classify_source(value: str, name: str | None = None) -> tuple[str, str] | None:
    """:func:`classify`, with what recognised the value: ``(type, detector)``, the
    detector being ``tether:ai-keys``, ``detect-secrets:<plugin>`` or ``tether:prefix``."""
    text = value.strip()
    if not text or len(text) > _MAX_VALUE or is_placeholder(text):
        return None
    kind = ai_keys.classify(text, name)
    if kind is not None:
        return kind, "tether:ai-keys"
    typed = detectors.typed(text)
    if typed is not None:
        return typed
    kind = prefix_type(text)
    return None if kind is None else (kind, "tether:prefix")


_PROVIDER_NAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"GITHUB|(?:^|_)GH_"), "github-token"),
    (re.compile(r"GITLAB"), "gitlab-token"),
    (re.compile(r"OPENAI"), "openai-api-key"),
    (re.compile(r"ANTHROPIC"), "anthropic-api-key"),
    (re.compile(r"SLACK"), "slack-token"),
    (re.compile(r"AWS.*SECRET|SECRET.*AWS"), "aws-secret-key"),
)
_PASSWORD = re.compile(r"PASS|PWD|CONTRASE")
# The last word says what the value is: a key, a token, a secret.
_LAST_WORD = (
    (re.compile(r"(?:^|_)(?:API_?KEY|KEY)$"), "api-key"),
    (re.compile(r"(?:^|_)(?:TOKEN|PAT|AUTH|AUTHORIZATION|BEARER|COOKIE|SESSION)$"), "token"),
    (re.compile(r"(?:^|_)(?:SECRET|SECRETS|CREDENTIALS?)$"), "secret"),
)
_ANY_WORD = (
    (re.compile(r"KEY"), "api-key"),
    (re.compile(r"TOKEN|(?:^|_)PAT(?:_|$)|AUTH|BEARER|COOKIE|SESSION"), "token"),
)


def name_type(name: str) -> str:
    """The credential type a value has by the name it is given (``OPENAI_API_KEY`` ->
    ``openai-api-key``, ``GH_TOKEN`` -> ``github-token``, ``DB_PASSWORD`` -> ``password``,
    ``X-API-Key`` -> ``api-key``, ``auth_token`` -> ``token``, ``SESSION_SECRET`` ->
    ``secret``); ``secret`` when the name says nothing more."""
    ai = ai_keys.type_for_name(name)
    if ai is not None:
        return ai
    upper = normalise_name(name)
    for pattern, kind in _PROVIDER_NAMES:
        if pattern.search(upper):
            return kind
    if _PASSWORD.search(upper):
        return "password"
    for pattern, kind in (*_LAST_WORD, *_ANY_WORD):
        if pattern.search(upper):
            return kind
    return "secret"


def secret_type(value: str, name: str | None) -> str:
    """The type of a value a scanner has decided is a secret: by its form
    (:func:`classify`), else by its ``name`` (:func:`name_type`), else ``secret``."""
    kind = classify(value, name)
    if kind is not None:
        return kind
    return name_type(name) if name else "secret"


def is_ai_type(kind: str) -> bool:
    """Whether ``kind`` is an AI provider's key type (``openai-api-key`` ...)."""
    return kind in _AI_TYPES


@dataclass(frozen=True, slots=True)
class FoundKey:
    """A known key found in a text: its ``type``, the value (to fingerprint, never to
    keep) and its offsets."""

    type: str
    value: str
    start: int
    end: int


def find_keys(text: str) -> Iterator[FoundKey]:
    """Known keys anywhere in ``text`` (placeholders left out): the prefixed AI keys, AWS
    access key IDs and GitHub tokens."""
    for match in ai_keys.find_keys(text):
        yield FoundKey(match.type, match.value, match.start, match.end)
    for kind, pattern in _OTHER_KEYS:
        for found in pattern.finditer(text):
            if not is_placeholder(found.group(0)):
                yield FoundKey(kind, found.group(0), found.start(), found.end())


def decode_base64(raw: str) -> str | None:
    """A base64 value (a Kubernetes Secret's ``data``) decoded to text, to classify and
    fingerprint it (None when it is not base64 text)."""
    compact = "".join(raw.split())
    try:
        decoded = base64.b64decode(compact, validate=True)
        return decoded.decode("utf-8").strip()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
