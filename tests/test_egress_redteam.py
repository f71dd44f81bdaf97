"""Red-team tests of the egress proxy, through its public contract (the reverse route
``/egress/NAME/...`` over real HTTP, the forward proxy on a real socket), against the API
stand-in (a real server on its own parser), on SQLite and PostgreSQL. Each test is an
attack that worked before its fix: it fails if the fix is undone."""

from __future__ import annotations

import anyio
import httpx
import pytest
from conftest import ADMIN
from helpers.egress_org import EgressOrg, api, egress  # noqa: F401
from test_egress_upstream import canned

from tether.egress import engine
from tether.egress.engine import EgressProxy
from tether.egress.exchange import Outbound
from tether.grants import GrantSpec
from tether.upstreams.destinations import DestinationSpec


@pytest.fixture
def org(egress: EgressOrg) -> EgressOrg:  # noqa: F811
    egress.agent("bot", ("GET", "github/repos/acme/**"), ("POST", "github/repos/acme/*/issues"))
    return egress


# ---- the upstream must execute the method and path that were decided --------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-HTTP-Method-Override", "DELETE"),  # Google APIs, Express method-override, ...
        ("X-HTTP-Method", "DELETE"),  # OData, ASP.NET
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin/users/1"),  # IIS URL Rewrite, Symfony, Spring
        ("X-Rewrite-URL", "/admin/users/1"),
        ("X-Host", "admin.internal"),  # another virtual host at the same address
        ("X-HTTP-Host-Override", "admin.internal"),
    ],
)
def test_a_header_that_overrides_the_decided_method_or_path_is_refused(
    org: EgressOrg, header: str, value: str
) -> None:
    """A GET allowed on github/repos/acme/x must not reach an upstream that honours an
    override header as a DELETE (or another path or host): such a request is refused,
    recorded with the agent named, and nothing goes upstream."""
    token = org.token("bot")
    answer = org.call(token, "GET", "github/repos/acme/x", headers={header: value})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert header.lower() in answer.json()["error_description"]
    assert org.api.received == []
    [refused] = org.events("egress.refused")
    assert refused.actor == org.tether.registry.get(ADMIN, "bot").id
    assert refused.action == "GET"


