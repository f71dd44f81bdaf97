"""Credentials injected on the way out and taken out of the answers
(tether.egress.inject), against the API stand-in (tests/helpers/api_standin.py), env:
references and a real OpenBao (tests/helpers/openbao.py) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import hvac
import pytest
from conftest import Clock
from helpers.api_standin import StandIn, standin
from helpers.openbao import OpenBao, openbao
from helpers.vault_broker import broker_for

from tether.callers import Caller
from tether.config import EgressSettings, VaultSettings
from tether.core import Tether
from tether.discover.interface import fingerprint
from tether.egress.headers import outbound
from tether.egress.inject import (
    FRESH,
    CredentialUnavailable,
    Injected,
    Injector,
    redact,
    with_parameter,
)
from tether.egress.upstream import Response, Upstream
from tether.redact import SECRETS
from tether.upstreams.destinations import (
    Destination,
    DestinationSpec,
    OAuthClient,
    parse_base,
    parse_injection,
)
from tether.vault import Broker

# printable ASCII with what JSON, URLs and base64 each encode differently
SECRET = 's3cr3t/+="v a l\\u&e"?'
API_KEY = "key-0123456789abcdef"
TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJib3QifQ.agents-own-token-signature"
ENV = {"GH_TOKEN": SECRET, "API_KEY": API_KEY, "CLIENT_SECRET": "client-secret-value-42"}


def destination(
    base: str,
    *credentials: str,
    internal: bool = True,
    oauth: OAuthClient | None = None,
    name: str = "api",
) -> Destination:
    normal, scheme, host, port, path = parse_base(base)
    injections = tuple(parse_injection(c) for c in credentials)
    return Destination(name, normal, scheme, host, port, path, injections, oauth, internal=internal)


@pytest.fixture
def api() -> Iterator[StandIn]:
    with standin() as server:
        yield server


@contextmanager
def injector(
    environ: Mapping[str, str] = ENV,
    vault: Broker | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[tuple[Injector, Upstream]]:
    upstream = Upstream(EgressSettings())
    made = Injector(vault, upstream, environ=environ, **({"clock": clock} if clock else {}))
    try:
        yield made, upstream
    finally:
        made.close()


def through(
    dest: Destination,
    target: str,
    headers: tuple[tuple[str, str], ...] = (),
    **kw: Any,
) -> tuple[Injected, Response]:
    """The agent's request injected and sent; what came back, unredacted."""
    with injector(**kw) as (inject, upstream):

        async def main() -> tuple[Injected, Response]:
            try:
                done = await inject.inject(dest, target, outbound(headers, TOKEN))
                answer = await upstream.send(dest, "GET", done.target, done.headers, b"")
                return done, answer
            finally:
                await upstream.aclose()

        return anyio.run(main)


# ---- each kind reaches the destination exactly ------------------------------------------


def test_a_header_template_reaches_the_destination_replacing_the_agents_own(
    api: StandIn,
) -> None:
    dest = destination(api.url, "Authorization=Bearer {env:GH_TOKEN}", "X-Api-Key=env:API_KEY")
    agent = (("Authorization", f"Bearer {TOKEN}"), ("x-api-key", "the-agents-guess"))
    through(dest, "/v1/x", agent)
    got = api.last()
    assert got.header("authorization") == f"Bearer {SECRET}"
    assert [v for k, v in got.headers if k.lower() == "x-api-key"] == [API_KEY]
    assert all(TOKEN not in v for _, v in got.headers)


def test_a_query_credential_replaces_every_spelling_the_agent_sent(api: StandIn) -> None:
    dest = destination(api.url, "query:api_key=env:API_KEY")
    through(dest, "/v1/search?q=a%20b&api_key=evil&api%5Fkey=evil2&x=1;api_key=evil3&z=2")
    got = api.last()
    assert got.query == [("q", "a b"), ("z", "2"), ("api_key", API_KEY)]
    assert got.raw_target.startswith("/v1/search?q=a%20b&z=2&api_key=")  # kept byte for byte


def test_a_query_secret_is_percent_encoded() -> None:
    assert with_parameter("/p", "k", SECRET) == f"/p?k={quote(SECRET, safe='')}"
    assert with_parameter("/p?", "k", "v") == "/p?k=v"
    assert with_parameter("/p?a=1&k=2&&b", "k", "v") == "/p?a=1&b&k=v"


