"""The egress proxy's own failures on the way out, each with its wire form.

    EgressFailure (TetherError)      502 upstream_unreachable
    +-- UpstreamUnreachable          502 upstream_unreachable    no address, no connection
    +-- AddressRefused               502 address_refused         the SSRF rules
    +-- TlsFailed                    502 tls_failed              certificate or handshake
    +-- ResponseTooLarge             502 response_too_large      [egress] max_response_bytes
    +-- BadAnswer                    502 bad_upstream_answer     not HTTP/1.1, or compressed
    +-- CredentialUnavailable        502 credential_unavailable  a secret, an OAuth token
    +-- UpstreamTimeout              504 upstream_timeout        connect_timeout / timeout
    +-- RequestTooLarge              413 request_too_large       [egress] max_request_bytes

A description names the destination and what failed, never a secret: it is written so,
and passed through the process's redactor (:data:`tether.redact.SECRETS`) as well. The
engine answers the agent with :func:`tether.egress.exchange.refusal` of ``status_code``,
``error`` and ``description``.
"""

from __future__ import annotations

from typing import ClassVar

from tether.errors import TetherError
from tether.redact import SECRETS

__all__ = [
    "AddressRefused",
    "BadAnswer",
    "CredentialUnavailable",
    "EgressFailure",
    "RequestTooLarge",
    "ResponseTooLarge",
    "TlsFailed",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]


class EgressFailure(TetherError):
    """The destination could not be asked or did not answer usably (502; 504 for a
    timeout). ``status_code`` and ``error`` say which (see the subclasses); the
    description names the destination, never a secret."""

    status_code: ClassVar[int] = 502
    error: ClassVar[str] = "upstream_unreachable"

    def __init__(self, description: str) -> None:
        super().__init__(SECRETS.redact(description))

    @property
    def status(self) -> int:
        return self.status_code


class UpstreamUnreachable(EgressFailure):
    """The host did not resolve, or no connection could be made or kept."""


class AddressRefused(EgressFailure):
    """The host resolves to an address the destination may not reach (SSRF rules)."""

    error = "address_refused"


class TlsFailed(EgressFailure):
    """The TLS handshake failed: a certificate not trusted, or not for the host."""

    error = "tls_failed"


class ResponseTooLarge(EgressFailure):
    """The answer's body is larger than ``[egress] max_response_bytes``."""

    error = "response_too_large"


class BadAnswer(EgressFailure):
    """The answer is not usable HTTP/1.1, or it is compressed."""

    error = "bad_upstream_answer"


class UpstreamTimeout(EgressFailure):
    """The destination did not connect or answer in time."""

    status_code = 504
    error = "upstream_timeout"


class RequestTooLarge(EgressFailure):
    """The request body is larger than ``[egress] max_request_bytes``."""

    status_code = 413
    error = "request_too_large"


class CredentialUnavailable(EgressFailure):
    """A destination's credential could not be fetched or used (502)."""

    error = "credential_unavailable"
