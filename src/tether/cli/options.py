"""Options shared by many commands."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Json", "Reason"]

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Reason = Annotated[str, typer.Option("--reason", help="Why; recorded with the change.")]