def test_basic_auth_reaches_the_destination(api: StandIn) -> None:
    through(destination(api.url, "basic:deploy=env:API_KEY"), "/x")
    expected = base64.b64encode(f"deploy:{API_KEY}".encode()).decode()
    assert api.last().header("authorization") == f"Basic {expected}"


# ---- redaction ------------------------------------------------------------------------


def test_an_echoed_credential_comes_back_redacted(api: StandIn) -> None:
    dest = destination(api.url, "X-Token=env:GH_TOKEN", "basic:u=env:API_KEY")
    done, answer = through(dest, "/echo-headers")
    assert json.loads(answer.body)["x-token"] == SECRET  # the stand-in did echo it
    _headers, body, found = redact(answer.headers, answer.body, done.secrets)
    text = body.decode()
    assert SECRET not in text and json.dumps(SECRET)[1:-1] not in text
    assert API_KEY not in text
    assert f"[redacted:injected-credential:{fingerprint(SECRET)}]" in text
    assert found == {"X-Token=env:GH_TOKEN": 1, "basic:u=env:API_KEY": 1}
    assert json.loads(body)["authorization"].startswith("Basic [redacted:injected-credential:")


@pytest.mark.parametrize(
    "form",
    [
        lambda s: s,
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps({"k": s}),
        lambda s: quote(s, safe=""),
        quote_plus,
        lambda s: base64.b64encode(s.encode()).decode(),
        lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
        lambda s: base64.b64encode(f"user:{s}".encode()).decode(),
        repr,
        lambda s: json.dumps(json.dumps(s)),
    ],
)
def test_every_representation_of_a_secret_is_redacted(form: Callable[[str], str]) -> None:
    shown = form(SECRET)
    body = f"before {shown} after".encode()
    headers, cleaned, found = redact(
        [("x-echo", shown), ("content-type", "text/plain")], body, [("X=env:GH_TOKEN", SECRET)]
    )
    assert found == {"X=env:GH_TOKEN": 2}
    assert shown not in cleaned.decode() and shown not in dict(headers)["x-echo"]
    assert f"[redacted:injected-credential:{fingerprint(SECRET)}]".encode() in cleaned
    assert cleaned.startswith(b"before ") and cleaned.endswith(b" after")
    assert dict(headers)["content-type"] == "text/plain"


def test_redaction_leaves_binary_bodies_byte_for_byte() -> None:
    body = bytes(range(256)) + API_KEY.encode() + bytes(range(255, -1, -1))
    _, cleaned, found = redact([], body, [("k", API_KEY)])
    assert found == {"k": 1}
    mark = f"[redacted:injected-credential:{fingerprint(API_KEY)}]".encode()
    assert cleaned == bytes(range(256)) + mark + bytes(range(255, -1, -1))
    assert redact([], bytes(range(256)), [("k", API_KEY)]) == ((), bytes(range(256)), {})


def test_injected_values_are_in_the_process_redactor_while_the_injector_lives(
    api: StandIn,
) -> None:
    unique = f"unique-{secrets.token_hex(8)}"
    with injector({"ONE": unique}) as (inject, upstream):
        anyio.run(inject.inject, destination(api.url, "X-K=env:ONE"), "/", [])
        assert SECRETS.redact(f"log line {unique}") == "log line [redacted]"
        anyio.run(upstream.aclose)
    assert unique in SECRETS.redact(f"log line {unique}")
    assert unique not in repr(Injected("/", (("x-k", unique),), (("X-K", unique),)))


# ---- failures name the reference, never the value ---------------------------------------


def test_an_unset_variable_fails_closed_naming_the_reference(api: StandIn) -> None:
    dest = destination(api.url, "Authorization=env:NOT_SET")
    with pytest.raises(CredentialUnavailable) as caught:
        through(dest, "/x")
    assert (caught.value.status, caught.value.error) == (502, "credential_unavailable")
    assert "env:NOT_SET" in caught.value.description and "api" in caught.value.description
    assert api.received == []


