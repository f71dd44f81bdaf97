"""A vault broker on a test's Tether for another vault than the one its settings name:
``broker_for(tether, VaultSettings(address=..., token=...), client=...)``."""

from __future__ import annotations

from dataclasses import replace

from tether.config import VaultSettings
from tether.core import Tether
from tether.vault import Broker, VaultClient


def broker_for(tether: Tether, vault: VaultSettings, client: VaultClient | None = None) -> Broker:
    """A :class:`Broker` sharing ``tether``'s store, events and clock, speaking to ``vault``."""
    settings = tether.settings.model_copy(update={"vault": vault})
    return Broker(replace(tether.services, settings=settings), client=client)
