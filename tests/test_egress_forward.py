"""The egress proxy's forward-proxy face (``HTTPS_PROXY``), served by the runtime's
service over the real engine and a real Tether (SQLite and PostgreSQL), against the API
stand-in over real TLS: unmodified clients (``httpx``, ``curl``) read what the agent's
grant covers through a tunnel whose certificate comes from the installation's CA;
everything else — other hosts, other ports, no token, hostile bytes — is refused, recorded
where it is a refusal of an agent's request, and never answered with a traceback."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, spec
from helpers.api_standin import StandIn, standin
from helpers.forward_client import Raw, basic

from tether import Settings, Tether
from tether.egress.authority import destination_for, parse_authority
from tether.egress.engine import EgressProxy
from tether.egress.forward import Limits
from tether.grants import GrantSpec
from tether.server import ForwardProxyService, ProxyAddress
from tether.upstreams.destinations import Destination, DestinationSpec

SECRET = "sk_forward0proxy0credential0000000000"  # injected from env:EGRESS_FWD
LIMITS = Limits(idle=5, head_timeout=5, body_timeout=5, tls_timeout=5, max_connections=8)


async def _loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]  # the stand-in listens there, whatever name the destination uses


@dataclass
class Org:
    tether: Tether
    api: StandIn
    service: ForwardProxyService
    home: Path

    @property
    def port(self) -> int:
        assert self.service.port is not None
        return self.service.port

    @property
    def ca_file(self) -> Path:
        assert self.service.ca is not None
        return self.service.ca.cert_file

    @property
    def host(self) -> str:
        return f"localhost:{self.api.port}"

    def token(self, name: str = "bot") -> str:
        agent = self.tether.registry.get(ADMIN, name)
        audience = f"{self.tether.settings.issuer}/egress"
        return self.tether.tokens.client_credentials(agent, audience, None, None).access_token

    def agent_id(self, name: str = "bot") -> str:
        return self.tether.registry.get(ADMIN, name).id

    def refusals(self) -> list[dict[str, Any]]:
        self.tether.refusals.flush()
        self.tether.events.flush()
        return [e.to_dict() for e in self.tether.events.list(type="egress.refused")]


def _until(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _serve(tether: Tether, limits: Limits = LIMITS) -> ForwardProxyService:
    service = ForwardProxyService(
        tether,
        ProxyAddress("127.0.0.1", 0),
        limits=limits,
        engine=lambda t: EgressProxy(t, resolve=_loopback),
    )
    service.start()
    return service


@pytest.fixture
def api(tmp_path: Path) -> Iterator[StandIn]:
    with standin(tmp_path, tls=True) as served:
        yield served


@pytest.fixture
def org(home: Path, db_url: str, api: StandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Org]:
    monkeypatch.setenv("EGRESS_FWD", SECRET)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.load(
        home,
        db_url=db_url,
        egress={"port": 0, "ca_file": str(api.ca_file), "max_request_bytes": 4096},
    )
    Tether.init(settings)[0].close()
    with Tether.open(settings) as tether:
        tether.destinations.add(
            ADMIN,
            DestinationSpec(
                "api",
                base=f"https://localhost:{api.port}",
                credentials=["Authorization=Bearer {env:EGRESS_FWD}"],
                internal=True,
            ),
        )
        tether.registry.register(ADMIN, spec("bot"))
        tether.grants.add(ADMIN, GrantSpec("bot", "GET", "api/repos/acme/**"))
        tether.grants.add(ADMIN, GrantSpec("bot", "POST", "api/uploads"))
        service = _serve(tether)
        try:
            yield Org(tether, api, service, home)
        finally:
            service.stop()


def _proxied(org: Org, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    """The environment an agent is given: HTTPS_PROXY with its token, the CA to trust."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://agent:{token}@127.0.0.1:{org.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(org.ca_file))


def _never_saw(token: str, api: StandIn) -> None:
    for seen in api.received:
        assert token not in seen.raw_target
        assert all(token not in value for _, value in seen.headers)
        assert token.encode() not in seen.body
        assert seen.header("proxy-authorization") is None


# ---- unmodified clients ------------------------------------------------------------------


