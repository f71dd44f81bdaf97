"""Text made safe to show to a person or a log reader: control and bidirectional
characters become visible escapes.

A value Tether shows (an agent's name, a reason, an event's detail) may come from anyone.
Shown raw, a control character can drive a terminal (``ESC [`` sequences), end a line
early (NEL, LINE SEPARATOR) or forge one in a log, and a bidirectional override can make
text read in an order other than its bytes' ("Trojan Source", CVE-2021-42574). So every
such character is replaced by its escape ``\\uXXXX``: never dropped, so what was there is
still seen, and inside a JSON string the escape is the JSON escape of the same character,
so JSON stays valid and means the same.

Neutralised: C0 controls (U+0000-U+001F), DEL and C1 controls (U+007F-U+009F, NEL
included), the ARABIC LETTER MARK (U+061C), the LEFT-TO-RIGHT and RIGHT-TO-LEFT MARKs
(U+200E, U+200F), the LINE and PARAGRAPH SEPARATORs (U+2028, U+2029), the embeddings and
overrides (U+202A-U+202E) and the isolates (U+2066-U+2069); and lone surrogates
(U+D800-U+DFFF, which JSON can carry but no terminal or UTF-8 file can).
"""

from __future__ import annotations

import functools

__all__ = ["UNSAFE", "neutralise"]

UNSAFE = frozenset(
    chr(c)
    for c in (
        *range(0x00, 0x20),
        *range(0x7F, 0xA0),
        0x061C,
        0x200E,
        0x200F,
        0x2028,
        0x2029,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        *range(0xD800, 0xE000),
    )
)


def neutralise(text: str, keep: str = "") -> str:
    """``text`` with every :data:`UNSAFE` character but those in ``keep`` (say ``"\\n"``,
    for a format that escapes line breaks its own way) replaced by ``\\uXXXX``."""
    return text.translate(_escapes(keep))


@functools.cache
def _escapes(keep: str) -> dict[int, str]:
    return {ord(c): f"\\u{ord(c):04x}" for c in UNSAFE if c not in keep}
