"""Tether: identity-first security for AI agents."""

from tether.agent_keys import KeyPair, generate_key_pair
from tether.callers import Caller
from tether.config import IdpConfig, Settings
from tether.core import InitResult, Tether
from tether.errors import (
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    OwnerRequired,
    StoreUnavailable,
    TetherError,
    Unauthenticated,
)
from tether.model import Agent, AgentId, AgentKind, AgentName, AgentState, Email, Event
from tether.registry import AgentSpec, Registry

__all__ = [
    "Agent",
    "AgentId",
    "AgentKind",
    "AgentName",
    "AgentSpec",
    "AgentState",
    "Caller",
    "Conflict",
    "Email",
    "Event",
    "Forbidden",
    "IdpConfig",
    "IllegalTransition",
    "InitResult",
    "InvalidRequest",
    "KeyPair",
    "NotFound",
    "OwnerRequired",
    "Registry",
    "Settings",
    "StoreUnavailable",
    "Tether",
    "TetherError",
    "Unauthenticated",
    "generate_key_pair",
]
