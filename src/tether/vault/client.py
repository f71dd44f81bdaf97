"""Tether's calls to OpenBao / HashiCorp Vault, through ``hvac``, failing closed.

Authentication is the configured token, or an AppRole login (``role_id`` / ``secret_id``)
made on first use and again before its token's lease runs out or when the vault refuses
it. Every hvac or ``requests`` error becomes a :class:`VaultUnavailable` (HTTP 503) whose
message names the vault's address and what was asked (a reference, a policy, an
accessor's last characters), never a token or a secret value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import hvac
import hvac.exceptions
import requests

from tether.config import VaultSettings
from tether.errors import StoreUnavailable

__all__ = ["NewToken", "VaultClient", "VaultUnavailable"]

T = TypeVar("T")

_RELOGIN_AT = 0.8  # of an AppRole token's lease: log in again after that much of it


class VaultUnavailable(StoreUnavailable):
    """The vault could not serve a request: unreachable, sealed, refusing Tether's
    credentials, or missing the secret (503 ``temporarily_unavailable``, like the store:
    the vault is where Tether keeps secrets). ``unreachable`` is set when nothing
    answered, so a batch stops trying item after item."""

    def __init__(self, description: str, *, unreachable: bool = False) -> None:
        super().__init__(description)
        self.unreachable = unreachable


class NewToken:
    """A token just created: the secret, its accessor and its lease in seconds."""

    __slots__ = ("accessor", "lease_seconds", "token")

    def __init__(self, token: str, accessor: str, lease_seconds: int) -> None:
        self.token = token
        self.accessor = accessor
        self.lease_seconds = lease_seconds

    def __repr__(self) -> str:
        return f"NewToken(accessor=…{self.accessor[-4:]}, lease_seconds={self.lease_seconds})"


def shown_address(address: str) -> str:
    """``address`` without any user:password part, for messages."""
    parts = urlsplit(address)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class VaultClient:
    """One authenticated hvac client, shared by threads."""

    def __init__(
        self,
        settings: VaultSettings,
        factory: Callable[..., Any] = hvac.Client,
    ) -> None:
        if settings.address is None:
            raise ValueError("no [vault] address configured")
        self._settings = settings
        self._factory = factory
        self.address = shown_address(settings.address)
        self._lock = threading.Lock()
        self._client: Any = None
        self._login_until = 0.0  # monotonic; AppRole only

    # ---- operations ---------------------------------------------------------------------

    def read_secret(self, path: str, what: str) -> tuple[dict[str, Any], int]:
        """The current data of KV v2 secret ``path`` and its version."""

        def call(client: Any) -> Any:
            return client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._settings.kv_mount, raise_on_deleted_version=True
            )

        answer = self._call(what, call)
        try:
            data = answer["data"]["data"]
            version = answer["data"]["metadata"]["version"]
        except (KeyError, TypeError):
            raise self._odd(what) from None
        if not isinstance(data, dict) or not isinstance(version, int):
            raise self._odd(what)
        return data, version

    def write_secret(self, path: str, data: Mapping[str, Any], cas: int, what: str) -> int:
        """Write a new version of ``path`` if its current version is still ``cas``; returns
        the new version."""

        def call(client: Any) -> Any:
            return client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), cas=cas, mount_point=self._settings.kv_mount
            )

        answer = self._call(what, call, details=False)
        try:
            version = answer["data"]["version"]
        except (KeyError, TypeError):
            raise self._odd(what) from None
        if not isinstance(version, int):
            raise self._odd(what)
        return version

    def create_token(
        self, policy: str, ttl_seconds: int, display_name: str, meta: Mapping[str, str], what: str
    ) -> NewToken:
        """An orphan, non-renewable service token with ``policy`` (and ``default``) that
        lives ``ttl_seconds`` at most."""

        def call(client: Any) -> Any:
            return client.auth.token.create_orphan(
                policies=[policy],
                ttl=f"{ttl_seconds}s",
                explicit_max_ttl=f"{ttl_seconds}s",
                renewable=False,
                display_name=display_name,
                meta=dict(meta),
            )

        answer = self._call(what, call)
        try:
            auth = answer["auth"]
            token, accessor, lease = auth["client_token"], auth["accessor"], auth["lease_duration"]
        except (KeyError, TypeError):
            raise self._odd(what) from None
        if not (isinstance(token, str) and isinstance(accessor, str) and isinstance(lease, int)):
            raise self._odd(what)
        return NewToken(token, accessor, lease)

    def revoke_accessor(self, accessor: str, what: str) -> bool:
        """Revoke the token behind ``accessor``; False if the vault knew no such token
        (expired or revoked already)."""
        try:
            answer = self._call(what, lambda c: c.auth.token.revoke_accessor(accessor))
        except VaultUnavailable as exc:
            if "invalid accessor" in exc.description:  # older servers: no such token
                return False
            raise
        warnings = answer.get("warnings") if isinstance(answer, dict) else None
        return not any("no token found" in str(w).lower() for w in warnings or ())

    # ---- plumbing -----------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[Any], T], *, details: bool = True) -> T:
        """``call(client)``, logged in; with AppRole, once more after a fresh login if
        the vault refused the token (it may have expired early)."""
        try:
            client = self._authenticated()
            try:
                return call(client)
            except hvac.exceptions.Forbidden:
                if self._settings.role_id is None:
                    raise
                return call(self._authenticated(fresh=True))
        except VaultUnavailable:
            raise
        except Exception as exc:
            raise self._translate(exc, what, details=details) from None

    def _authenticated(self, *, fresh: bool = False) -> Any:
        s = self._settings
        with self._lock:
            if self._client is None:
                self._client = self._factory(
                    url=s.address,
                    token=s.token,
                    namespace=s.namespace,
                    timeout=s.timeout_ms / 1000,
                    verify=s.verify_tls,
                )
            if s.role_id is None:
                return self._client
            if fresh or time.monotonic() >= self._login_until:
                self._login()
            return self._client

    def _login(self) -> None:
        """AppRole login (under the lock); the client keeps the new token."""
        try:
            answer = self._client.auth.approle.login(
                role_id=self._settings.role_id, secret_id=self._settings.secret_id
            )
            lease = int(answer["auth"]["lease_duration"])
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            raise VaultUnavailable(
                f"the vault at {self.address} refused Tether's AppRole login "
                "(check role_id and secret_id)"
            ) from None
        except Exception as exc:
            raise self._translate(exc, "AppRole login", details=False) from None
        # a lease of 0 never expires; otherwise log in again well before it does
        self._login_until = time.monotonic() + lease * _RELOGIN_AT if lease > 0 else float("inf")

    def _translate(self, exc: BaseException, what: str, *, details: bool) -> VaultUnavailable:
        at = f"the vault at {self.address}"
        if isinstance(exc, requests.exceptions.RequestException):
            return VaultUnavailable(f"{at} is unreachable: {type(exc).__name__}", unreachable=True)
        if isinstance(exc, hvac.exceptions.VaultDown):
            return VaultUnavailable(f"{at} is sealed or down", unreachable=True)
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return VaultUnavailable(f"{what}: not found in {at}")
        if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            return VaultUnavailable(
                f"{what}: {at} refused Tether's credentials (permission denied)"
            )
        if isinstance(exc, hvac.exceptions.VaultError):
            # the server's own words help with a 400 ("child policies must be subset of
            # parent"); left out where request data could be echoed (KV writes)
            said = _errors(exc)
            if not details:
                said = (
                    "the secret changed meanwhile (check-and-set)"
                    if "check-and-set" in said
                    else ""
                )
            return VaultUnavailable(
                f"{what}: {at} answered {type(exc).__name__}" + (f": {said}" if said else "")
            )
        return self._odd(what, exc)

    def _odd(self, what: str, exc: BaseException | None = None) -> VaultUnavailable:
        why = f" ({type(exc).__name__})" if exc is not None else ""
        return VaultUnavailable(f"{what}: unexpected answer from the vault at {self.address}{why}")


def _errors(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None)
    if not isinstance(errors, list | tuple):
        return ""
    text = "; ".join(" ".join(str(e).replace("*", " ").split()) for e in errors)
    return text[:200]
