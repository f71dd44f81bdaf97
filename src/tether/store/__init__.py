"""Persistence: SQLAlchemy 2 tables and Alembic migrations on SQLite or PostgreSQL."""

from tether.store.engine import Store
from tether.store.tables import (
    admin_tokens,
    agents,
    events,
    grants,
    metadata,
    policies,
    state_epoch,
)

__all__ = [
    "Store",
    "admin_tokens",
    "agents",
    "events",
    "grants",
    "metadata",
    "policies",
    "state_epoch",
]
