"""Audit events in SIEM formats: the canonical JSONL body, OCSF 1.8.0 JSON, or CEF."""

from __future__ import annotations

import json
from typing import Any, Literal

from tether.audit.cef import to_cef
from tether.audit.ocsf import to_ocsf
from tether.safe_text import neutralise

__all__ = ["FORMATS", "Format", "render"]

Format = Literal["jsonl", "ocsf", "cef"]
FORMATS: tuple[Format, ...] = ("jsonl", "ocsf", "cef")


def render(body: str, format: Format, *, version: str) -> str:
    """One line (without its newline) for the event whose canonical body is ``body``."""
    if format == "jsonl":
        return body

    event: dict[str, Any] = json.loads(body)
    if format == "ocsf":  # control and bidi characters as JSON escapes: the same JSON
        text = json.dumps(
            to_ocsf(event, version=version), ensure_ascii=False, separators=(",", ":")
        )
        return neutralise(text)
    return to_cef(event, version=version)
