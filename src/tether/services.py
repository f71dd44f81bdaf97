"""What every service of a running Tether shares: one store, its settings, the event
record, the state epoch and the clock. Services take this one object instead of the same
five arguments each (see :class:`tether.core.Tether`, which makes it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tether.audit.log import AuditLog
from tether.config import Settings
from tether.epoch import StateEpoch
from tether.store import Store

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    store: Store
    settings: Settings
    events: AuditLog
    epoch: StateEpoch
    clock: Callable[[], datetime]
