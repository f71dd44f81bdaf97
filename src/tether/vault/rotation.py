"""New values for rotated KV secrets.

With ``[vault] rotation_command`` set, the command is run as ``argv + [path, field]`` (no
shell, Tether's environment, 10 s at most) and what it prints on stdout, stripped, is the
new value: it may rotate the credential at its source (revoke the old GitHub token, mint a
new one) before printing it. Without a command, the new value is a random API key
``tether_<43 url-safe characters>``, which suits secrets whose consumers read them from
the vault too. A failure says what happened (exit code, timeout) and never what the
command printed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Sequence

__all__ = ["ROTATION_TIMEOUT", "RotationFailed", "new_value", "random_key"]

ROTATION_TIMEOUT = 10.0  # seconds
MAX_VALUE = 8 * 1024  # bytes of stdout


class RotationFailed(Exception):
    """The rotation command gave no usable value; the message is safe to report."""


def random_key() -> str:
    return "tether_" + secrets.token_urlsafe(32)


def new_value(
    command: Sequence[str], path: str, field: str, timeout: float = ROTATION_TIMEOUT
) -> str:
    """The new value of ``path#field``: from ``command`` if given, else :func:`random_key`."""
    if not command:
        return random_key()
    argv = [*command, path, field]
    name = command[0]
    try:
        proc = subprocess.Popen(  # noqa: S603 (an operator-configured argv, no shell)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as exc:
        raise RotationFailed(
            f"the rotation command {name} could not run: {type(exc).__name__}"
        ) from None
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise RotationFailed(f"the rotation command {name} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        raise RotationFailed(f"the rotation command {name} exited with code {proc.returncode}")
    if len(stdout) > MAX_VALUE:
        raise RotationFailed(f"the rotation command {name} printed more than {MAX_VALUE} bytes")
    try:
        value = stdout.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RotationFailed(f"the rotation command {name} printed invalid UTF-8") from None
    if not value:
        raise RotationFailed(f"the rotation command {name} printed no value")
    return value


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.communicate()  # the group is gone: its pipe closes
