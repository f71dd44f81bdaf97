"""A Tether's API served over real HTTP by uvicorn in a thread of the test process, for
clients in other processes (the stdio bridge) while the test keeps the Tether in hand."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(tether: Any) -> Iterator[str]:
    """``create_app(tether)`` on a free port of 127.0.0.1; yields its URL."""
    from tether.api import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(tether), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
