"""What request bodies share: unknown fields are refused, durations are parsed once."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from tether.durations import parse_duration

__all__ = ["StrictBody", "optional_duration"]


class StrictBody(BaseModel):
    """A request body that refuses unknown fields (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


def optional_duration(text: str | None) -> timedelta | None:
    return parse_duration(text) if text is not None else None
