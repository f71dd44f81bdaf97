"""Tether: identity-first security for AI agents.

The public names are loaded on first use (PEP 562), so that importing a light module such
as the stdio bridge (``tether.gateway.stdio``) does not pull in the core, the store and
their dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "tether.agent_keys": ("KeyPair", "generate_key_pair"),
    "tether.callers": ("Caller",),
    "tether.config": ("IdpConfig", "Settings"),
    "tether.core": ("InitResult", "Tether"),
    "tether.errors": (
        "Conflict",
        "Denied",
        "Forbidden",
        "IllegalTransition",
        "InvalidRequest",
        "NotFound",
        "OwnerRequired",
        "StoreUnavailable",
        "TetherError",
        "Unauthenticated",
    ),
    "tether.grants": ("Grant", "GrantSpec"),
    "tether.model": ("Agent", "AgentId", "AgentKind", "AgentName", "AgentState", "Email", "Event"),
    "tether.policy.decision": ("AccessRequest", "Decision"),
    "tether.registry": ("AgentSpec", "Registry"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
