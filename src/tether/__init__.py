"""Tether: identity-first security for AI agents."""

from tether.agent_keys import KeyPair, generate_key_pair
from tether.callers import Caller
from tether.config import IdpConfig, Settings
from tether.core import InitResult, Tether
from tether.errors import (
    Conflict,
    Denied,
    Forbidden,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    OwnerRequired,
    StoreUnavailable,
    TetherError,
    Unauthenticated,
)
from tether.grants import Grant, GrantSpec
from tether.model import Agent, AgentId, AgentKind, AgentName, AgentState, Email, Event
from tether.policy.decision import AccessRequest, Decision
from tether.registry import AgentSpec, Registry

__all__ = [
    "AccessRequest",
    "Agent",
    "AgentId",
    "AgentKind",
    "AgentName",
    "AgentSpec",
    "AgentState",
    "Caller",
    "Conflict",
    "Decision",
    "Denied",
    "Email",
    "Event",
    "Forbidden",
    "Grant",
    "GrantSpec",
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
