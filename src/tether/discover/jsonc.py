"""JSONC: JSON with comments (``//``, ``/* */``) and trailing commas, as VS Code, Cursor
and Zed write their settings, read with the line of every key.

:func:`parse_jsonc` returns the values and the 1-based line of each key / list item (by its
path, down to :data:`LINE_DEPTH` levels). Untrusted input: nesting deeper than
:data:`MAX_DEPTH` is an error (never a ``RecursionError``), strings are decoded by the
standard library's JSON decoder (control characters tolerated, as editors do), and any
problem is a :class:`ParseError` (a ``ValueError``) naming the line, never the text.

Why not a library: the JSONC / JSON5 readers on PyPI (``json5``, ``pyjson5``, ``commentjson``,
``json-with-comments``, ``jsonc-parser``) return values only — none gives the line of each
key, which every finding carries — and JSON5 accepts more than the editors do (single
quotes, unquoted keys, hexadecimal numbers), so a file an editor rejects would be read.
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Any

__all__ = ["LINE_DEPTH", "MAX_DEPTH", "KeyPath", "ParseError", "parse_jsonc"]

MAX_DEPTH = 200  # nesting
Key = str | int
KeyPath = tuple[Key, ...]


class ParseError(ValueError):
    """The text is not JSONC (the message names the line, never the text)."""


_JSONC_SPACE = re.compile(r"(?:[ \t\r\n\ufeff]+|//[^\n]*|/\*.*?\*/)*", re.S)
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
LINE_DEPTH = 6  # keys deeper than this are not given lines (nothing there is reported)
_DECODER = json.JSONDecoder(strict=False)


def _json_string(text: str, pos: int) -> tuple[str, int]:
    """The JSON string starting at ``text[pos]`` (a double quote) and the offset after it."""
    value, end = _DECODER.raw_decode(text, pos)
    if not isinstance(value, str):  # pragma: no cover - callers check the quote
        raise ParseError("expected a string")
    return value, end


class _Jsonc:
    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def space(self, pos: int) -> int:
        match = _JSONC_SPACE.match(self.text, pos)
        return pos if match is None else match.end()

    def parse(self) -> Any:
        pos = self.space(0)
        if pos >= len(self.text):
            return None
        value, pos = self.value(pos, (), 0)
        pos = self.space(pos)
        if pos != len(self.text):
            raise ParseError(f"unexpected text at line {self.line(pos)}")
        return value

    def fail(self, what: str, pos: int) -> ParseError:
        return ParseError(f"{what} at line {self.line(pos)}")

    def value(self, pos: int, path: KeyPath, depth: int) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise self.fail("nested too deeply", pos)
        text = self.text
        if pos >= len(text):
            raise self.fail("unexpected end", pos)
        char = text[pos]
        if char == "{":
            return self.object(pos + 1, path, depth)
        if char == "[":
            return self.array(pos + 1, path, depth)
        if char == '"':
            return _json_string(text, pos)
        for word, constant in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, pos):
                return constant, pos + len(word)
        match = _JSON_NUMBER.match(text, pos)
        if match is not None:
            number = match.group()
            if any(c in number for c in ".eE"):
                return float(number), match.end()
            return int(number), match.end()
        raise self.fail(f"unexpected {char!r}", pos)

    def object(self, pos: int, path: KeyPath, depth: int) -> tuple[dict[str, Any], int]:
        text = self.text
        out: dict[str, Any] = {}
        pos = self.space(pos)
        if text.startswith("}", pos):
            return out, pos + 1
        while True:
            if not text.startswith('"', pos):
                raise self.fail("expected a key", pos)
            start = pos
            key, pos = _json_string(text, pos)
            if len(path) < LINE_DEPTH:
                self.lines.setdefault((*path, key), self.line(start))
            pos = self.space(pos)
            if not text.startswith(":", pos):
                raise self.fail("expected ':'", pos)
            pos = self.space(pos + 1)
            out[key], pos = self.value(pos, (*path, key), depth + 1)
            pos = self.space(pos)
            if text.startswith(",", pos):
                pos = self.space(pos + 1)
                if text.startswith("}", pos):  # a trailing comma
                    return out, pos + 1
                continue
            if text.startswith("}", pos):
                return out, pos + 1
            raise self.fail("expected ',' or '}'", pos)

    def array(self, pos: int, path: KeyPath, depth: int) -> tuple[list[Any], int]:
        text = self.text
        out: list[Any] = []
        pos = self.space(pos)
        if text.startswith("]", pos):
            return out, pos + 1
        while True:
            if len(path) < LINE_DEPTH:
                self.lines.setdefault((*path, len(out)), self.line(pos))
            item, pos = self.value(pos, (*path, len(out)), depth + 1)
            out.append(item)
            pos = self.space(pos)
            if text.startswith(",", pos):
                pos = self.space(pos + 1)
                if text.startswith("]", pos):
                    return out, pos + 1
                continue
            if text.startswith("]", pos):
                return out, pos + 1
            raise self.fail("expected ',' or ']'", pos)


def parse_jsonc(text: str) -> tuple[Any, dict[KeyPath, int]]:
    """JSONC ``text`` as Python values, and the 1-based line of each key / list item (by its
    path). Raises ``ValueError`` when it is not JSONC."""
    parser = _Jsonc(text)
    try:
        return parser.parse(), parser.lines
    except RecursionError as exc:  # pragma: no cover - the depth cap comes first
        raise ParseError("nested too deeply") from exc
