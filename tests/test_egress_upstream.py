"""The egress proxy's way out (tether.egress.upstream, .addresses, .headers) against real
servers: the API stand-in (tests/helpers/api_standin.py, plain and TLS with its own CA)
and, for answers no well-behaved server gives (chunked past the cap, compressed,
garbage, hop-by-hop and cookie headers), a raw socket server that sends canned bytes.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.api_standin import StandIn, standin
from hypothesis import given
from hypothesis import strategies as st

from tether.config import EgressSettings
from tether.egress.addresses import address_refusal
from tether.egress.headers import carries, inbound, outbound
from tether.egress.upstream import EgressFailure, Origin, Response, Upstream
from tether.errors import InvalidRequest, TetherError
from tether.upstreams.destinations import Destination, parse_base

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLW9mLXRoZS1hZ2VudHMtdG9rZW4"


def destination(base: str, *, internal: bool = False, name: str = "api") -> Destination:
    normal, scheme, host, port, path = parse_base(base)
    return Destination(name, normal, scheme, host, port, path, internal=internal)


def settings(**overrides: Any) -> EgressSettings:
    return EgressSettings(**overrides)


class Resolver:
    """A resolver that answers ``addresses`` and counts its calls."""

    def __init__(self, *addresses: str, fail: Exception | None = None) -> None:
        self.addresses = list(addresses)
        self.fail = fail
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if self.fail is not None:
            raise self.fail
        return list(self.addresses)


def send(
    dest: Destination,
    target: str = "/",
    *,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    upstream: Callable[[], Upstream] | None = None,
    times: int = 1,
) -> list[Response]:
    """``times`` requests through one Upstream (closed after)."""

    async def main() -> list[Response]:
        up = upstream() if upstream else Upstream(settings())
        try:
            return [await up.send(dest, method, target, headers, body) for _ in range(times)]
        finally:
            await up.aclose()

    return anyio.run(main)


def failure(call: Callable[[], object]) -> EgressFailure:
    with pytest.raises(EgressFailure) as caught:
        call()
    assert isinstance(caught.value, TetherError)
    return caught.value


@pytest.fixture
def api() -> Iterator[StandIn]:
    with standin() as server:
        yield server


# ---- reaching a destination --------------------------------------------------------------


def test_an_internal_destination_is_reached_with_tethers_framing(api: StandIn) -> None:
    dest = destination(api.url, internal=True)
    (answer,) = send(dest, "/v1/things?a=1&b=%2F", method="POST", body=b'{"x": 1}')
    assert answer.status == 200
    assert answer.address == "127.0.0.1"
    assert all(name == name.lower() for name, _ in answer.headers)
    assert "content-length" not in dict(answer.headers)
    got = api.last()
    assert (got.method, got.raw_target, got.body) == ("POST", "/v1/things?a=1&b=%2F", b'{"x": 1}')
    assert got.header("host") == f"127.0.0.1:{api.port}"
    assert got.header("accept-encoding") == "identity"
    assert got.header("content-length") == "8"


def test_a_named_internal_destination_connects_to_the_checked_address(api: StandIn) -> None:
    resolver = Resolver("127.0.0.1")
    dest = destination(f"http://billing.corp.example:{api.port}", internal=True)
    answers = send(dest, "/x", upstream=lambda: Upstream(settings(), resolve=resolver), times=3)
    assert [a.address for a in answers] == ["127.0.0.1"] * 3
    assert api.last().header("host") == f"billing.corp.example:{api.port}"
    # resolved once for the connection, which was kept alive for the next two requests
    assert resolver.calls == [("billing.corp.example", api.port)]


def test_a_redirect_is_returned_not_followed(api: StandIn) -> None:
    """Each hop is the engine's to decide again: the client itself never follows one."""
    dest = destination(api.url, internal=True)
    (answer,) = send(dest, "/redirect?to=http://127.0.0.1:9/elsewhere&status=307")
    assert answer.status == 307
    assert dict(answer.headers)["location"] == "http://127.0.0.1:9/elsewhere"
    assert [r.path for r in api.received] == ["/redirect"]


