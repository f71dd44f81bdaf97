"""Known secrets, and taking them out of whatever text leaves the process.

A :class:`Redactor` holds secret values and replaces every representation of each by
``[redacted]``: the raw text, the value stripped and each piece of it between control
characters (an error may show only the part before a newline), Python's ``repr`` and
``unicode_escape`` forms (``\\n``, ``\\x00``), the ``repr`` of its UTF-8 bytes
(``b'...'``, as HTTP libraries print a bad header), JSON string escaping (ASCII or not)
and URL encoding; and each of those escaped once more (a ``repr`` inside a JSON event);
and base64 (either alphabet) of the value however it is aligned in an encoded stream
(``user:VALUE`` in a Basic credential).
Text is redacted *before* it is cut to length, so a cut can never leave half a secret.
Forms shorter than :data:`MIN_LENGTH` characters are not looked for (they would blank
out ordinary words).

:data:`SECRETS` is the process's redactor: what holds a secret in play (an upstream's
injected credentials, an audit sink's headers and URL) adds it for as long as it uses it
(:meth:`Redactor.add` / :meth:`Redactor.discard`, counted, so two holders of one value
do not unmask it for each other). Once it holds anything, every log record the process
makes is redacted as it is made (its message, and its traceback), whoever logs it.

Better still is a secret no library ever puts in an error: :func:`is_field_value` says
whether a value may be sent as an HTTP header (checked before it is handed over).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

__all__ = [
    "MIN_LENGTH",
    "REDACTED",
    "SECRETS",
    "Redactor",
    "describe",
    "forms",
    "is_field_value",
]

REDACTED = "[redacted]"
MIN_LENGTH = 4
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# RFC 9110 5.5: field-value = *field-content (VCHAR, with SP / HTAB only between them);
# obs-text (bytes above 0x7e) is deprecated, and refused here
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20\x09\x21-\x7e]*[\x21-\x7e])?)?")

T = TypeVar("T")

_ESCAPES: tuple[Callable[[str], str], ...] = (
    lambda v: repr(v)[1:-1],
    lambda v: v.encode("unicode_escape").decode("ascii"),
    lambda v: repr(v.encode("utf-8", "surrogateescape"))[2:-1],
    lambda v: json.dumps(v)[1:-1],
    lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    lambda v: quote(v, safe=""),
    lambda v: quote_plus(v, safe=""),
)


def is_field_value(value: str) -> bool:
    """Whether ``value`` is an RFC 9110 field value of printable ASCII: no CR, LF, NUL or
    other control, no space or tab at either end."""
    return _FIELD_VALUE.fullmatch(value) is not None


def forms(value: str) -> set[str]:
    """Every representation of ``value`` that is looked for (at least MIN_LENGTH long)."""
    base = {value, value.strip(), *_CONTROLS.split(value)}
    found = set(base)
    for _ in range(2):  # escaped, and escaped again
        base = {escape(text) for text in base for escape in _ESCAPES}
        found |= base
    found |= _base64_forms(value)
    return {text for text in found if len(text) >= MIN_LENGTH}


_BASE64_MIN = 8  # a value's base64 forms are looked for from this many bytes


def _base64_forms(value: str) -> set[str]:
    """What base64 of ``value`` looks like wherever it starts in an encoded stream (``user:
    VALUE`` of a Basic credential, a Kubernetes Secret): for each of the three alignments,
    the characters that depend on the value's bytes alone, in both alphabets; and its own
    whole encoding."""
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) < _BASE64_MIN:
        return set()
    whole = base64.b64encode(raw).decode("ascii")
    found = {whole, whole.rstrip("=")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii").rstrip("=")
        start = (shift * 8 + 5) // 6  # the first character made of the value's bits only
        end = len(encoded) - (1 if (shift + len(raw)) % 3 else 0)  # the last one mixes
        found.add(encoded[start:end])
    return found | {f.replace("+", "-").replace("/", "_") for f in found}


class Redactor:
    """``Redactor(["s3cret"]).redact("token s3cret")`` is ``"token [redacted]"``."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def add(self, values: Iterable[str]) -> None:
        """Look for ``values`` from now on (each as often as it was added, until discarded)."""
        with self._lock:
            self._values.update(v for v in values if v)
            self._compile()

    def discard(self, values: Iterable[str]) -> None:
        """Stop looking for ``values`` (once each was discarded as often as added)."""
        with self._lock:
            self._values.subtract(v for v in values if v)
            self._values = +self._values  # drop what reached zero
            self._compile()

    def _compile(self) -> None:
        every = set().union(*(forms(v) for v in self._values)) if self._values else set()
        ordered = sorted(every, key=len, reverse=True)  # a longer form wins over its parts
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        """``text`` with every known secret replaced."""
        return self.count(text)[0]

    def count(self, text: str, replacement: str = REDACTED) -> tuple[str, int]:
        """``text`` redacted (each secret replaced by ``replacement``), and how many
        replacements were made."""
        pattern = self._pattern
        if pattern is None or not text:
            return text, 0
        return pattern.subn(lambda _: replacement, text)

    def scrub(self, value: T, replacement: str = REDACTED) -> tuple[T, int]:
        """A JSON-like value (dicts, lists, strings, ...) with every string in it, keys
        included, redacted (by ``replacement``); and how many replacements were made."""
        if self._pattern is None:
            return value, 0
        total = 0

        def walk(item: Any) -> Any:
            nonlocal total
            if isinstance(item, str):
                cleaned, n = self.count(item, replacement)
                total += n
                return cleaned
            if isinstance(item, dict):
                return {walk(k): walk(v) for k, v in item.items()}
            if isinstance(item, list | tuple):
                return [walk(v) for v in item]
            return item

        cleaned: T = walk(value)
        return cleaned, total

    def describe(self, exc: BaseException, limit: int = 200) -> str:
        """:func:`describe` of ``exc``, redacted before it is cut."""
        return describe(exc, limit, self)


def describe(exc: BaseException, limit: int = 200, redactor: Redactor | None = None) -> str:
    """A failure's kind and the first line of its message, at most ``limit`` characters of
    it, redacted (by ``redactor``, or :data:`SECRETS`) before anything is cut; of a group,
    its first failure."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    use = SECRETS if redactor is None else redactor
    lines = use.redact(str(exc)).splitlines()
    message = lines[0][:limit] if lines else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Process(Redactor):
    """The process's redactor: once it holds a secret, log records are redacted."""

    _installed = False

    def add(self, values: Iterable[str]) -> None:
        super().add(values)
        if self and not _Process._installed:
            _Process._installed = True
            _install(self)


def _install(redactor: Redactor) -> None:
    """Redact every log record as it is made (the record factory, kept for the process)."""
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # a record that cannot be formatted is left to the handler (which reports it)
        with contextlib.suppress(Exception):
            if redactor:
                message = record.getMessage()
                cleaned = redactor.redact(message)
                if cleaned != message:
                    record.msg, record.args = cleaned, None
                if record.exc_info and record.exc_info[1] is not None:
                    trace = formatter.formatException(record.exc_info)
                    record.exc_text = redactor.redact(trace)
        return record

    logging.setLogRecordFactory(make)


SECRETS: Redactor = _Process()
