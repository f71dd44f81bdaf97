"""Persistence: SQLAlchemy 2 tables and Alembic migrations on SQLite or PostgreSQL."""

from tether.store.engine import Store
from tether.store.tables import (
    admin_tokens,
    agents,
    assertion_jtis,
    audit_checkpoints,
    audit_head,
    audit_keys,
    audit_nodes,
    events,
    gateway_pins,
    gateway_servers,
    grants,
    issued_tokens,
    metadata,
    policies,
    signing_keys,
    sink_cursors,
    state_epoch,
)

__all__ = [
    "Store",
    "admin_tokens",
    "agents",
    "assertion_jtis",
    "audit_checkpoints",
    "audit_head",
    "audit_keys",
    "audit_nodes",
    "events",
    "gateway_pins",
    "gateway_servers",
    "grants",
    "issued_tokens",
    "metadata",
    "policies",
    "signing_keys",
    "sink_cursors",
    "state_epoch",
]