def test_an_unmodified_httpx_client_reads_what_the_grant_covers_and_nothing_else(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = org.token()
    _proxied(org, monkeypatch, token)
    with httpx.Client(timeout=30) as client:  # trust_env: HTTPS_PROXY and SSL_CERT_FILE
        read = client.get(f"https://{org.host}/repos/acme/x?page=2")
        again = client.get(f"https://{org.host}/repos/acme/y")  # the same tunnel, kept alive
        posted = client.post(f"https://{org.host}/repos/acme/x", json={"t": 1})
        outside = client.get(f"https://{org.host}/repos/other/x")
    assert read.status_code == 200, read.text
    assert read.json() == {
        "ok": True,
        "method": "GET",
        "path": "/repos/acme/x",
        "query": [["page", "2"]],
    }
    assert again.status_code == 200, again.text
    assert len(org.api.received) == 2  # neither refused request reached the API
    for seen in org.api.received:
        assert seen.header("authorization") == f"Bearer {SECRET}"  # injected upstream
    _never_saw(token, org.api)
    for refused in (posted, outside):
        assert refused.status_code == 403, refused.text
        assert refused.headers["tether-refused"] == "access_denied"
        body = refused.json()
        assert body["error"] == "access_denied" and body["reasons"], body
    assert SECRET not in read.text + posted.text + outside.text


def test_an_unmodified_async_httpx_client_reads_through_the_proxy(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = org.token()
    _proxied(org, monkeypatch, token)

    async def read() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(client.get(f"https://{org.host}/repos/acme/{n}") for n in range(3))
                )
            )

    answers = asyncio.run(read())
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert sorted(a.json()["path"] for a in answers) == [f"/repos/acme/{n}" for n in range(3)]
    _never_saw(token, org.api)


