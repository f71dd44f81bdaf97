"""The command-line face: ``tether ...`` (Typer + Rich)."""