def test_the_request_body_above_the_cap_is_refused_before_anything_is_sent(api: StandIn) -> None:
    dest = destination(api.url, internal=True)
    small = settings(max_request_bytes=1024)
    caught = failure(
        lambda: send(dest, method="POST", body=b"x" * 1025, upstream=lambda: Upstream(small))
    )
    assert (caught.status, caught.error) == (413, "request_too_large")
    assert api.received == []


@pytest.mark.parametrize("target", ["http://elsewhere/", "/a b", "/a\r\nx: y", "*", ""])
def test_a_target_that_is_not_origin_form_is_refused(api: StandIn, target: str) -> None:
    with pytest.raises(InvalidRequest):
        send(destination(api.url, internal=True), target)
    assert api.received == []


def test_a_header_that_cannot_be_sent_is_refused_not_sent(api: StandIn) -> None:
    dest = destination(api.url, internal=True)
    with pytest.raises(InvalidRequest) as caught:
        send(dest, headers=(("x-evil", "a\r\nx-injected: 1"),))
    assert "x-injected" not in caught.value.description
    assert api.received == []


# ---- SSRF -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:{port}",
        "http://localhost:{port}",
        "http://[::1]:{port}",
        "http://0.0.0.0:{port}",
        "http://[::ffff:127.0.0.1]:{port}",
        "http://[::ffff:7f00:1]:{port}",
        "http://127.1.2.3:{port}",
    ],
)
def test_a_destination_that_is_not_internal_never_reaches_the_loopback(
    api: StandIn, base: str
) -> None:
    dest = destination(base.format(port=api.port))
    caught = failure(lambda: send(dest, "/echo-headers"))
    assert (caught.status, caught.error) == (502, "address_refused")
    assert "not internal" in caught.description
    assert api.received == []  # refused before any byte was sent


def test_the_unspecified_address_is_refused_even_for_an_internal_destination(
    api: StandIn,
) -> None:
    caught = failure(lambda: send(destination(f"http://0.0.0.0:{api.port}", internal=True)))
    assert caught.error == "address_refused"
    assert api.received == []


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        (["10.1.2.3"], "private"),
        (["127.0.0.1"], "loopback"),
        (["169.254.169.254"], "link-local"),
        (["100.64.0.1"], "CGNAT"),
        (["93.184.216.34", "127.0.0.1"], "loopback"),  # one bad address refuses the name
        (["2606:2800:220:1::1", "fd00::1"], "private"),
        (["::ffff:10.0.0.1"], "IPv4-mapped"),
        (["2002:a00:1::1"], "embeds"),  # 6to4 of 10.0.0.1
        (["64:ff9b::7f00:1"], "embeds"),  # NAT64 of 127.0.0.1
        (["not-an-address"], "not an IP address"),
    ],
)
def test_a_public_looking_name_that_resolves_inside_is_refused(
    api: StandIn, answers: list[str], why: str
) -> None:
    resolver = Resolver(*answers)
    dest = destination(f"http://api.example.com:{api.port}")
    caught = failure(lambda: send(dest, upstream=lambda: Upstream(settings(), resolve=resolver)))
    assert caught.error == "address_refused"
    assert why in caught.description
    assert resolver.calls == [("api.example.com", api.port)]  # resolved once
    assert api.received == []


def test_a_name_that_does_not_resolve_is_unreachable(api: StandIn) -> None:
    for resolver in (Resolver(fail=socket.gaierror(-2, "Name or service not known")), Resolver()):
        dest = destination("https://nowhere.example.com")
        caught = failure(
            lambda r=resolver, d=dest: send(d, upstream=lambda: Upstream(settings(), resolve=r))
        )
        assert (caught.status, caught.error) == (502, "upstream_unreachable")


