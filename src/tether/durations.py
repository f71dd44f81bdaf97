"""Durations as the CLI and config write them: ``90s``, ``15m``, ``8h``, ``30d``."""

from __future__ import annotations

import re
from datetime import timedelta

from tether.errors import InvalidRequest

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"(?P<n>[0-9]{1,9})(?P<unit>[smhd])")
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """Parse ``<digits><s|m|h|d>`` into a positive :class:`timedelta`.

    Raises :class:`InvalidRequest` naming the accepted form for anything else: empty,
    signs, spaces, fractions, unknown units, zero, or more than ten years.
    """
    match = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequest(
            f"invalid duration {text!r}: use a whole number followed by s, m, h or d "
            "(e.g. 90s, 15m, 8h, 30d)"
        )
    seconds = int(match["n"]) * _UNITS[match["unit"]]
    if seconds == 0:
        raise InvalidRequest(f"invalid duration {text!r}: must be greater than zero")
    value = timedelta(seconds=seconds)
    if value > MAX_DURATION:
        raise InvalidRequest(f"invalid duration {text!r}: longer than 3650d")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact ``<n><unit>`` form of a whole-second duration."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