@pytest.mark.parametrize(
    ("target", "body", "kind"),
    [
        ("github/repos/acme/x/issues?_method=DELETE", b"", None),  # Symfony, Laravel
        (
            "github/repos/acme/x/issues",
            b"title=t&_method=DELETE",
            "application/x-www-form-urlencoded",
        ),
        (
            "github/repos/acme/x/issues",
            b'--b\r\ncontent-disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
)
def test_a_method_override_parameter_is_refused(
    org: EgressOrg, target: str, body: bytes, kind: str | None
) -> None:
    """Rails, Laravel and Symfony read a POST's ``_method`` parameter (query or form) as
    the method to run: a POST allowed on .../issues is refused rather than run as DELETE."""
    headers = {"content-type": kind} if kind else {}
    answer = org.call(org.token("bot"), "POST", target, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "_method" in answer.json()["error_description"]
    assert org.api.received == []
    assert len(org.events("egress.refused")) == 1


def test_an_ordinary_request_with_such_words_elsewhere_still_goes(org: EgressOrg) -> None:
    """The refusal is about the override, not the words: a query value or a JSON body
    naming ``_method`` is sent."""
    token = org.token("bot")
    read = org.call(token, "GET", "github/repos/acme/x?q=_method")
    assert read.status_code == 200, read.text
    posted = org.call(token, "POST", "github/repos/acme/x/issues", json={"_method": "a word"})
    assert posted.status_code == 200, posted.text
    assert len(org.api.received) == 2


# ---- the audit log names the agent whenever its token verified ---------------------------


def test_a_verified_token_for_another_audience_is_recorded_with_its_agent(org: EgressOrg) -> None:
    """An agent probing the proxy with its MCP gateway token is refused (401) and the
    refusal names it, not ``anonymous``: its token verified, so Tether knows who it is."""
    bot = org.tether.registry.get(ADMIN, "bot")
    mcp = org.tether.tokens.client_credentials(bot, org.issuer, None, None).access_token
    answer = org.call(mcp, "GET", "github/repos/acme/x")
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_token"
    [refused] = org.events("egress.refused")
    assert refused.actor == bot.id
    assert org.call("not-a-token", "GET", "github/repos/acme/x").status_code == 401
    assert [e.actor for e in org.events("egress.refused")] == [bot.id, "anonymous"]


# ---- what agents choose cannot grow the proxy's memory without bound ---------------------


def test_names_and_hosts_an_agent_makes_up_are_not_remembered_without_bound(
    org: EgressOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request to a made-up destination name (and every CONNECT to a made-up host)
    was remembered for ever: an agent with any egress token could fill the proxy's memory.
    The look-ups are capped (here at 8); what is remembered still answers (404, no host)."""
    monkeypatch.setattr(engine, "REMEMBERED", 8)
    proxy = EgressProxy(org.tether)
    token = org.token("bot", None)

    async def status(name: str) -> int:
        outbound = Outbound(name, "GET", "/repos/acme/x", (), b"", "reverse")
        return (await proxy.exchange(token, outbound)).status

    async def attack() -> None:
        async with proxy.running():
            for i in range(40):
                assert await status(f"made-up-{i}") == 404
                assert proxy.destinations_at(f"h{i}.example", 443) == []
            assert len(proxy._known) <= 8 and len(proxy._hosts) <= 8  # white-box: the caches
            assert await status("made-up-1") == 404
            assert await status("github") == 200  # a real one is still found

    anyio.run(attack)


# ---- an agent can tell Tether's answers from the destination's -----------------------------


def test_a_destination_cannot_pass_its_answer_off_as_tethers(org: EgressOrg) -> None:
    """Tether's own answers carry ``tether-refused`` (and a held request
    ``tether-approval``): a destination that sends them would make an agent (or its
    SDK) take a 200 for a refusal, or wait on an approval Tether never made. Headers
    named ``tether-*`` are Tether's: a destination's are not passed on."""
    spoof = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"tether-refused: approval_required\r\ntether-approval: apr-made-up\r\n"
        b"x-kept: yes\r\ncontent-length: 2\r\n\r\n{}"
    )
    with canned(spoof) as server:
        org.tether.destinations.add(ADMIN, DestinationSpec("spoof", base=server.url, internal=True))
        org.tether.grants.add(ADMIN, GrantSpec("bot", "GET", "spoof/**"))
        answer = org.call(org.token("bot", "spoof"), "GET", "spoof/x")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-kept"] == "yes"
    assert "tether-refused" not in answer.headers and "tether-approval" not in answer.headers


# ---- the agent's token never goes upstream, however it is written --------------------------


@pytest.mark.parametrize("where", ["query", "form"])
def test_the_agents_token_percent_encoded_is_not_sent_upstream(org: EgressOrg, where: str) -> None:
    """The proxy refuses a request that carries the agent's own token in its target or
    body (the destination could replay it at Tether). Percent-encoded, it went through:
    the normaliser decodes the target (and sends JWT characters as themselves), and a
    form body is decoded by the destination."""
    token = org.token("bot")
    encoded = "".join(f"%{ord(c):02X}" for c in token)
    if where == "query":
        answer = org.call(token, "GET", f"github/repos/acme/x?t={encoded}")
    else:
        answer = org.call(
            token,
            "POST",
            "github/repos/acme/x/issues",
            content=f"title={encoded}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 400, answer.text
    assert "Tether token" in answer.json()["error_description"]
    assert org.api.received == []
    assert len(org.events("egress.refused")) == 1


def test_a_request_with_two_authorization_headers_is_refused_on_record(org: EgressOrg) -> None:
    """Two ``Authorization`` headers (which one is the agent's?) were refused without a
    record: an agent probing which of two tokens a server reads left no trace."""
    token = org.token("bot")
    headers = [("authorization", f"Bearer {token}"), ("authorization", "Bearer other")]
    with httpx.Client(base_url=org.url) as client:
        answer = client.get("/egress/github/repos/acme/x", headers=headers)
    assert answer.status_code == 400, answer.text
    [refused] = org.events("egress.refused")
    assert (refused.actor, refused.resource, refused.action) == ("anonymous", "github/*", "GET")
    assert token not in str(refused.to_dict())
    assert org.api.received == []