def test_a_closed_port_is_unreachable_and_the_failure_names_no_header_value() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = destination(f"http://127.0.0.1:{port}", internal=True)
    caught = failure(lambda: send(dest, headers=(("x-api-key", "s3cr3t-value-xyz"),)))
    assert (caught.status, caught.error) == (502, "upstream_unreachable")
    assert "s3cr3t" not in caught.description
    assert "api" in caught.description


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "255.255.255.255", "224.0.0.1", "240.0.0.1", "192.0.2.1", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1", "fec0::1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "::127.0.0.1", "::10.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::1",
        "64:ff9b::a00:1", "64:ff9b:1::a9fe:a9fe", "2001::1", "2001:db8::1", "100::1",
    ],
)  # fmt: skip
def test_addresses_a_public_destination_may_not_reach(address: str) -> None:
    assert address_refusal(address, internal=False) is not None


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_globally_routable_unicast_is_allowed(address: str) -> None:
    assert address_refusal(address, internal=False) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True), ("10.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
        ("169.254.169.254", False), ("fe80::1", False), ("::ffff:169.254.169.254", False),
        ("0.0.0.0", False), ("::", False), ("224.0.0.1", False), ("ff02::1", False),
        ("255.255.255.255", False),
    ],
)  # fmt: skip
def test_what_an_internal_destination_may_reach(address: str, allowed: bool) -> None:
    assert (address_refusal(address, internal=True) is None) is allowed


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "169.254.10.20"])
def test_an_internal_destination_reaches_link_local_space_only_by_its_address(
    address: str,
) -> None:
    """A name of an internal destination that resolves into link-local space (a poisoned
    or rebound answer pointing at the metadata service) is refused; a base that names the
    address itself is what its admin registered."""
    assert "link-local" in str(address_refusal(address, internal=True))
    assert address_refusal(address, internal=True, literal=True) is None


def test_an_internal_name_resolving_to_the_metadata_address_is_refused(api: StandIn) -> None:
    resolver = Resolver("169.254.169.254")
    dest = destination(f"http://metadata-ish.internal.example:{api.port}", internal=True)
    caught = failure(lambda: send(dest, upstream=lambda: Upstream(settings(), resolve=resolver)))
    assert caught.error == "address_refused"
    assert "link-local" in caught.description
    assert api.received == []


@given(st.ip_addresses(v=4))
def test_an_ipv6_form_of_a_refused_ipv4_address_is_refused(ip: ipaddress.IPv4Address) -> None:
    if address_refusal(str(ip), internal=False) is None:
        return
    value = int(ip)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # IPv4-mapped
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),  # 6to4
        ipaddress.IPv6Address((0x64FF9B << 96) | value),  # NAT64
    ]
    for form in forms:
        assert address_refusal(str(form), internal=False) is not None, form


# ---- TLS ------------------------------------------------------------------------------


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[StandIn]:
    with standin(tmp_path, tls=True) as server:
        yield server


def test_tls_is_refused_without_the_ca_and_accepted_with_it(tls_api: StandIn) -> None:
    dest = destination(f"https://localhost:{tls_api.port}", internal=True)
    caught = failure(lambda: send(dest, "/x"))
    assert (caught.status, caught.error) == (502, "tls_failed")
    assert "certificate" in caught.description
    assert tls_api.received == []
    trusted = settings(ca_file=tls_api.ca_file)
    (answer,) = send(dest, "/x", upstream=lambda: Upstream(trusted))
    assert answer.status == 200
    assert tls_api.last().path == "/x"


def test_tls_checks_the_destinations_host_not_the_address(tls_api: StandIn) -> None:
    """The certificate is for localhost and 127.0.0.1; a name resolving there is refused."""
    resolver = Resolver("127.0.0.1")
    trusted = settings(ca_file=tls_api.ca_file)
    dest = destination(f"https://wrong.example.com:{tls_api.port}", internal=True)
    caught = failure(lambda: send(dest, upstream=lambda: Upstream(trusted, resolve=resolver)))
    assert caught.error == "tls_failed"
    assert "wrong.example.com" in caught.description
    assert tls_api.received == []


def test_an_unreadable_ca_file_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(InvalidRequest, match="ca_file"):
        Upstream(settings(ca_file=bad))


# ---- time and size --------------------------------------------------------------------