def test_curl_reads_through_the_proxy_with_the_installation_ca(org: Org) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    token = org.token()
    done = subprocess.run(
        [
            curl,
            "-sS",
            "--max-time",
            "30",
            "--noproxy",
            "",
            "-x",
            f"http://agent:{token}@127.0.0.1:{org.port}",
            "--cacert",
            str(org.ca_file),
            f"https://{org.host}/repos/acme/curl",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == "/repos/acme/curl"
    assert org.api.last().header("authorization") == f"Bearer {SECRET}"
    _never_saw(token, org.api)


def test_a_client_that_does_not_trust_the_installation_ca_gets_nothing(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    _proxied(org, monkeypatch, org.token())
    monkeypatch.setenv("SSL_CERT_FILE", str(org.api.ca_file))  # trusts the real API's CA only
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{org.host}/repos/acme/x", timeout=30)
    assert org.api.received == []


# ---- CONNECT refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authority",
    ["example.com:443", "localhost:1", "127.0.0.1:{port}", "LOCALHOST.:1"],
    ids=["unregistered-host", "registered-host-other-port", "same-server-other-name", "case"],
)
def test_connect_elsewhere_is_refused_and_recorded(org: Org, authority: str) -> None:
    authority = authority.format(port=org.api.port)
    raw = Raw(org.port)
    reply = raw.request(
        "CONNECT", authority, [("host", authority), ("proxy-authorization", basic(org.token()))]
    )
    assert reply.status == 403, reply.body
    assert reply.json()["error"] == "access_denied"
    assert "no https destination is registered at" in reply.json()["error_description"]
    [refused] = org.refusals()
    assert refused["actor"] == org.agent_id()
    assert refused["action"] == "CONNECT"
    assert refused["resource"] == authority.lower().replace("host.", "host")
    assert org.api.received == []


def test_a_token_for_one_destination_opens_no_tunnel_to_another(org: Org) -> None:
    org.tether.destinations.add(
        ADMIN,
        DestinationSpec("other", base=f"https://127.0.0.1:{org.api.port}", internal=True),
    )
    agent = org.tether.registry.get(ADMIN, "bot")
    issuer = org.tether.settings.issuer
    only_api = org.tether.tokens.client_credentials(agent, f"{issuer}/egress/api", None, None)
    authority = f"127.0.0.1:{org.api.port}"  # where "other" is
    raw = Raw(org.port)
    reply = raw.request(
        "CONNECT",
        authority,
        [("host", authority), ("proxy-authorization", basic(only_api.access_token))],
    )
    assert reply.status == 403, reply.body
    assert "the token is for another egress destination" in reply.json()["error_description"]
    [refused] = org.refusals()
    assert (refused["actor"], refused["action"]) == (org.agent_id(), "CONNECT")
    raw.close()
    raw = Raw(org.port)  # while the destination it names opens
    assert raw.tunnel(org.host, only_api.access_token, org.ca_file, "localhost").status == 200
    assert raw.request("GET", "/repos/acme/1", [("host", org.host)]).status == 200


def test_connect_without_a_valid_token_is_407_and_recorded(org: Org) -> None:
    other = org.tether.tokens.client_credentials(  # a token for Tether's own API
        org.tether.registry.get(ADMIN, "bot"), org.tether.settings.issuer, None, None
    ).access_token
    cases = [
        [],
        [("proxy-authorization", "Bearer not-a-token")],
        [("proxy-authorization", basic("garbage"))],
        [("proxy-authorization", f"Bearer {other}")],  # a token for another resource
        [("proxy-authorization", "Digest whatever")],
    ]
    for headers in cases:
        raw = Raw(org.port)
        reply = raw.request("CONNECT", org.host, [("host", org.host), *headers])
        raw.close()
        assert reply.status == 407, (headers, reply.body)
        assert reply.headers["proxy-authenticate"].startswith(("Bearer", "Basic"))
        assert reply.json()["error"] == "invalid_token"
    refused = org.refusals()
    assert len(refused) == len(cases)
    # the token for another resource verified: its agent is named (tests/test_egress_redteam.py)
    assert [r["actor"] for r in refused] == ["anonymous"] * 3 + [org.agent_id()] + ["anonymous"]
    assert org.api.received == []


def test_httpx_with_a_bad_token_sees_407(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    _proxied(org, monkeypatch, "not-a-token")
    with pytest.raises(httpx.ProxyError, match="407"):
        httpx.get(f"https://{org.host}/repos/acme/x", timeout=30)
    assert org.api.received == []


# ---- absolute form and origin form --------------------------------------------------------


def test_http_destinations_are_reached_in_absolute_form(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    with standin() as plain:
        org.tether.destinations.add(
            ADMIN,
            DestinationSpec(
                "plain",
                base=f"http://localhost:{plain.port}/v1",
                credentials=["X-Api-Key=env:EGRESS_FWD"],
                internal=True,
            ),
        )
        org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "plain/items/**"))
        token = org.token()
        monkeypatch.setenv("HTTP_PROXY", f"http://agent:{token}@127.0.0.1:{org.port}")
        with httpx.Client(timeout=30) as client:
            read = client.get(f"http://localhost:{plain.port}/v1/items/1")
            outside = client.get(f"http://localhost:{plain.port}/v2/items/1")  # no destination
        assert read.status_code == 200, read.text
        assert read.json()["path"] == "/v1/items/1"
        assert plain.last().header("x-api-key") == SECRET
        assert outside.status_code == 403, outside.text
        assert len(plain.received) == 1
        _never_saw(token, plain)
    [refused] = org.refusals()
    assert refused["action"] == "GET"


def test_https_in_absolute_form_and_origin_form_outside_a_tunnel_are_refused(org: Org) -> None:
    auth = ("proxy-authorization", basic(org.token()))
    for target in (f"https://{org.host}/repos/acme/x", "/repos/acme/x", "*"):
        raw = Raw(org.port)
        reply = raw.request("GET", target, [("host", org.host), auth])
        assert reply.status == 400, (target, reply.body)
        assert reply.json()["error"] == "invalid_request"
        raw.close()
    assert org.api.received == []


# ---- inside the tunnel ---------------------------------------------------------------------


def test_a_tunnel_serves_several_requests_and_refuses_a_host_it_was_not_opened_for(
    org: Org,
) -> None:
    org.tether.destinations.add(
        ADMIN,
        DestinationSpec("other", base=f"https://127.0.0.1:{org.api.port}", internal=True),
    )
    org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "other/**"))
    raw = Raw(org.port)
    assert raw.tunnel(org.host, org.token(), org.ca_file, "localhost").status == 200
    for n in range(3):
        reply = raw.request("GET", f"/repos/acme/{n}", [("host", org.host)])
        assert reply.status == 200, reply.body
        raw.next_cycle()
    stray = raw.request("GET", "/anything", [("host", f"127.0.0.1:{org.api.port}")])
    assert stray.status == 421, stray.body
    assert stray.json()["error"] == "misdirected_request"
    assert raw.closed()
    assert len(org.api.received) == 3


