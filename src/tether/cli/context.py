"""How a command reaches Tether: ``TETHER_URL`` over HTTP, or ``TETHER_HOME`` in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tether.client import Client
from tether.config import Settings
from tether.core import Tether
from tether.errors import TetherError

__all__ = ["keys_dir", "open_client", "settings"]


def settings() -> Settings:
    return Settings.from_env()


def keys_dir() -> Path:
    return settings().keys_dir


def _token(config: Settings) -> str | None:
    token = os.environ.get("TETHER_TOKEN")
    if token:
        return token.strip()
    try:
        return config.admin_token_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TetherError(f"cannot read {config.admin_token_file}: {exc.strerror}") from exc


@contextmanager
def open_client() -> Iterator[Client]:
    """A client for this invocation; local mode opens the store and serves it in-process."""
    url = os.environ.get("TETHER_URL")
    if url:
        client = Client.remote(url, _token(Settings.from_env()))
        try:
            yield client
        finally:
            client.close()
        return
    config = settings()
    if not config.home.is_dir():
        raise TetherError(
            f"TETHER_HOME {config.home} is not initialised: run `tether init` "
            "(or set TETHER_URL to use a running server)"
        )
    token = _token(config)
    if token is None:
        raise TetherError(f"no admin token: {config.admin_token_file} is missing; set TETHER_TOKEN")
    from tether.api import create_app  # the API pulls in FastAPI: only local mode needs it

    with Tether.open(config) as tether:
        tether.registry.sweep()
        yield Client.in_process(create_app(tether), token)
