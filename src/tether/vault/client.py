"""Tether's calls to OpenBao / HashiCorp Vault, through ``hvac``, failing closed.

Authentication is the configured token, or an AppRole login (``role_id`` / ``secret_id``)
made on first use and again before its token's lease runs out or when the vault refuses
it. Every hvac or ``requests`` error becomes a :class:`VaultUnavailable` (HTTP 503) whose
message names the vault's address, what was asked (a reference, a policy, an accessor's
last characters) and the HTTP status or error class, never a token, a secret value or
the vault's own error text (which may echo request data; it is only read to tell a
check-and-set conflict or an unknown accessor apart). Every answer is checked by type
before it is used: a lease or a version is an integer and never a boolean, a policy
list is a list of strings, the data of a secret a mapping of names; anything else is an
"unexpected answer", and the operation fails closed.
"""

from __future__ import annotations

import contextlib
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
    """A token just created: the secret, its accessor, its lease in seconds and every
    policy the vault says it carries (its own and its identity's)."""

    __slots__ = ("accessor", "lease_seconds", "policies", "token")

    def __init__(
        self, token: str, accessor: str, lease_seconds: int, policies: tuple[str, ...] = ()
    ) -> None:
        self.token = token
        self.accessor = accessor
        self.lease_seconds = lease_seconds
        self.policies = policies

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
        data = _field(answer, "data", "data")
        version = _field(answer, "data", "metadata", "version")
        if not (isinstance(data, dict) and all(isinstance(k, str) for k in data)):
            raise self._odd(what)
        return data, self._count(version, what)

    def write_secret(self, path: str, data: Mapping[str, Any], cas: int, what: str) -> int:
        """Write a new version of ``path`` if its current version is still ``cas``; returns
        the new version."""

        def call(client: Any) -> Any:
            return client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), cas=cas, mount_point=self._settings.kv_mount
            )

        return self._count(_field(self._call(what, call), "data", "version"), what)

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
        token = _field(answer, "auth", "client_token")
        accessor = _field(answer, "auth", "accessor")
        try:
            if not (_text(token) and _text(accessor)):
                raise self._odd(what)
            lease = self._count(_field(answer, "auth", "lease_duration"), what, least=0)
            return NewToken(token, accessor, lease, self._policies(answer["auth"], what))
        except VaultUnavailable:
            if _text(accessor):  # a token was made, but its answer is unusable: revoke it
                with contextlib.suppress(VaultUnavailable):
                    self.revoke_accessor(accessor, what)
            raise

    def own_policies(self) -> tuple[str, ...]:
        """The policies of Tether's own token (``auth/token/lookup-self``)."""
        what = "the broker's own token"
        answer = self._call(what, lambda c: c.auth.token.lookup_self())
        data = _field(answer, "data")
        if not isinstance(data, dict):
            raise self._odd(what)
        return self._policies(data, what)

    def revoke_accessor(self, accessor: str, what: str) -> bool:
        """Revoke the token behind ``accessor``; False if the vault knew no such token
        (expired or revoked already)."""

        def call(client: Any) -> Any:
            try:
                return client.auth.token.revoke_accessor(accessor)
            except hvac.exceptions.InvalidRequest as exc:
                if "invalid accessor" in _errors(exc):  # older servers: no such token
                    return _GONE
                raise

        answer = self._call(what, call)
        if answer is _GONE:
            return False
        warnings = answer.get("warnings") if isinstance(answer, dict) else None
        if warnings is not None and not (
            isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
        ):
            raise self._odd(what)
        return not any("no token found" in w.lower() for w in warnings or ())

    # ---- checking answers ---------------------------------------------------------------

    def _count(self, value: Any, what: str, *, least: int = 1) -> int:
        """``value`` if it is an integer (never a boolean) of at least ``least``."""
        if type(value) is not int or value < least:
            raise self._odd(what)
        return value

    def _policies(self, auth: Mapping[str, Any], what: str) -> tuple[str, ...]:
        """Every policy named in ``policies``, ``token_policies`` and ``identity_policies``
        (each a list of strings or absent; ``policies`` must be there)."""
        found: set[str] = set()
        for key in ("policies", "token_policies", "identity_policies"):
            names = auth.get(key)
            if names is None and key != "policies":
                continue
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise self._odd(what)
            found.update(names)
        return tuple(sorted(found))

    # ---- plumbing -----------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[Any], T]) -> T:
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
            raise self._translate(exc, what) from None

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
            token = _field(answer, "auth", "client_token")
            lease = _field(answer, "auth", "lease_duration")
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            raise VaultUnavailable(
                f"the vault at {self.address} refused Tether's AppRole login "
                "(check role_id and secret_id)"
            ) from None
        except Exception as exc:
            raise self._translate(exc, "AppRole login") from None
        if not _text(token):
            raise self._odd("AppRole login")
        lease = self._count(lease, "AppRole login", least=0)
        # a lease of 0 never expires; otherwise log in again well before it does
        self._login_until = time.monotonic() + lease * _RELOGIN_AT if lease > 0 else float("inf")

    def _translate(self, exc: BaseException, what: str) -> VaultUnavailable:
        """Our own words for ``exc``: the status or error class, never the vault's text."""
        at = f"the vault at {self.address}"
        if isinstance(exc, requests.exceptions.JSONDecodeError):
            return self._odd(what, exc)
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
        said = _errors(exc) if isinstance(exc, hvac.exceptions.InvalidRequest) else ""
        if "check-and-set" in said:
            return VaultUnavailable(f"{what}: the secret changed meanwhile (check-and-set)")
        if "child policies must be subset" in said:
            return VaultUnavailable(
                f"{what}: {at} refused: Tether's token does not hold that policy (a token "
                "hands out only policies it holds)"
            )
        if isinstance(exc, hvac.exceptions.VaultError):
            status = _STATUS.get(type(exc))
            shown = f"HTTP {status}" if status else "an unexpected HTTP status"
            return VaultUnavailable(
                f"{what}: {at} answered {shown} ({type(exc).__name__}); "
                "its own message is not shown"
            )
        return self._odd(what, exc)

    def _odd(self, what: str, exc: BaseException | None = None) -> VaultUnavailable:
        why = f" ({type(exc).__name__})" if exc is not None else ""
        return VaultUnavailable(f"{what}: unexpected answer from the vault at {self.address}{why}")


_GONE = object()  # revoke_accessor: the vault knew no such accessor

_STATUS: dict[type[hvac.exceptions.VaultError], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}


def _field(answer: Any, *keys: str) -> Any:
    """``answer[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(answer, dict):
            return None
        answer = answer.get(key)
    return answer


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _errors(exc: hvac.exceptions.VaultError) -> str:
    """The vault's error text, lowercased, for telling cases apart: never shown."""
    errors = getattr(exc, "errors", None)
    if not isinstance(errors, list | tuple):
        return ""
    return " ".join(str(e) for e in errors).lower()
