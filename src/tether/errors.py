"""Tether's one exception tree.

Every error Tether raises on purpose derives from :class:`TetherError` and knows its wire
form: the HTTP status, the OAuth / JSON ``error`` code and the CLI exit code.

    TetherError                      500 server_error            exit 1
    +-- InvalidRequest               400 invalid_request         exit 2
    |   +-- OwnerRequired            400 invalid_request         exit 2
    +-- Unauthenticated              401 invalid_token           exit 1
    |   +-- InvalidToken             401 invalid_token           exit 4  (verification failed)
    |   +-- InvalidClient            401 invalid_client          exit 3
    +-- Forbidden                    403 access_denied           exit 3
    |   +-- Denied                   403 access_denied           exit 3  (a decision)
    +-- NotFound                     404 not_found               exit 1
    +-- Conflict                     409 conflict                exit 1
    +-- IllegalTransition            409 invalid_state           exit 3
    +-- StoreUnavailable             503 temporarily_unavailable exit 1
    +-- VerificationFailed           400 verification_failed     exit 4  (a proof, the log)
    +-- OAuthError                   400 (RFC 6749 5.2 codes)    exit 3
        +-- InvalidGrant             400 invalid_grant
        +-- InvalidScope             400 invalid_scope
        +-- InvalidTarget            400 invalid_target          (RFC 8707)
        +-- UnauthorizedClient       400 unauthorized_client
        +-- UnsupportedGrantType     400 unsupported_grant_type  exit 2

Exit codes follow DESIGN §4: 0 success, 1 error, 2 usage (bad input), 3 denied or refused,
4 verification failed.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "Denied",
    "Forbidden",
    "IllegalTransition",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "NotFound",
    "OAuthError",
    "OwnerRequired",
    "StoreUnavailable",
    "TetherError",
    "Unauthenticated",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UpstreamUnavailable",
    "VerificationFailed",
    "error_for_code",
]


class TetherError(Exception):
    """The base of every error Tether raises on purpose."""

    status_code: ClassVar[int] = 500
    error: ClassVar[str] = "server_error"
    exit_code: ClassVar[int] = 1

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def to_dict(self) -> dict[str, str]:
        """The JSON error body: ``{"error": ..., "error_description": ...}``."""
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(TetherError):
    """The input is malformed or breaks a rule (a bad name, duration, email ...)."""

    status_code = 400
    error = "invalid_request"
    exit_code = 2


class OwnerRequired(InvalidRequest):
    """An agent must have an accountable human owner."""


class Unauthenticated(TetherError):
    """No credentials, or credentials that do not verify."""

    status_code = 401
    error = "invalid_token"


class InvalidToken(Unauthenticated):
    """A token that does not verify: bad signature, wrong audience, expired, revoked ..."""

    exit_code = 4


class InvalidClient(Unauthenticated):
    """Client authentication failed (RFC 6749 section 5.2)."""

    error = "invalid_client"
    exit_code = 3


class Forbidden(TetherError):
    """The caller is known but may not do this."""

    status_code = 403
    error = "access_denied"
    exit_code = 3


class Denied(Forbidden):
    """The decision point denied a request; ``reasons`` say which identity or policy."""

    def __init__(self, description: str, reasons: tuple[str, ...] = (), detail: Any = None) -> None:
        super().__init__(description)
        self.reasons = reasons
        self.detail = detail


class NotFound(TetherError):
    """No such object, or one the caller may not know exists."""

    status_code = 404
    error = "not_found"


class Conflict(TetherError):
    """The object already exists (names are never reused)."""

    status_code = 409
    error = "conflict"


class IllegalTransition(TetherError):
    """A lifecycle change the agent's current state does not allow."""

    status_code = 409
    error = "invalid_state"
    exit_code = 3


class StoreUnavailable(TetherError):
    """The store could not be reached or failed mid-operation."""

    status_code = 503
    error = "temporarily_unavailable"


class UpstreamUnavailable(TetherError):
    """An upstream MCP server could not be started or reached (it is retried with backoff)."""

    status_code = 502
    error = "upstream_unavailable"


class VerificationFailed(TetherError):
    """A proof or a log that does not verify (an inclusion or consistency proof, a
    checkpoint, a changed or missing audit event)."""

    status_code = 400
    error = "verification_failed"
    exit_code = 4


class OAuthError(TetherError):
    """An error of the token endpoint, in RFC 6749 section 5.2 form."""

    status_code = 400
    error = "invalid_request"
    exit_code = 3


class InvalidGrant(OAuthError):
    """The grant (a subject token, an assertion) is invalid, expired or revoked."""

    error = "invalid_grant"


class InvalidScope(OAuthError):
    """The requested scope is beyond what the client (or the chain) may have."""

    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """The requested resource or audience is not acceptable (RFC 8707)."""

    error = "invalid_target"


class UnauthorizedClient(OAuthError):
    """This client may not use this grant type (not active, unowned ...)."""

    error = "unauthorized_client"

    def __init__(self, description: str, client_id: str | None = None) -> None:
        super().__init__(description)
        self.client_id = client_id  # the authenticated agent that was refused, if known


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported."""

    error = "unsupported_grant_type"
    exit_code = 2


_BY_CODE: dict[str, type[TetherError]] = {
    cls.error: cls
    for cls in (
        TetherError,
        InvalidRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        IllegalTransition,
        StoreUnavailable,
        UpstreamUnavailable,
        InvalidClient,
        InvalidGrant,
        InvalidScope,
        InvalidTarget,
        UnauthorizedClient,
        UnsupportedGrantType,
        VerificationFailed,
    )
}


def error_for_code(code: str, status: int) -> type[TetherError]:
    """The error class for a wire ``error`` code (used by the HTTP client)."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls
    if status == 401:
        return Unauthenticated
    if status == 403:
        return Forbidden
    if status == 404:
        return NotFound
    if 400 <= status < 500:
        return InvalidRequest
    return TetherError
