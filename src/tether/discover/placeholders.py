"""Placeholders: values that stand in for a secret (``${OPENAI_API_KEY}``, ``<your-token>``,
``sk-...``, ``changeme``, ``YOUR_API_KEY``, ``AKIAIOSFODNN7EXAMPLE`` ...) and are never
reported as one. :func:`is_placeholder` is the one test every scanner uses (through
:mod:`tether.discover.classify`).
"""

from __future__ import annotations

import re

__all__ = ["is_placeholder"]

_TEMPLATED = re.compile(
    r"""^(?:<[^<>]*>|\$\{.*\}|\$\(.*\)|\{\{.*\}\}|\{[^{}]*\}|%[A-Za-z0-9_]+%|\$[A-Za-z_{(]"""
    r"""|#\{.*\}|@[A-Za-z_]+@|\[[A-Z_ ]+\])"""
)
_MASKS = re.compile(r"\.\.\.|…|\*\*\*|(?i:x{8})|____|####|<[A-Za-z_ -]+>|\{\{|\$\{")
_XXXX = re.compile(r"(?i:xxxx)")  # a mask in a short value; in a long one it can be chance
_LONG_WORDS = re.compile(
    r"example|placeholder|changeme|change_me|change-me|replace|redacted|dummy|sample|"
    r"yourkey|your_key|your-key|yourtoken|insert|notreal|not_real|not-real|fixme|"
    r"do-not-use|donotuse|secretkeyhere|keyhere|tokenhere",
    re.IGNORECASE,
)
_SHORT_WORDS = re.compile(
    r"(?:^|[^A-Za-z0-9]|(?<=[a-z])(?=[A-Z]))(?:your|here|fake|todo|mock|demo)(?:$|[^a-z0-9])",
    re.IGNORECASE,
)
_SCREAMING_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_EXACT = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "changeit",
        "admin",
        "test",
        "testing",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "key",
        "string",
        "null",
        "none",
        "nil",
        "true",
        "false",
        "tbd",
        "n/a",
        "empty",
        "default",
        "mysecret",
        "mypassword",
        "secret123",
        "password123",
        "hidden",
        "masked",
        "required",
        "optional",
        "value",
        "tiger",  # scott:tiger, the classic demo account
        "pass",
        "pw",
        "pwd",
        "foo",
        "bar",
        "baz",
        "foobar",
        "qwerty",
        "letmein",
        "123456",
        "12345678",
        "passw0rd",
        "p@ssw0rd",
        "p@ssword",
        "undefined",
        "xxx",
    }
)
# Only letters and separators around a word that names what it stands for:
# some_password, my-secret-token, secretpassword.
_NAMES_ITSELF = re.compile(
    r"[A-Za-z_\-]*(?:password|passwd|secret|token|apikey|api_key|api-key)[A-Za-z_\-]*",
    re.IGNORECASE,
)
_ENTER = re.compile(r"(?i)(?:^|[^a-z])enter[_-]")  # enter_your_key, ENTER-TOKEN
_SEQUENCES = (
    "0123456789abcdefghijklmnopqrstuvwxyz" * 2,
    "1234567890" * 4,
    "abcdefghijklmnopqrstuvwxyz" * 2,
    "qwertyuiopasdfghjklzxcvbnm",
)
_KNOWN_PREFIX = re.compile(r"^(?:[A-Za-z]{1,8}\d{0,2}[-_]){1,3}")


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is a stand-in rather than a secret: templated (``<KEY>``,
    ``${OPENAI_API_KEY}``, ``{{ .key }}``, ``$KEY``), masked (``sk-...``, ``sk-****``,
    ``sk-xxxx``), a variable name (``YOUR_API_KEY``), a placeholder word (``your``,
    ``example``, ``changeme``, ``here`` ...; so AWS' own ``AKIAIOSFODNN7EXAMPLE``), a
    well-known demo value (``password``, ``tiger``, ``foobar`` ...) or letters around the
    word it stands for (``my_secret_password``), one
    repeated character or a tiny alphabet (``sk-aaaa...``), a run (``abcdef...``,
    ``123456...``) or a repeated short unit (``abc123abc123...``)."""
    text = value.strip().strip("\"'`")
    if not text:
        return True
    lowered = text.lower()
    if lowered in _EXACT or lowered.strip(":;,. ") in _EXACT or _NAMES_ITSELF.fullmatch(text):
        return True
    if _TEMPLATED.match(text) or _MASKS.search(text):
        return True
    if len(text) <= 64 and _XXXX.search(text):
        return True
    if _LONG_WORDS.search(text) or _SHORT_WORDS.search(text):
        return True
    if _SCREAMING_SNAKE.match(text) or _ENTER.search(text):
        return True
    body = _KNOWN_PREFIX.sub("", text) or text
    if len(body) >= 6 and len(set(body.lower())) <= 4:
        return True
    if len(body) >= 12 and (_is_run(body) or _is_repeated(body)):
        return True
    return _is_keyboard_runs(body.lower().strip("-_"))


def _is_run(body: str) -> bool:
    """``abcdef...`` / ``0123...`` / ``987...``: most neighbours are one apart."""
    steps = [ord(b) - ord(a) for a, b in zip(body.lower(), body.lower()[1:], strict=False)]
    ones = sum(1 for s in steps if s in (1, -1))
    return ones >= 0.7 * len(steps)


def _is_repeated(body: str) -> bool:
    """``abc123abc123...``: a unit of up to 8 characters, repeated."""
    for size in range(1, 9):
        unit = body[:size]
        if len(body) >= 2 * size and (unit * (len(body) // size + 1)).startswith(body):
            return True
    return False


def _is_keyboard_runs(text: str) -> bool:
    """One or two runs of a keyboard / alphabet / digit sequence (``qwertyuiop``,
    ``1234567890abcdef``)."""
    if len(text) < 6 or len(text) > 80:
        return False

    def run(part: str) -> bool:
        return any(part in sequence for sequence in _SEQUENCES)

    return run(text) or any(run(text[:k]) and run(text[k:]) for k in range(3, len(text) - 2))
