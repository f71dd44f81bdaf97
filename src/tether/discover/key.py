"""The key that credential fingerprints are made with: one per installation.

A fingerprint is an HMAC-SHA256 of the secret under this key (see
:func:`tether.discover.interface.fingerprint`), so whoever reads a fingerprint (a SARIF
upload, the findings API, a screenshot) cannot confirm a guess of the secret offline, yet
the same secret gets the same fingerprint in every scan of one installation. The key is
``TETHER_HOME/discovery.key`` (64 hex digits, mode 0600): made by ``tether init`` or on
the first scan, never replaced, never logged. Discovery never opens the store: the
caller reads the key here and hands it to :func:`tether.discover.scan.run_scan`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from tether.errors import InvalidRequest

__all__ = ["KEY_FILE", "home_key"]

KEY_FILE = "discovery.key"
_KEY_BYTES = 32


def home_key(home: Path) -> bytes:
    """The fingerprint key of the installation at ``home`` (an existing directory), made
    on first use: written whole to a private file and linked in place, so concurrent
    first scans agree on one key and none ever reads half of it."""
    path = home / KEY_FILE
    if not path.exists():
        staging = home / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(_KEY_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(staging, path)
        except OSError as exc:
            raise InvalidRequest(f"cannot make the discovery key {path}: {exc.strerror}") from None
        finally:
            staging.unlink(missing_ok=True)
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise InvalidRequest(
            f"the discovery key {path} is unreadable or not {2 * _KEY_BYTES} hex digits; "
            "move it away to make a new one (fingerprints of earlier scans then change)"
        )
    return key
