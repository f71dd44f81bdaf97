"""A destination's credentials, put into each request on the way out and taken out of
each answer on the way back.

:meth:`Injector.inject` fetches the secrets a destination's injections name
(:func:`tether.upstreams.credentials.resolve`: ``env:VAR`` from Tether's environment,
``vault:<path>#<field>`` through the vault broker, off the event loop) and sets them:

- a header injection sets its header to its template with the secret in place of ``{}``
  (``Authorization: Bearer {}``), replacing any header of that name the agent sent;
- a query injection sets its parameter: every parameter of that name the agent sent is
  removed (its name compared percent-decoded, ``;``-separated pieces included), and
  ``NAME=<secret, percent-encoded>`` appended; the agent's other parameters are kept byte
  for byte (what was decided is what is sent);
- a basic injection sets ``Authorization: Basic base64(USER:secret)``;
- an OAuth client (RFC 6749 §4.4) sets ``Authorization: Bearer <access token>``. The
  token is fetched from the token URL with ``grant_type=client_credentials`` (and the
  scope), the client authenticated with HTTP basic (§2.3.1: id and secret
  form-urlencoded first), through :class:`~tether.egress.upstream.Upstream` under the
  destination's SSRF rules (its ``internal`` flag), the answer capped at 64 KiB; and kept
  per destination until ``expires_in`` (one hour when absent) less a margin, or until
  :meth:`Injector.invalidate` (the engine calls it on a 401, then retries once).

Fail closed: a secret that cannot be fetched, a value that may not be sent, a token
endpoint that fails or answers badly: :class:`CredentialUnavailable` (502), naming the
destination and the reference, never a value. Every value fetched is added to the
process's redactor (:data:`tether.redact.SECRETS`) for as long as the injector lives,
so no log line carries it.

:func:`redact` takes every representation of the injected values (:mod:`tether.redact`:
raw, base64, URL-encoded, JSON- and ``repr``-escaped...) out of an answer's headers and
body, replaced by ``[redacted:injected-credential:<fingerprint>]`` as the gateway does
(:mod:`tether.gateway.scrub`), and says how many of each it took out.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlencode

import anyio

from tether.core import utcnow
from tether.discover.interface import fingerprint as process_fingerprint
from tether.egress.failures import CredentialUnavailable
from tether.egress.upstream import Origin, Upstream
from tether.errors import TetherError
from tether.gateway.scrub import INJECTED, mark
from tether.redact import SECRETS, Redactor, is_field_value
from tether.upstreams.credentials import Credential, resolve
from tether.upstreams.destinations import Destination, OAuthClient
from tether.vault import Broker

__all__ = ["CredentialUnavailable", "Injected", "Injector", "redact", "with_parameter"]

TOKEN_ANSWER_MAX = 65_536  # bytes of a token endpoint's answer
_DEFAULT_LIFETIME = 3600  # seconds, when the token endpoint gives no expires_in
_MARGIN = 60  # seconds before expiry a token is fetched again (at most half its life)
FRESH = 30  # seconds: a token this young is not dropped on a 401 (Injector.invalidate)
_TOKEN_MAX = 8192  # characters of an access token
_HELD_MAX = 4096  # values kept in the process's redactor by one injector


@dataclass(frozen=True, slots=True)
class Injected:
    """A request with its credentials in: ``target`` (query credentials added),
    ``headers`` (header, basic and OAuth credentials set), and ``secrets``, each injected
    value with what it is (an injection's reference, never the value) for :func:`redact`.
    ``secrets`` is never logged or recorded."""

    target: str
    headers: tuple[tuple[str, str], ...]
    secrets: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:  # no value in a traceback's locals or a log line
        return f"Injected(target=<{len(self.target)} chars>, secrets={len(self.secrets)})"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    until: datetime
    fetched: datetime

    def __repr__(self) -> str:
        return f"_Token(until={self.until.isoformat()})"


class Injector:
    """Injects destinations' credentials (see the module doc); one per process."""

    def __init__(
        self,
        vault: Broker | None,
        upstream: Upstream,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._vault = vault
        self._upstream = upstream
        self._environ = environ
        self._clock = clock
        self._tokens: dict[tuple[str, OAuthClient], _Token] = {}
        self._locks: dict[tuple[str, OAuthClient], anyio.Lock] = {}
        self._held: set[str] = set()

    async def inject(
        self, destination: Destination, target: str, headers: Sequence[tuple[str, str]]
    ) -> Injected:
        """``target`` and ``headers`` (the agent's, already cleaned:
        :func:`tether.egress.headers.outbound`) with ``destination``'s credentials set.
        Raises CredentialUnavailable."""
        values = await self._fetch(destination)
        secrets: list[tuple[str, str]] = []
        setting: dict[str, str] = {}
        for injection, value in zip(destination.credentials, values, strict=True):
            what = injection.describe()
            secrets.append((what, value))
            if injection.kind == "query":
                target = with_parameter(target, injection.name, value)
            elif injection.kind == "basic":
                pair = f"{injection.name}:{value}"
                secrets.append((what, pair))
                setting["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            else:
                before, _, after = injection.template.partition("{}")
                setting[injection.name.lower()] = f"{before}{value}{after}"
        if destination.oauth is not None:
            token = await self._token(destination, destination.oauth)
            secrets.append((f"oauth access token of {destination.name}", token))
            setting["authorization"] = f"Bearer {token}"
        for name, value in setting.items():
            if not is_field_value(value):
                raise CredentialUnavailable(
                    f"destination {destination.name}: the header {name} it injects would not "
                    "be a valid HTTP header value (the template and the secret together)"
                )
        kept = [(n.lower(), v) for n, v in headers if n.lower() not in setting]
        self._hold(value for _, value in secrets)
        return Injected(target, (*kept, *setting.items()), tuple(secrets))

    def invalidate(self, destination: Destination) -> bool:
        """Forget ``destination``'s OAuth access token, so the next request fetches one —
        unless it was fetched less than :data:`FRESH` seconds ago (then a 401 is not the
        token's fault, and agents asking for what answers 401 cannot drive the token
        endpoint into rate-limiting everyone). Whether a token was forgotten."""
        now = self._clock()
        stale = [
            key
            for key, token in self._tokens.items()
            if key[0] == destination.name and now - token.fetched >= timedelta(seconds=FRESH)
        ]
        for key in stale:
            del self._tokens[key]
        return bool(stale)

    def close(self) -> None:
        """Take the values this injector held out of the process's redactor."""
        SECRETS.discard(self._held)
        self._held = set()
        self._tokens.clear()

    async def _fetch(self, destination: Destination) -> list[str]:
        if not destination.credentials:
            return []
        if any(i.ref.startswith("vault:") for i in destination.credentials):
            return await anyio.to_thread.run_sync(self._read, destination)
        return self._read(destination)

    def _read(self, destination: Destination) -> list[str]:
        return [self._secret(destination, i.ref, i.describe()) for i in destination.credentials]

    def _secret(self, destination: Destination, ref: str, name: str) -> str:
        """The value at ``ref``, checked as an HTTP field value; else CredentialUnavailable."""
        try:
            return resolve(Credential(name, ref), self._environ, self._vault, transport="http")
        except TetherError as exc:
            said = exc.description if ref in exc.description else f"{ref}: {exc.description}"
            raise CredentialUnavailable(f"destination {destination.name}: {said}") from None
        except Exception as exc:
            raise CredentialUnavailable(
                f"destination {destination.name}: cannot fetch {ref} ({type(exc).__name__})"
            ) from None

    async def _token(self, destination: Destination, oauth: OAuthClient) -> str:
        key = (destination.name, oauth)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:  # one fetch at a time per destination; the others wait for it
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.until:
                return cached.value
            secret = await anyio.to_thread.run_sync(
                self._secret, destination, oauth.client_secret, "oauth client secret"
            )
            self._hold([secret])
            token, lifetime = await self._ask(destination, oauth, secret)
            margin = min(_MARGIN, lifetime // 2)
            now = self._clock()
            self._tokens[key] = _Token(token, now + timedelta(seconds=lifetime - margin), now)
            return token

    async def _ask(
        self, destination: Destination, oauth: OAuthClient, secret: str
    ) -> tuple[str, int]:
        """A new access token and its lifetime in seconds from the token endpoint."""
        where = f"destination {destination.name}: the OAuth token endpoint"
        try:
            origin, target = Origin.from_url(
                oauth.token_url, internal=destination.internal, name=f"{where}"
            )
        except TetherError as exc:
            raise CredentialUnavailable(exc.description) from None
        form = {
            "grant_type": "client_credentials",
            **({"scope": oauth.scope} if oauth.scope else {}),
        }
        client = f"{quote_plus(oauth.client_id)}:{quote_plus(secret)}"
        headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
            ("authorization", "Basic " + base64.b64encode(client.encode()).decode()),
        ]
        body = urlencode(form).encode()
        try:
            answer = await self._upstream.request(
                origin, "POST", target, headers, body, max_bytes=TOKEN_ANSWER_MAX
            )
        except TetherError as exc:  # an EgressFailure, or a token URL that cannot be asked
            raise CredentialUnavailable(exc.description) from None
        if answer.status != 200:
            raise CredentialUnavailable(f"{where} answered {answer.status}, not 200")
        return _token_answer(answer.body, where)

    def _hold(self, values: Any) -> None:
        new = {v for v in values if v not in self._held}
        if new and len(self._held) < _HELD_MAX:
            SECRETS.add(new)
            self._held |= new


def _token_answer(body: bytes, where: str) -> tuple[str, int]:
    """The access token and its lifetime of an RFC 6749 §5.1 answer; else
    CredentialUnavailable (saying what is wrong, never what the answer holds)."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CredentialUnavailable(f"{where} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise CredentialUnavailable(f"{where} answered JSON that is not an object")
    token = answer.get("access_token")
    if not isinstance(token, str) or not token or len(token) > _TOKEN_MAX:
        raise CredentialUnavailable(f"{where} answered no usable access_token")
    if not is_field_value(token) or " " in token:
        raise CredentialUnavailable(f"{where} answered an access_token that is not header-safe")
    kind = answer.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise CredentialUnavailable(f"{where} answered a token_type other than Bearer")
    lifetime = answer.get("expires_in", _DEFAULT_LIFETIME)
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
        raise CredentialUnavailable(f"{where} answered an expires_in that is not a positive number")
    return token, lifetime


def with_parameter(target: str, name: str, value: str) -> str:
    """``target`` with the query parameter ``name`` set to ``value`` alone (see the
    module doc)."""
    path, sep, query = target.partition("?")
    pieces = [
        piece
        for piece in (query.split("&") if sep else [])
        if piece and not any(_name(part) == name for part in piece.split(";"))
    ]
    pieces.append(f"{quote(name, safe='')}={quote(value, safe='')}")
    return f"{path}?{'&'.join(pieces)}"


def _name(part: str) -> str:
    return unquote_plus(part.partition("=")[0])


def redact(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    secrets: Sequence[tuple[str, str]],
    *,
    fingerprint: Callable[[str], str] = process_fingerprint,
) -> tuple[tuple[tuple[str, str], ...], bytes, dict[str, int]]:
    """``headers`` and ``body`` with every representation of each secret replaced by
    ``[redacted:injected-credential:<fingerprint>]``; and, per secret's description, how
    many were replaced (only those found). The longest values go first (a ``USER:secret``
    pair before the secret). The body is read byte for byte (latin-1), so bytes that are
    not text pass unchanged."""
    found: dict[str, int] = {}
    text = body.decode("latin-1")
    out = list(headers)
    for what, value in sorted(secrets, key=lambda s: len(s[1]), reverse=True):
        redactor, replacement = _redactor(value), mark(INJECTED, fingerprint(value))
        count = 0
        for i, (name, header) in enumerate(out):
            cleaned, n = redactor.count(header, replacement)
            if n:
                out[i], count = (name, cleaned), count + n
        text, n = redactor.count(text, replacement)
        if count + n:
            found[what] = found.get(what, 0) + count + n
    return tuple(out), text.encode("latin-1") if found else body, found


@functools.lru_cache(maxsize=256)
def _redactor(value: str) -> Redactor:
    """A redactor of ``value`` (compiled once: it is the costly part)."""
    return Redactor([value])
