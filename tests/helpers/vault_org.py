"""A Tether whose vault is a test OpenBao, with agent ``a`` and its key file: what the
vault tests (test_hardening_vault.py, test_kill_vault.py) build their organisation on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.openbao import OpenBao

from tether import AgentSpec, Caller, Settings, Tether, generate_key_pair

__all__ = ["vault_tether"]


@contextmanager
def vault_tether(
    bao: OpenBao,
    make_settings: Callable[..., Settings],
    key_file: Path,
    *,
    token: str,
    timeout_ms: int,
) -> Iterator[Tether]:
    """An initialised Tether brokering ``bao`` with ``token`` (no cache); agent ``a``
    (owner alice@example.com) registered, its private key written to ``key_file``."""
    settings = make_settings(
        vault={"address": bao.address, "token": token, "timeout_ms": timeout_ms, "cache_ms": 0}
    )
    tether, _ = Tether.init(settings)
    pair = generate_key_pair()
    key_file.write_bytes(pair.private_pem)
    tether.registry.register(
        Caller.admin(), AgentSpec(name="a", owner="alice@example.com", public_key=pair.public_key)
    )
    with tether:
        yield tether