def test_an_answer_later_than_the_timeout_is_a_504(api: StandIn) -> None:
    quick = settings(timeout=timedelta(milliseconds=200))
    dest = destination(api.url, internal=True)
    caught = failure(lambda: send(dest, "/slow?ms=3000", upstream=lambda: Upstream(quick)))
    assert (caught.status, caught.error) == (504, "upstream_timeout")


def test_a_resolver_that_hangs_is_a_connect_timeout() -> None:
    class Hanging(Resolver):
        async def __call__(self, host: str, port: int) -> list[str]:
            await anyio.sleep(60)
            return []

    quick = settings(connect_timeout=timedelta(milliseconds=100))
    dest = destination("https://slow-dns.example.com")
    caught = failure(lambda: send(dest, upstream=lambda: Upstream(quick, resolve=Hanging())))
    assert (caught.status, caught.error) == (504, "upstream_timeout")


def test_an_answer_declared_above_the_cap_is_refused_and_the_next_request_works(
    api: StandIn,
) -> None:
    capped = settings(max_response_bytes=1024)
    dest = destination(api.url, internal=True)

    async def main() -> tuple[EgressFailure, Response]:
        up = Upstream(capped)
        try:
            with pytest.raises(EgressFailure) as caught:
                await up.send(dest, "GET", "/bytes?n=5000", (), b"")
            return caught.value, await up.send(dest, "GET", "/bytes?n=1024", (), b"")
        finally:
            await up.aclose()

    refused, fine = anyio.run(main)
    assert (refused.status, refused.error) == (502, "response_too_large")
    assert fine.body == b"x" * 1024


