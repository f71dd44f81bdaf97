"""Real server processes for tests: a free port, and a server started and waited for.

Every port comes from the OS (bind to port 0), so parallel test processes (pytest-xdist)
do not collide; a server is polled on ``/healthz`` with a deadline, never slept for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A loopback TCP port nobody listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``argv`` in a session of its own, serving on 127.0.0.1:``port``; returns once its
    ``/healthz`` answers 200 (or fails with its output). :meth:`stop` ends the session."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        port: int,
        *,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{argv[0]} exited: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"{argv[0]} did not come up within {timeout:.0f} s")

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL after 15 s); returns what it printed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.output()