def test_a_value_that_is_not_a_header_value_is_refused_without_showing_it(api: StandIn) -> None:
    dest = destination(api.url, "X-K=env:BAD")
    with pytest.raises(CredentialUnavailable) as caught:
        through(dest, "/x", environ={"BAD": "line-one-secret\r\nx-injected: 1"})
    assert "env:BAD" in caught.value.description
    assert "line-one-secret" not in caught.value.description
    assert api.received == []


def test_a_vault_reference_without_a_vault_fails_closed(api: StandIn) -> None:
    with pytest.raises(CredentialUnavailable, match="vault:gh#token"):
        through(destination(api.url, "X-K=vault:gh#token"), "/x")
    assert api.received == []


# ---- OAuth client credentials -----------------------------------------------------------


def oauth_destination(api: StandIn, *, internal: bool = True, scope: str = "") -> Destination:
    client = OAuthClient(f"{api.url}/oauth/token", "client", "env:CLIENT_SECRET", scope)
    return destination(api.url, oauth=client, internal=internal)


def test_an_oauth_token_is_fetched_once_cached_refreshed_and_invalidated(
    api: StandIn,
) -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    dest = oauth_destination(api, scope="repo read")

    async def main(inject: Injector, upstream: Upstream) -> list[str]:
        seen = []
        for step in ("first", "cached", "expired", "too fresh", "invalidated"):
            if step == "expired":
                clock.advance(seconds=3600 - 59)  # within the margin before expires_in
            if step == "too fresh":  # just fetched: a 401 is not this token's fault
                assert not inject.invalidate(dest)
            if step == "invalidated":
                clock.advance(seconds=FRESH)
                assert inject.invalidate(dest)
            done = await inject.inject(dest, "/x", [])
            seen.append(dict(done.headers)["authorization"])
        await upstream.aclose()
        return seen

    with injector(clock=clock) as (inject, upstream):
        seen = anyio.run(main, inject, upstream)
    assert seen == ["Bearer at-1", "Bearer at-1", "Bearer at-2", "Bearer at-2", "Bearer at-3"]
    assert api.tokens_issued == 3
    asked = api.received[0]
    assert (asked.method, asked.path) == ("POST", "/oauth/token")
    client = base64.b64encode(b"client:client-secret-value-42").decode()
    assert asked.header("authorization") == f"Basic {client}"
    assert asked.header("content-type") == "application/x-www-form-urlencoded"
    assert (
        dict(asked.query) == {} and asked.body == b"grant_type=client_credentials&scope=repo+read"
    )


def test_the_oauth_token_reaches_the_api_and_is_redacted_when_echoed(api: StandIn) -> None:
    done, answer = through(oauth_destination(api), "/echo-headers")
    assert api.last().header("authorization") == "Bearer at-1"
    _, body, found = redact(answer.headers, answer.body, done.secrets)
    assert b"at-1" not in body
    assert found == {"oauth access token of api": 1}


def test_a_token_endpoint_inside_the_network_is_refused_for_a_public_destination(
    api: StandIn,
) -> None:
    with pytest.raises(CredentialUnavailable) as caught:
        through(oauth_destination(api, internal=False), "/x")
    assert "token endpoint" in caught.value.description
    assert "loopback" in caught.value.description
    assert api.received == []


class TokenEndpoint:
    """A token endpoint that answers ``status`` and ``body`` (raw), for bad answers."""

    def __init__(self, status: int, body: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        answer = (status, body)
        self.asked = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.asked += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(answer[0])
                self.send_header("content-length", str(len(answer[1])))
                self.end_headers()
                self.wfile.write(answer[1])

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (401, b'{"error": "invalid_client", "echo": "client-secret-value-42"}', "answered 401"),
        (200, b"<html>client-secret-value-42</html>", "not JSON"),
        (200, b'["client-secret-value-42"]', "not an object"),
        (200, b'{"token_type": "Bearer"}', "no usable access_token"),
        (200, b'{"access_token": "a\\r\\nb"}', "not header-safe"),
        (200, b'{"access_token": "t", "token_type": "mac"}', "other than Bearer"),
        (200, b'{"access_token": "t", "expires_in": -5}', "expires_in"),
        (200, b'{"access_token": "t", "expires_in": true}', "expires_in"),
        (200, b'{"access_token": "' + b"t" * 70_000 + b'"}', "larger than"),
    ],
)
def test_a_bad_token_answer_fails_closed_without_quoting_it(
    status: int, body: bytes, says: str
) -> None:
    endpoint = TokenEndpoint(status, body)
    endpoint.thread.start()
    try:
        client = OAuthClient(endpoint.url, "client", "env:CLIENT_SECRET")
        dest = destination("https://api.corp.example", oauth=client)
        with injector() as (inject, upstream):
            with pytest.raises(CredentialUnavailable) as caught:
                anyio.run(inject.inject, dest, "/x", [])
            anyio.run(upstream.aclose)
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
    assert caught.value.status == 502
    assert says in caught.value.description
    assert "client-secret-value-42" not in caught.value.description


