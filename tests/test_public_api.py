"""The public API is pinned, and every public exception derives from TetherError."""

from __future__ import annotations

import inspect

import tether
from tether import errors
from tether.errors import TetherError, error_for_code


def test_all_is_pinned_and_sorted() -> None:
    assert tether.__all__ == sorted(tether.__all__)
    assert tether.__all__ == [
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
    for name in tether.__all__:
        assert getattr(tether, name) is not None


def test_every_public_exception_derives_from_tether_error() -> None:
    public = [getattr(errors, n) for n in errors.__all__]
    classes = [c for c in public if inspect.isclass(c)]
    assert len(classes) >= 9
    for cls in classes:
        assert issubclass(cls, TetherError), cls
        assert 400 <= cls.status_code < 600 and cls.error and cls.exit_code in (1, 2, 3, 4)


def test_wire_codes_map_back_to_the_same_class() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if inspect.isclass(cls) and cls not in (
            errors.OwnerRequired,
            errors.Denied,
            errors.InvalidToken,
            errors.OAuthError,
        ):
            assert error_for_code(cls.error, cls.status_code) is cls
    assert error_for_code("something_new", 418) is errors.InvalidRequest
    assert error_for_code("something_new", 502) is TetherError