class Canned:
    """A raw HTTP server that answers every request with ``answer`` (bytes as given), then
    closes the connection; it records each request's head."""

    def __init__(self, answer: bytes, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        self.host = f"[{host}]" if ":" in host else host
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    head += piece
                self.heads.append(head)
                with suppress(OSError):
                    conn.sendall(self.answer)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def canned(answer: bytes, host: str = "127.0.0.1") -> Iterator[Canned]:
    server = Canned(answer, host)
    server.thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.thread.join(timeout=5)
        server.sock.close()


def chunked(pieces: list[bytes], head: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n" + head + b"\r\n" + body


def test_a_chunked_answer_past_the_cap_is_abandoned_with_nothing_returned() -> None:
    with canned(chunked([b"y" * 600] * 10)) as server:
        dest = destination(server.url, internal=True)
        capped = settings(max_response_bytes=2048)
        caught = failure(lambda: send(dest, upstream=lambda: Upstream(capped)))
        assert (caught.status, caught.error) == (502, "response_too_large")
    with canned(chunked([b"y" * 600] * 3)) as server:
        (answer,) = send(destination(server.url, internal=True), upstream=lambda: Upstream(capped))
        assert answer.body == b"y" * 1800


def test_a_compressed_answer_is_refused() -> None:
    with canned(chunked([b"\x1f\x8b\x08"], b"content-encoding: gzip\r\n")) as server:
        caught = failure(lambda: send(destination(server.url, internal=True)))
    assert (caught.status, caught.error) == (502, "bad_upstream_answer")
    assert "compressed" in caught.description
    assert b"accept-encoding: identity" in server.heads[0].lower()


def test_an_answer_that_is_not_http_is_a_bad_answer_and_its_bytes_are_not_quoted() -> None:
    with canned(b"SSH-2.0-OpenSSH_9.6 secret-banner-bytes\r\n\r\n") as server:
        caught = failure(lambda: send(destination(server.url, internal=True)))
    assert (caught.status, caught.error) == (502, "bad_upstream_answer")
    assert "secret-banner" not in caught.description


def test_an_internal_ipv6_literal_is_reached_at_its_address() -> None:
    with canned(chunked([b"v6"]), "::1") as server:
        (answer,) = send(destination(server.url, internal=True), "/p")
    assert (answer.address, answer.body) == ("::1", b"v6")
    assert b"host: [::1]:" in server.heads[0].lower()


def test_hop_by_hop_and_cookie_headers_of_an_answer_are_dropped() -> None:
    head = (
        b"connection: close, x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\n"
        b"set-cookie: session=derived-from-the-credential\r\nx-kept: yes\r\n"
        b"proxy-authenticate: Basic\r\n"
    )
    with canned(chunked([b"ok"], head)) as server:
        (answer,) = send(destination(server.url, internal=True))
    assert dict(answer.headers) == {"x-kept": "yes"}
    assert answer.body == b"ok"


# ---- headers --------------------------------------------------------------------------

AGENT_HEADERS = (
    ("Host", "tether.local"),
    ("Connection", "keep-alive, X-Hop"),
    ("X-Hop", "hop"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Proxy-Authorization", f"Bearer {TOKEN}"),
    ("Proxy-Connection", "keep-alive"),
    ("Authorization", f"Bearer {TOKEN}"),
    ("DPoP", "proof"),
    ("Cookie", "a=b"),
    ("Forwarded", "for=10.0.0.1"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Expect", "100-continue"),
    ("Content-Length", "999"),
    ("Accept-Encoding", "gzip"),
    ("X-Api-Key", TOKEN),
    ("X-Echo", f"prefix {TOKEN.replace('.', '%2E')} suffix"),
    ("X-Basic", "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()),
    ("Accept", "application/json"),
    ("User-Agent", "agent/1.0"),
    ("X-Request-Id", "r-1"),
)
KEPT = [("accept", "application/json"), ("user-agent", "agent/1.0"), ("x-request-id", "r-1")]


def test_outbound_keeps_only_the_end_to_end_headers_without_the_agents_token() -> None:
    assert outbound(AGENT_HEADERS, TOKEN) == KEPT


def test_what_reaches_the_destination_has_no_hop_by_hop_header_and_no_token(
    api: StandIn,
) -> None:
    send(
        destination(api.url, internal=True),
        "/echo-headers",
        headers=tuple(outbound(AGENT_HEADERS, TOKEN)),
    )
    got = api.last()
    names = {n.lower() for n, _ in got.headers}
    assert names == {"accept", "user-agent", "x-request-id", "host", "accept-encoding"}
    assert all(TOKEN not in v for _, v in got.headers)
    assert got.header("host") == f"127.0.0.1:{api.port}"


def test_send_strips_hop_by_hop_headers_itself(api: StandIn) -> None:
    """A caller that forgot :func:`outbound` still sends no hop-by-hop or framing header."""
    sent = (("Connection", "x-hop"), ("X-Hop", "1"), ("Host", "evil"), ("TE", "trailers"))
    send(destination(api.url, internal=True), headers=sent)
    names = {n.lower() for n, _ in api.last().headers}
    assert names == {"host", "accept-encoding"}
    assert api.last().header("host") == f"127.0.0.1:{api.port}"


def test_carries_finds_the_token_however_a_header_holds_it() -> None:
    assert carries(TOKEN, TOKEN)
    assert carries(f"Token {TOKEN}", TOKEN)
    assert carries(TOKEN.replace("e", "%65"), TOKEN)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        word = encode(f"x:{TOKEN}".encode()).decode().rstrip("=")
        assert carries(f"Basic {word}", TOKEN)
    assert not carries("Bearer something-else", TOKEN)


def test_inbound_drops_what_the_connection_names() -> None:
    got = inbound([("Connection", "X-A"), ("X-A", "1"), ("Content-Length", "3"), ("X-B", "2")])
    assert got == [("x-b", "2")]


def test_origin_from_a_token_url() -> None:
    origin, target = Origin.from_url(
        "https://Login.Example.com:8443/oauth/token?x=1", internal=False, name="t"
    )
    assert (origin.host, origin.port, origin.authority) == (
        "login.example.com",
        8443,
        "login.example.com:8443",
    )
    assert target == "/oauth/token?x=1"
    for bad in ("ftp://x/", "https://user:pw@x/", "https://x/#f", "no-scheme"):
        with pytest.raises(InvalidRequest):
            Origin.from_url(bad, internal=False, name="t")