# ---- vault references against a real OpenBao ---------------------------------------------


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    with openbao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


def put(bao: OpenBao, path: str, **data: str) -> None:
    root = hvac.Client(url=bao.address, token=bao.root_token, timeout=5)
    root.secrets.kv.v2.create_or_update_secret(path, secret=data, mount_point="secret")


@pytest.mark.slow
def test_a_vault_reference_is_injected_and_redacted(
    bao: OpenBao, tether: Tether, api: StandIn
) -> None:
    path = f"egress/t{secrets.token_hex(4)}"
    value = f"ghp_{secrets.token_hex(16)}"
    put(bao, path, token=value)
    broker = broker_for(tether, VaultSettings(address=bao.address, token=bao.root_token))
    dest = destination(api.url, f"Authorization=Bearer {{vault:{path}#token}}")
    done, answer = through(dest, "/echo-headers", vault=broker)
    assert api.last().header("authorization") == f"Bearer {value}"
    _, body, found = redact(answer.headers, answer.body, done.secrets)
    assert value not in body.decode()
    assert found == {f"Authorization=Bearer {{vault:{path}#token}}": 1}


@pytest.mark.slow
def test_a_missing_vault_field_or_a_vault_that_is_down_fails_closed(
    bao: OpenBao, tether: Tether, api: StandIn
) -> None:
    path = f"egress/t{secrets.token_hex(4)}"
    put(bao, path, other="x-value-not-this-one")
    broker = broker_for(tether, VaultSettings(address=bao.address, token=bao.root_token))
    with pytest.raises(CredentialUnavailable) as caught:
        through(destination(api.url, f"X-K=vault:{path}#token"), "/x", vault=broker)
    assert f"vault:{path}#token" in caught.value.description
    assert "x-value-not-this-one" not in caught.value.description
    down = broker_for(
        tether, VaultSettings(address="http://127.0.0.1:9", token="t", timeout_ms=500)
    )
    with pytest.raises(CredentialUnavailable, match=f"vault:{path}#token"):
        through(destination(api.url, f"X-K=vault:{path}#token"), "/x", vault=down)
    assert api.received == []


def test_a_destination_from_the_store_injects_the_same(tether: Tether, api: StandIn) -> None:
    """Through ``tether egress add``'s service: what the store gives back is injected."""
    spec = DestinationSpec(
        "gh", api.url, credentials=["Authorization=Bearer {env:GH_TOKEN}"], internal=True
    )
    tether.destinations.add(Caller.admin(), spec)
    through(tether.destinations.get("gh"), "/repos")
    assert api.last().header("authorization") == f"Bearer {SECRET}"


def test_a_short_lived_token_is_fetched_again_after_half_its_life(api: StandIn) -> None:
    endpoint = TokenEndpoint(200, b'{"access_token": "short-lived", "expires_in": 10}')
    endpoint.thread.start()
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    client = OAuthClient(endpoint.url, "client", "env:CLIENT_SECRET")
    dest = destination(api.url, oauth=client)
    try:
        with injector(clock=clock) as (inject, upstream):

            async def main() -> list[int]:
                asked = []
                for step in (0, 4, 1):  # cached until 5 s (10 s less half of it)
                    clock.advance(seconds=step)
                    await inject.inject(dest, "/x", [])
                    asked.append(endpoint.asked)
                await upstream.aclose()
                return asked

            assert anyio.run(main) == [1, 1, 2]
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