def test_smuggling_a_body_with_both_lengths_is_refused_and_never_forwarded(org: Org) -> None:
    raw = Raw(org.port)
    assert raw.tunnel(org.host, org.token(), org.ca_file, "localhost").status == 200
    raw.send_raw(
        f"POST /uploads HTTP/1.1\r\nHost: {org.host}\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /repos/acme/smuggled HTTP/1.1\r\n"
        f"Host: {org.host}\r\n\r\n".encode()
    )
    answer = raw.read_all()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Content-Length and Transfer-Encoding together" in answer
    assert answer.count(b"HTTP/1.1") == 1  # the smuggled request was never read as one
    assert org.api.received == []


def test_a_body_over_the_limit_is_413(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    _proxied(org, monkeypatch, org.token())
    with httpx.Client(timeout=30) as client:
        small = client.post(f"https://{org.host}/uploads", content=b"a" * 100)
        large = client.post(f"https://{org.host}/uploads", content=b"a" * 5000)

        def chunks() -> Iterator[bytes]:
            yield from (b"b" * 1000 for _ in range(5))

        chunked = client.post(f"https://{org.host}/uploads", content=chunks())
    assert small.status_code == 200, small.text
    for refused in (large, chunked):
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"] == "request_too_large"
    assert [r.body for r in org.api.received] == [b"a" * 100]


# ---- hostile bytes on the proxy's port ----------------------------------------------------


def test_garbage_is_400_and_closed(org: Org) -> None:
    raw = Raw(org.port)
    raw.send_raw(b"\x00\x01garbage that is not HTTP\r\n\r\n")
    answer = raw.read_all()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"error": "invalid_request"' in answer
    assert b"Traceback" not in answer


def test_a_tls_client_hello_on_the_plain_port_is_400_and_closed(org: Org) -> None:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    raw = Raw(org.port)
    raw.send_raw(outgoing.read())
    answer = raw.read_all()
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def test_huge_headers_are_431(org: Org) -> None:
    raw = Raw(org.port)
    raw.send_raw(
        f"CONNECT {org.host} HTTP/1.1\r\nHost: {org.host}\r\nX-Big: ".encode() + b"a" * 40_000
    )
    answer = raw.read_all()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert org.api.received == []


@contextmanager
def _bare(home: Path, db_url: str, limits: Limits) -> Iterator[ForwardProxyService]:
    """The proxy, with ``limits``, of a Tether with nothing registered."""
    settings = Settings.load(home, db_url=db_url, egress={"port": 0})
    Tether.init(settings)[0].close()
    with Tether.open(settings) as tether:
        service = _serve(tether, limits)
        try:
            yield service
        finally:
            service.stop()


def test_slow_headers_are_cut_off(home: Path, db_url: str) -> None:
    with _bare(home, db_url, Limits(idle=30, head_timeout=0.3, tls_timeout=5)) as service:
        assert service.port is not None
        raw = Raw(service.port, timeout=20)
        raw.send_raw(b"CONNECT localhost:443 HTTP/1.1\r\nHost: loc")  # and then nothing
        assert raw.closed()  # long before the socket's own 20 s
        idle = Raw(service.port, timeout=20)  # sends nothing at all
        assert idle.closed()


def test_more_connections_than_the_cap_are_503(home: Path, db_url: str) -> None:
    with _bare(home, db_url, Limits(idle=30, head_timeout=30, max_connections=2)) as service:
        assert service.port is not None and service.proxy is not None
        held = [Raw(service.port) for _ in range(2)]
        proxy = service.proxy
        _until(lambda: proxy.open_connections == 2)
        answer = Raw(service.port).read_all()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"too many open connections" in answer
        held[0].close()


# ---- a kill --------------------------------------------------------------------------------


def test_a_kill_closes_the_agents_tunnel_and_its_next_tunnel_is_refused(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = org.token()
    raw = Raw(org.port)
    assert raw.tunnel(org.host, token, org.ca_file, "localhost").status == 200
    assert raw.request("GET", "/repos/acme/1", [("host", org.host)]).status == 200
    raw.next_cycle()

    org.tether.killswitch.kill(ADMIN, "bot", reason="test")

    assert raw.closed()  # the open tunnel, closed by the kill
    _proxied(org, monkeypatch, token)
    with pytest.raises(httpx.ProxyError, match="407"):
        httpx.get(f"https://{org.host}/repos/acme/2", timeout=30)
    assert len(org.api.received) == 1
    refused = org.refusals()
    assert refused[-1]["actor"] == "anonymous" and "revoked" in refused[-1]["reasons"][0]


def test_a_kill_landing_before_the_tunnel_is_registered_opens_no_tunnel(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent is killed after its CONNECT was authenticated but before the tunnel was
    registered (so no kill can close it): the token is checked again once registered,
    and the CONNECT is refused, on record."""
    assert org.service.proxy is not None
    connections = org.service.proxy.engine.connections
    opened = connections.open

    def killed_first(token: Any, close: Any) -> Any:
        org.tether.killswitch.kill(ADMIN, "bot", reason="test: between check and register")
        return opened(token, close)

    monkeypatch.setattr(connections, "open", killed_first)
    raw = Raw(org.port)
    assert raw.tunnel(org.host, org.token(), org.ca_file, "localhost").status == 407
    assert len(connections) == 0
    assert org.api.received == []
    assert "revoked" in org.refusals()[-1]["reasons"][0]


def test_a_kill_through_another_process_closes_the_tunnel_by_the_epoch(org: Org) -> None:
    """Another Tether on the same store (another process: its kill switch is not this
    one's) kills the agent: the tunnel is closed once the epoch moves, and nothing more
    goes through it."""
    raw = Raw(org.port)
    assert raw.tunnel(org.host, org.token(), org.ca_file, "localhost").status == 200
    assert raw.request("GET", "/repos/acme/1", [("host", org.host)]).status == 200
    raw.next_cycle()
    with Tether.open(org.tether.settings) as elsewhere:
        elsewhere.killswitch.kill(ADMIN, "bot", reason="test")
    assert raw.closed()
    assert len(org.api.received) == 1


# ---- authorities and base paths (no I/O) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("api.example.com:443", None, ("api.example.com", 443)),
        ("API.Example.COM.:8443", None, ("api.example.com", 8443)),
        ("api.example.com", None, None),  # CONNECT names a port
        ("api.example.com", 443, ("api.example.com", 443)),
        ("[::1]:443", None, ("::1", 443)),
        ("[0:0:0:0:0:0:0:1]:443", None, ("::1", 443)),
        ("::1:443", None, None),  # an IPv6 address takes brackets
        ("127.0.0.1:0", None, None),
        ("127.0.0.1:65536", None, None),
        ("user@api.example.com:443", None, None),
        ("api.example.com:443/x", None, None),
        ("api%2eexample.com:443", None, None),
        ("[fe80::1%25eth0]:443", None, None),
        ("", 443, None),
    ],
)
def test_authorities_are_parsed_strictly(
    text: str, default: int | None, expected: tuple[str, int] | None
) -> None:
    found = parse_authority(text, default=default)
    assert (found.host, found.port) == expected if found else expected is None


def test_the_longest_base_path_holding_the_target_serves_it() -> None:
    def at(name: str, path: str) -> Destination:
        return Destination(name, f"https://h{path}", "https", "h", 443, path)

    found = [at("root", ""), at("v1", "/v1"), at("v1beta", "/v1/beta")]
    chosen = {
        target: (destination_for(found, target) or at("none", "")).name
        for target in ("/v1/x", "/v1", "/v1?x=1", "/v1beta/x", "/v1/beta/x", "/v2", "/")
    }
    assert chosen == {
        "/v1/x": "v1",
        "/v1": "v1",
        "/v1?x=1": "v1",
        "/v1beta/x": "root",  # a prefix of the text is not a prefix of the path
        "/v1/beta/x": "v1beta",
        "/v2": "root",
        "/": "root",
    }
    assert destination_for(found[1:], "/v2/x") is None
