"""Issue 18 §2: egress destinations (tether.upstreams.destinations, .injections) in the
library, the admin API (/v1/egress/destinations) and the CLI (tether egress ...), on
SQLite and PostgreSQL.

The inputs are red-teamed: base URLs, credential specs and OAuth clients an admin (or a
hostile paste) could give, names that clash with upstream MCP servers, people who are not
admins, labels outside the vocabulary; every change is recorded and moves the epoch, a
refusal is recorded and changes nothing, and no output ever holds a secret. Tokens for
``<issuer>/egress[/NAME]`` are issued only for destinations that exist, with the HTTP
method grants that fit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, initialised, served, spec
from helpers.people import IDP_ISSUER, idp_config, person_header, person_token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.errors import Conflict, Forbidden, InvalidRequest, InvalidScope, InvalidTarget, NotFound
from tether.grants import GrantSpec
from tether.upstreams.destinations import DestinationSpec
from tether.upstreams.injections import Injection, parse_base, parse_injection, parse_url
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
ALICE = Caller.user("alice@example.com")  # type: ignore[arg-type]
BOB = Caller.user("bob@example.com")  # type: ignore[arg-type]
SECRET = "ghp_s3cr3tVALUEthatMustNeverShow0123456789"
PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _github(**kw: Any) -> DestinationSpec:
    fields: dict[str, Any] = {
        "name": "github",
        "base": "https://api.github.com",
        "credentials": ("Authorization=Bearer {vault:github#token}",),
        "owner": "alice@example.com",
    }
    return DestinationSpec(**{**fields, **kw})


def _unchanged(tether: Tether, before: tuple[int, int]) -> bool:
    return (tether.events.size(), tether.epoch.current()) == before


def _marks(tether: Tether) -> tuple[int, int]:
    return tether.events.size(), tether.epoch.current()


# ---- the library: add, list, get, remove -------------------------------------------------


def test_an_admin_adds_shows_and_removes_a_destination(tether: Tether) -> None:
    epoch = tether.epoch.current()
    added = tether.destinations.add(ADMIN, _github(labels=("sensitive",)))
    assert (added.host, added.port, added.base_path, added.scheme) == (
        "api.github.com",
        443,
        "",
        "https",
    )
    assert added.credentials == (
        Injection("header", "Authorization", "vault:github#token", "Bearer {}"),
    )
    assert tether.epoch.current() > epoch
    assert tether.destinations.get("github") == added
    assert [d.name for d in tether.destinations.list()] == ["github"]
    assert tether.destinations.by_host("API.GitHub.com.", 443) == [added]
    assert tether.destinations.by_host("api.github.com", 80) == []
    [event] = tether.events.list(type="egress.destination_added")
    assert event.actor == "admin" and event.subject == "egress:github"
    assert event.detail["credentials"] == ["Authorization=Bearer {vault:github#token}"]
    assert event.detail["resource"] == f"{tether.settings.issuer}/egress/github"

    epoch = tether.epoch.current()
    tether.destinations.remove(ADMIN, "github", "moved to the new org")
    assert tether.epoch.current() > epoch
    [removed] = tether.events.list(type="egress.destination_removed")
    assert (removed.actor, removed.subject, removed.reason) == (
        "admin",
        "egress:github",
        "moved to the new org",
    )
    with pytest.raises(NotFound, match="no egress destination github"):
        tether.destinations.get("github")
    with pytest.raises(NotFound):
        tether.destinations.remove(ADMIN, "github")


@pytest.mark.parametrize(
    ("given", "normal", "host", "port", "path"),
    [
        ("HTTPS://API.GitHub.COM./", "https://api.github.com", "api.github.com", 443, ""),
        (
            "https://api.example.com:443/v1/",
            "https://api.example.com/v1",
            "api.example.com",
            443,
            "/v1",
        ),
        (
            "https://api.example.com:8443/v1/x",
            "https://api.example.com:8443/v1/x",
            "api.example.com",
            8443,
            "/v1/x",
        ),
        ("http://api.example.com:80", "http://api.example.com", "api.example.com", 80, ""),
        ("https://[2001:DB8::1]:8443/", "https://[2001:db8::1]:8443", "2001:db8::1", 8443, ""),
        ("https://10.1.2.3", "https://10.1.2.3", "10.1.2.3", 443, ""),
        (
            "https://xn--bcher-kva.example/",
            "https://xn--bcher-kva.example",
            "xn--bcher-kva.example",
            443,
            "",
        ),
        (
            "https://api.example.com/v1:beta/@me",
            "https://api.example.com/v1:beta/@me",
            "api.example.com",
            443,
            "/v1:beta/@me",
        ),
    ],
)
def test_base_urls_are_normalised(given: str, normal: str, host: str, port: int, path: str) -> None:
    assert parse_base(given) == (normal, normal.split(":", 1)[0], host, port, path)
    assert parse_base(normal)[0] == normal  # the normal form is a fixed point


BAD_BASES = [
    ("javascript:alert(1)", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("ftp://api.example.com", "http or https"),
    ("//api.example.com", "http or https"),
    ("https:api.example.com", "http or https"),
    ("https://u:p@api.example.com", "user information"),
    ("https://api.example.com@evil.example", "user information"),
    ("https://@api.example.com", "user information"),
    ("https://api.example.com/#frag", "fragment"),
    ("https://api.example.com/?q=1", "query"),
    ("https://api.example.com?", "query"),
    ("https://api.example.com/v1/../admin", "plain segments"),
    ("https://api.example.com/./v1", "plain segments"),
    ("https://api.example.com/v1//x", "plain segments"),
    ("https://api.example.com/v1;x=1", "plain segments"),
    ("https://api.example.com/%2e%2e/admin", "percent"),
    ("https://api.example.com\\@evil.example/", "backslash"),
    ("https://api.example.com/a\\b", "backslash"),
    ("https://[::1", "not a URL"),
    ("https://[fe80::1%25eth0]/", "percent"),
    ("https://[not:an:address]/", "IPv6"),
    ("https://127.1/", "ends in a number"),
    ("https://0x7f.1/", "ends in a number"),
    ("https://2130706433/", "ends in a number"),
    ("https://127.000.000.001/", "ends in a number"),
    ("https://api.example.com:0/", "port"),
    ("https://api.example.com:65536/", "port"),
    ("https://api.example.com:+443/", "host"),
    ("https://api.example.com:44a/", "host"),
    ("https://api..example.com/", "DNS name"),
    ("https://-api.example.com/", "DNS name"),
    ("https://api_x.example.com/", "DNS name"),
    ("https://" + "a" * 64 + ".example/", "DNS name"),
    ("https://bücher.example/", "printable ASCII"),
    ("https://api.example.com/\u202eevil", "printable ASCII"),
    ("https://api.example.com/v1\r\nHost: evil", "printable ASCII"),
    ("https://api.example.com/v1\x00", "printable ASCII"),
    ("https://api.example.com/v 1", "printable ASCII"),
    (" https://api.example.com", "printable ASCII"),
    ("https://api.example.com/" + "a" * 10_000, "printable ASCII"),
    ("https:///v1", "host"),
    ("https://", "host"),
    ("", "printable ASCII"),
]


@pytest.mark.parametrize(("base", "why"), BAD_BASES)
def test_hostile_base_urls_are_refused_and_change_nothing(
    tether: Tether, base: str, why: str
) -> None:
    before = _marks(tether)
    with pytest.raises(InvalidRequest, match=why):
        tether.destinations.add(ADMIN, _github(base=base, internal=True))
    assert tether.destinations.list() == [] and _unchanged(tether, before)


@given(st.text(max_size=80) | st.from_regex(r"https?://[\x21-\x7e]{0,60}", fullmatch=True))
@PROPERTY
def test_any_text_is_a_fixed_point_base_or_refused(text: str) -> None:
    """Whatever is given, the answer is InvalidRequest or a normal form that reads back
    as itself, made of a small alphabet (nothing a second parser could read otherwise)."""
    try:
        url = parse_url(text, "--base")
    except InvalidRequest:
        return
    assert parse_url(url.normal, "--base") == url
    assert not set(url.normal) & set("%\\?#@ \t\r\n\x00;")
    assert url.host == url.host.lower() and not url.host.endswith(".")


GOOD_CREDENTIALS = [
    (
        "Authorization=vault:github#token",
        Injection("header", "Authorization", "vault:github#token"),
    ),
    ("X-Api-Key=env:STRIPE_KEY", Injection("header", "X-Api-Key", "env:STRIPE_KEY")),
    (
        "Authorization=Bearer {vault:gh#token}",
        Injection("header", "Authorization", "vault:gh#token", "Bearer {}"),
    ),
    ("X-Key=key={env:K};v=2", Injection("header", "X-Key", "env:K", "key={};v=2")),
    ("query:api_key=env:MAPS_KEY", Injection("query", "api_key", "env:MAPS_KEY")),
    (
        "basic:svc-reader=vault:jira#password",
        Injection("basic", "svc-reader", "vault:jira#password"),
    ),
    ("basic:=env:PASSWORD_ONLY", Injection("basic", "", "env:PASSWORD_ONLY")),
]


@pytest.mark.parametrize(("text", "injection"), GOOD_CREDENTIALS)
def test_every_credential_form_reads_and_is_described_back(text: str, injection: Injection) -> None:
    assert parse_injection(text) == injection
    assert injection.describe() == text
    assert parse_injection(injection.describe()) == injection


BAD_CREDENTIALS = [
    ("Authorization=Bearer {env:A}\r\nX-Evil: 1", "printable ASCII"),
    ("Authorization=Bearer\x00 {env:A}", "printable ASCII"),
    ("Authorization=Bearer \n{env:A}", "printable ASCII"),
    ("Authorization=env:A\r\n", "environment variable"),
    ("X-Evil\r\nHost=env:A", "not a header"),
    ("Authorization= {env:A}", "blank"),
    ("Authorization={env:A} ", "blank"),
    ("Authorization=Bearer {env:A} {env:B}", "one {REF}"),
    ("Authorization=Bearer {}", "one {REF}"),
    ("Authorization=Bearer {env:A", "one {REF}"),
    ("Host=env:A", "not a header"),
    ("host=env:A", "not a header"),
    ("Content-Length=env:A", "not a header"),
    ("Transfer-Encoding=env:A", "not a header"),
    ("Connection=env:A", "not a header"),
    ("Proxy-Authorization=env:A", "not a header"),
    ("Upgrade=env:A", "not a header"),
    ("TE=env:A", "not a header"),
    ("Content-Type=env:A", "not a header"),
    ("Bad Header=env:A", "not a header"),
    ("=env:A", "not a header"),
    ("Authorization", "HEADER=REF"),
    ("Authorization=", "HEADER=REF"),
    ("Authorization=literal-secret", "never the secret"),
    ("Authorization=https://vault/x", "never the secret"),
    ("Authorization=vault-token:ci", "for agents"),
    ("Authorization=vault:github", "field"),
    ("Authorization=vault:../github#token", "vault"),
    ("Authorization=env:1BAD", "environment variable"),
    ("query:=env:A", "query parameter"),
    ("query:a b=env:A", "query parameter"),
    ("query:a&b=env:A", "query parameter"),
    ("basic:user:x=env:A", "basic-auth"),
    ("basic:us er=env:A", "basic-auth"),
    ("X-Key=" + "x" * 2000, "at most"),
]


@pytest.mark.parametrize(("text", "why"), BAD_CREDENTIALS)
def test_hostile_credential_specs_are_refused_and_change_nothing(
    tether: Tether, text: str, why: str
) -> None:
    before = _marks(tether)
    with pytest.raises(InvalidRequest, match=why):
        tether.destinations.add(ADMIN, _github(credentials=(text,)))
    assert tether.destinations.list() == [] and _unchanged(tether, before)


@pytest.mark.parametrize(
    ("credentials", "oauth"),
    [
        (("Authorization=env:A", "basic:u=env:B"), False),
        (("basic:u=env:A", "basic:v=env:B"), False),
        (("Authorization=env:A", "authorization=env:B"), False),
        (("Authorization=env:A",), True),
        (("basic:u=env:A",), True),
    ],
)
def test_one_source_sets_authorization(
    tether: Tether, credentials: tuple[str, ...], oauth: bool
) -> None:
    extra: dict[str, Any] = (
        {
            "oauth_token_url": "https://auth.example.com/token",
            "oauth_client_id": "tether",
            "oauth_client_secret": "env:CLIENT_SECRET",
        }
        if oauth
        else {}
    )
    with pytest.raises(InvalidRequest, match=r"one source sets Authorization|one value"):
        tether.destinations.add(ADMIN, _github(credentials=credentials, **extra))


def test_each_header_and_query_parameter_gets_one_value_and_at_most_sixteen(
    tether: Tether,
) -> None:
    with pytest.raises(InvalidRequest, match="one value"):
        tether.destinations.add(ADMIN, _github(credentials=("query:key=env:A", "query:key=env:B")))
    many = tuple(f"X-K{i}=env:K{i}" for i in range(17))
    with pytest.raises(InvalidRequest, match="at most 16"):
        tether.destinations.add(ADMIN, _github(credentials=many))
    distinct = ("query:key=env:A", "Key=env:B", "X-Other=env:C")  # a header and a param
    assert len(tether.destinations.add(ADMIN, _github(credentials=distinct)).credentials) == 3


def test_an_oauth_client_is_checked_and_kept_as_references(tether: Tether) -> None:
    added = tether.destinations.add(
        ADMIN,
        _github(
            credentials=(),
            oauth_token_url="https://AUTH.example.com/oauth/token?audience=api",
            oauth_client_id="tether-egress",
            oauth_client_secret="vault:oauth/stripe#secret",
            oauth_scope="read write",
        ),
    )
    assert added.oauth is not None
    assert added.oauth.to_dict() == {
        "token_url": "https://auth.example.com/oauth/token?audience=api",
        "client_id": "tether-egress",
        "client_secret": "vault:oauth/stripe#secret",
        "scope": "read write",
    }
    assert tether.destinations.get("github").oauth == added.oauth


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"oauth_token_url": "https://a.example/t"}, "needs --oauth-token-url"),
        ({"oauth_scope": "read"}, "needs an OAuth client"),
        (
            {"oauth_client_id": "c", "oauth_client_secret": "env:S"},
            "needs --oauth-token-url",
        ),
        (
            {
                "oauth_token_url": "http://auth.example.com/t",
                "oauth_client_id": "c",
                "oauth_client_secret": "env:S",
            },
            "must be https",
        ),
        (
            {
                "oauth_token_url": "https://u:p@auth.example.com/t",
                "oauth_client_id": "c",
                "oauth_client_secret": "env:S",
            },
            "user information",
        ),
        (
            {
                "oauth_token_url": "https://auth.example.com/t#x",
                "oauth_client_id": "c",
                "oauth_client_secret": "env:S",
            },
            "fragment",
        ),
        (
            {
                "oauth_token_url": "https://[::1/t",
                "oauth_client_id": "c",
                "oauth_client_secret": "env:S",
            },
            "not a URL",
        ),
        (
            {
                "oauth_token_url": "https://auth.example.com/t",
                "oauth_client_id": "c\r\nX: 1",
                "oauth_client_secret": "env:S",
            },
            "client-id",
        ),
        (
            {
                "oauth_token_url": "https://auth.example.com/t",
                "oauth_client_id": "c",
                "oauth_client_secret": SECRET,
            },
            "never the secret",
        ),
        (
            {
                "oauth_token_url": "https://auth.example.com/t",
                "oauth_client_id": "c",
                "oauth_client_secret": "env:S",
                "oauth_scope": "a\nb",
            },
            "scope",
        ),
    ],
)
def test_bad_oauth_clients_are_refused(tether: Tether, fields: dict[str, Any], why: str) -> None:
    before = _marks(tether)
    with pytest.raises(InvalidRequest, match=why):
        tether.destinations.add(ADMIN, _github(credentials=(), **fields))
    assert _unchanged(tether, before)


def test_credentials_travel_over_plain_http_only_inside_the_network(tether: Tether) -> None:
    with pytest.raises(InvalidRequest, match="https only"):
        tether.destinations.add(ADMIN, _github(base="http://api.example.com"))
    # without credentials, or internal, plain http is allowed
    tether.destinations.add(
        ADMIN, _github(name="open", base="http://api.example.com", credentials=())
    )
    inside = tether.destinations.add(
        ADMIN,
        _github(
            name="wiki",
            base="http://10.0.0.5:8080/api",
            internal=True,
            credentials=(),
            oauth_token_url="http://10.0.0.5:8080/token",
            oauth_client_id="c",
            oauth_client_secret="env:S",
        ),
    )
    assert inside.internal and inside.base == "http://10.0.0.5:8080/api"
    assert tether.destinations.get("wiki").internal is True


@pytest.mark.parametrize("name", ["GitHub", "a/b", "..", "-x", "a" * 64, "", "x y", "ok\n"])
def test_names_are_safe_path_segments(tether: Tether, name: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid destination name"):
        tether.destinations.add(ADMIN, _github(name=name))


def test_a_name_is_never_both_a_destination_and_an_upstream_server(tether: Tether) -> None:
    tether.destinations.add(ADMIN, _github())
    with pytest.raises(Conflict, match="egress destination named github"):
        tether.upstreams.add(ADMIN, UpstreamSpec("github", url="https://mcp.example/mcp"))
    with pytest.raises(Conflict, match="egress destination named github exists"):
        tether.destinations.add(ADMIN, _github(base="https://other.example"))
    tether.upstreams.add(ADMIN, UpstreamSpec("files", url="https://mcp.example/mcp"))
    before = _marks(tether)
    with pytest.raises(Conflict, match="upstream MCP server named files"):
        tether.destinations.add(ADMIN, _github(name="files"))
    assert _unchanged(tether, before)
    assert [d.name for d in tether.destinations.list()] == ["github"]


def test_only_admins_add_and_remove_and_each_refusal_is_recorded(tether: Tether) -> None:
    owner_admin = Caller.user("carol@example.com", admin=True)  # type: ignore[arg-type]
    with pytest.raises(Forbidden, match="only admins add"):
        tether.destinations.add(ALICE, _github())  # even as the owner it names
    assert tether.destinations.list() == []
    tether.destinations.add(owner_admin, _github())
    for who in (ALICE, BOB):
        with pytest.raises(Forbidden, match="only admins remove"):
            tether.destinations.remove(who, "github")
    assert [d.name for d in tether.destinations.list()] == ["github"]
    refused = tether.events.list(type="access.refused")
    assert [(e.actor, e.subject) for e in refused] == [
        ("user:alice@example.com", "egress:github"),
        ("user:alice@example.com", "egress:github"),
        ("user:bob@example.com", "egress:github"),
    ]
    assert [e.actor for e in tether.events.list(type="egress.destination_added")] == [
        "user:carol@example.com"
    ]


# ---- labels ------------------------------------------------------------------------------


def test_the_owner_labels_their_destination_and_a_stranger_cannot(tether: Tether) -> None:
    tether.destinations.add(ADMIN, _github())
    epoch = tether.epoch.current()
    changed = tether.destinations.label(ALICE, "github", add=["sensitive", "egress"])
    assert changed.labels == ("egress", "sensitive")
    assert tether.epoch.current() > epoch
    before = _marks(tether)
    with pytest.raises(Forbidden, match="only admins and its owner"):
        tether.destinations.label(BOB, "github", remove=["sensitive"])
    assert tether.destinations.get("github").labels == ("egress", "sensitive")
    [refusal] = tether.events.list(type="access.refused")
    assert (refusal.actor, refusal.subject) == ("user:bob@example.com", "egress:github")
    assert tether.epoch.current() == before[1]
    tether.destinations.label(ADMIN, "github", remove=["egress"])
    [first, second] = tether.events.list(type="egress.labelled")
    assert (first.actor, first.detail["labels"]) == (
        "user:alice@example.com",
        ["egress", "sensitive"],
    )
    assert (second.actor, second.detail) == (
        "admin",
        {"added": [], "removed": ["egress"], "labels": ["sensitive"]},
    )


def test_no_owner_means_only_admins_label(tether: Tether) -> None:
    tether.destinations.add(ADMIN, _github(owner=None))
    with pytest.raises(Forbidden):
        tether.destinations.label(ALICE, "github", add=["sensitive"])


@pytest.mark.parametrize(
    ("add", "remove", "why"),
    [
        (["secret"], [], "not a label"),
        (["Sensitive"], [], "not a label"),
        ([], ["exfil"], "not a label"),
        ([], [], "give a label"),
        (["egress"], ["egress"], "both added and removed"),
        (["plain"], [], "plain means none"),
    ],
)
def test_bad_label_changes_are_refused_and_change_nothing(
    tether: Tether, add: list[str], remove: list[str], why: str
) -> None:
    tether.destinations.add(ADMIN, _github(labels=("sensitive",)))
    before = _marks(tether)
    with pytest.raises(InvalidRequest, match=why):
        tether.destinations.label(ADMIN, "github", add=add, remove=remove)
    assert _unchanged(tether, before)
    assert tether.destinations.get("github").labels == ("sensitive",)


def test_labels_at_registration_are_checked(tether: Tether) -> None:
    with pytest.raises(InvalidRequest, match="not a label"):
        tether.destinations.add(ADMIN, _github(labels=("exfil",)))
    with pytest.raises(InvalidRequest, match="plain means none"):
        tether.destinations.add(ADMIN, _github(labels=("plain", "sensitive")))
    with pytest.raises(NotFound):
        tether.destinations.label(ADMIN, "nope", add=["egress"])


def test_a_change_that_changes_nothing_records_nothing(tether: Tether) -> None:
    tether.destinations.add(ADMIN, _github(labels=("sensitive",)))
    before = _marks(tether)
    tether.destinations.label(ALICE, "github", add=["sensitive"])
    assert _unchanged(tether, before)


def test_effective_labels_reach_the_decision_point(tether: Tether) -> None:
    """Unlabelled: [egress] unlabelled (untrusted + egress); plain: none; explicit: those."""
    tether.destinations.add(ADMIN, _github())
    github = tether.destinations.get("github")
    assert tether.destinations.effective_labels(github) == {"untrusted", "egress"}
    assert tether.labels.snapshot().of("GET", "github/repos/acme/x") == {"untrusted", "egress"}
    plain = tether.destinations.label(ADMIN, "github", add=["plain"])
    assert tether.destinations.effective_labels(plain) == frozenset()
    assert tether.labels.snapshot().of("POST", "github/x") == frozenset()
    sensitive = tether.destinations.label(ADMIN, "github", add=["sensitive"], remove=["plain"])
    assert tether.destinations.effective_labels(sensitive) == {"sensitive"}
    assert tether.labels.snapshot().of("DELETE", "github/x") == {"sensitive"}


def test_unlabelled_follows_the_setting(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(egress={"unlabelled": ["sensitive"]})
    first, _ = Tether.init(settings)
    first.close()
    with Tether.open(settings) as tether:
        tether.destinations.add(ADMIN, _github())
        github = tether.destinations.get("github")
        assert tether.destinations.effective_labels(github) == {"sensitive"}
        assert tether.destinations.view(ADMIN, github)["labels_from"] == "[egress] unlabelled"


def test_what_a_stranger_sees_is_what_an_agent_needs(tether: Tether) -> None:
    tether.destinations.add(ADMIN, _github())
    github = tether.destinations.get("github")
    issuer = tether.settings.issuer
    assert tether.destinations.view(BOB, github) == {
        "name": "github",
        "resource": f"{issuer}/egress/github",
        "route": f"{issuer}/egress/github/",
    }
    for who in (ADMIN, ALICE):
        full = tether.destinations.view(who, github)
        assert full["credentials"] == ["Authorization=Bearer {vault:github#token}"]
        assert full["proxy"] == "http://127.0.0.1:8701"
        assert full["labels_from"] == "[egress] unlabelled"


# ---- tokens for <issuer>/egress[/NAME] ---------------------------------------------------


@pytest.fixture
def bot(tether: Tether) -> Any:
    """Destinations github and stripe; agent bot with HTTP grants on both and a tool."""
    tether.destinations.add(ADMIN, _github())
    tether.destinations.add(
        ADMIN, _github(name="stripe", base="https://api.stripe.com/v1", credentials=())
    )
    agent = tether.registry.register(ADMIN, spec("bot"))
    for action, resource in (
        ("GET", "github/repos/acme/**"),
        ("POST", "stripe/charges"),
        ("tools/call", "files/read"),
    ):
        tether.grants.add(ADMIN, GrantSpec(principal="bot", action=action, resource=resource))
    return agent


def test_a_token_for_one_destination_carries_its_http_grants(tether: Tether, bot: Any) -> None:
    issuer = tether.settings.issuer
    token = tether.tokens.client_credentials(bot, f"{issuer}/egress/github", None)
    assert token.scope == "GET:github/repos/acme/**"
    verified = tether.tokens.verify(token.access_token, f"{issuer}/egress/github")
    assert [str(p) for p in verified.scope] == ["GET:github/repos/acme/**"]
    whole = tether.tokens.client_credentials(bot, f"{issuer}/egress", None)
    assert whole.scope.split() == ["GET:github/repos/acme/**", "POST:stripe/charges"]
    narrowed = tether.tokens.client_credentials(
        bot, f"{issuer}/egress/github", "GET:github/repos/acme/x"
    )
    assert narrowed.scope == "GET:github/repos/acme/x"


@pytest.mark.parametrize(
    ("audience", "scope", "error"),
    [
        ("/egress/github", "POST:stripe/charges", InvalidScope),  # another destination's
        ("/egress/github", "tools/call:github/x", InvalidScope),  # not an HTTP method
        ("/egress/github", "GET:github/repos/other/x", InvalidScope),  # beyond the grant
        ("/egress/github", "DELETE:github/repos/acme/x", InvalidScope),
        ("/egress", "tools/call:files/read", InvalidScope),
        ("/egress/gitlab", None, InvalidTarget),  # no such destination
        ("/egress/GitHub", None, InvalidTarget),
        ("/egress/github/", None, InvalidTarget),
        ("/egress/github/repos", None, InvalidTarget),
        ("/egress/", None, InvalidTarget),
    ],
)
def test_tokens_beyond_the_destination_or_its_grants_are_refused(
    tether: Tether, bot: Any, audience: str, scope: str | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        tether.tokens.client_credentials(bot, tether.settings.issuer + audience, scope)


def test_a_removed_destination_gets_no_more_tokens(tether: Tether, bot: Any) -> None:
    audience = f"{tether.settings.issuer}/egress/github"
    assert tether.tokens.client_credentials(bot, audience, None).scope
    tether.destinations.remove(ADMIN, "github", "gone")
    with pytest.raises(InvalidTarget, match="names no egress destination"):
        tether.tokens.client_credentials(bot, audience, None)


# ---- the admin API -----------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    with served(make_settings, tmp_path, IDP_ISSUER, admin_groups=("security-admins",)) as up:
        yield up


BODY = {
    "name": "github",
    "base": "https://api.github.com",
    "credentials": ["Authorization=Bearer {vault:github#token}"],
    "owner": "alice@example.com",
}


def test_the_api_adds_shows_labels_and_removes(api: Any) -> None:
    carol = person_header(api.idp_key, "carol@example.com", ["security-admins"])
    alice = person_header(api.idp_key, "alice@example.com")
    response = api.client.post("/v1/egress/destinations", json=BODY, headers=carol)
    assert response.status_code == 201, response.text
    added = response.json()
    issuer = api.tether.settings.issuer
    assert added["resource"] == f"{issuer}/egress/github"
    assert added["route"] == f"{issuer}/egress/github/"
    assert added["effective_labels"] == ["egress", "untrusted"]
    assert added["labels_from"] == "[egress] unlabelled"
    response = api.client.get("/v1/egress/destinations/github", headers=alice)
    assert response.json()["credentials"] == BODY["credentials"]
    response = api.client.post(
        "/v1/egress/destinations/github/labels", json={"add": ["sensitive"]}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.json()["labels"] == ["sensitive"]
    assert response.json()["labels_from"] == "explicit"
    listed = api.client.get("/v1/egress/destinations", headers=api.admin).json()
    assert [d["name"] for d in listed["destinations"]] == ["github"]
    response = api.client.delete(
        "/v1/egress/destinations/github", params={"reason": "done"}, headers=api.admin
    )
    assert response.status_code == 200 and response.json() == {"removed": "github"}
    response = api.client.get("/v1/egress/destinations/github", headers=api.admin)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert [e.actor for e in api.tether.events.list(type="egress.destination_added")] == [
        "user:carol@example.com"
    ]


def test_the_api_refuses_people_who_are_not_admins_and_records_it(api: Any) -> None:
    alice = person_header(api.idp_key, "alice@example.com")
    bob = person_header(api.idp_key, "bob@example.com")
    response = api.client.post("/v1/egress/destinations", json=BODY, headers=alice)
    assert response.status_code == 403 and response.json()["error"] == "access_denied"
    assert api.client.post("/v1/egress/destinations", json=BODY, headers=api.admin).is_success
    for method, path, kwargs in (
        ("DELETE", "/v1/egress/destinations/github", {}),
        ("POST", "/v1/egress/destinations/github/labels", {"json": {"add": ["plain"]}}),
    ):
        response = api.client.request(method, path, headers=bob, **kwargs)
        assert response.status_code == 403, response.text
        assert set(response.json()) == {"error", "error_description"}
    response = api.client.delete("/v1/egress/destinations/github", headers=alice)
    assert response.status_code == 403  # the owner labels, only admins remove
    refused = api.tether.events.list(type="access.refused")
    assert [e.actor for e in refused] == [
        "user:alice@example.com",
        "user:bob@example.com",
        "user:bob@example.com",
        "user:alice@example.com",
    ]
    # a stranger sees what an agent needs, never the definition
    shown = api.client.get("/v1/egress/destinations/github", headers=bob).json()
    assert set(shown) == {"name", "resource", "route"}
    listed = api.client.get("/v1/egress/destinations", headers=bob).json()["destinations"]
    assert [set(d) for d in listed] == [{"name", "resource", "route"}]
    response = api.client.get("/v1/egress/destinations")
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "body",
    [
        {**BODY, "extra": 1},
        {**BODY, "internal": "yes"},
        {**BODY, "internal": 1},
        {**BODY, "credentials": "Authorization=env:A"},
        {**BODY, "credentials": [f"X-K{i}=env:K{i}" for i in range(17)]},
        {**BODY, "labels": ["egress"] * 9},
        {**BODY, "labels": [1]},
        {**BODY, "name": 7},
        {**BODY, "base": None},
        {**BODY, "oauth": {"token_url": "https://a.example/t", "client_id": "c", "x": 1}},
        {**BODY, "oauth": "https://a.example/t"},
        {k: v for k, v in BODY.items() if k != "base"},
        {**BODY, "base": "https://u:p@api.github.com"},
        {**BODY, "base": "https://127.1"},
        {**BODY, "credentials": ["Host=env:A"]},
        {**BODY, "oauth": {"scope": "read"}},
        {**BODY, "owner": "not-an-email"},
    ],
)
def test_the_api_answers_bad_bodies_with_400_never_422(api: Any, body: Any) -> None:
    before = api.tether.events.size()
    response = api.client.post("/v1/egress/destinations", json=body, headers=api.admin)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == "invalid_request"
    assert api.tether.events.size() == before
    for text in ("not json", "[]", '{"name": "x"'):
        response = api.client.post(
            "/v1/egress/destinations",
            content=text,
            headers={**api.admin, "content-type": "application/json"},
        )
        assert response.status_code == 400, response.text


def test_the_api_answers_conflicts_and_unknown_names(api: Any) -> None:
    assert api.client.post("/v1/egress/destinations", json=BODY, headers=api.admin).is_success
    response = api.client.post("/v1/egress/destinations", json=BODY, headers=api.admin)
    assert response.status_code == 409 and response.json()["error"] == "conflict"
    response = api.client.post(
        "/v1/gateway/servers",
        json={"name": "github", "url": "https://mcp.example/mcp"},
        headers=api.admin,
    )
    assert response.status_code == 409
    for method, path in (
        ("GET", "/v1/egress/destinations/nope"),
        ("DELETE", "/v1/egress/destinations/nope"),
    ):
        response = api.client.request(method, path, headers=api.admin)
        assert response.status_code == 404, response.text
    response = api.client.get("/v1/egress/destinations/..%2Fagents", headers=api.admin)
    assert response.status_code in (400, 404)
    assert set(response.json()) == {"error", "error_description"}


def test_every_operation_is_described_in_the_openapi_document(api: Any) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    operations = {
        (method, path): op
        for path, ops in paths.items()
        if path.startswith("/v1/egress/")
        for method, op in ops.items()
    }
    assert set(operations) == {
        ("get", "/v1/egress/destinations"),
        ("post", "/v1/egress/destinations"),
        ("get", "/v1/egress/destinations/{name}"),
        ("delete", "/v1/egress/destinations/{name}"),
        ("post", "/v1/egress/destinations/{name}/labels"),
    }
    for op in operations.values():
        assert op["summary"] and op["description"] and op["tags"] == ["egress"]


# ---- the CLI -----------------------------------------------------------------------------


def test_the_cli_adds_lists_shows_labels_and_removes(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = initialised(Cli(capsys))
    added = cli.json(
        "egress", "add", "github", "--base", "https://api.github.com",
        "--credential", "Authorization=Bearer {vault:github#token}",
        "--owner", "alice@example.com",
    )  # fmt: skip
    assert added["resource"] == "http://127.0.0.1:8700/egress/github"
    stripe = cli.json(
        "egress", "add", "stripe", "--base", "https://api.stripe.com/v1",
        "--oauth-token-url", "https://auth.stripe.example/token",
        "--oauth-client-id", "tether", "--oauth-client-secret", "env:STRIPE_SECRET",
        "--oauth-scope", "charges", "--label", "sensitive", "--label", "egress",
    )  # fmt: skip
    assert stripe["oauth"]["client_secret"] == "env:STRIPE_SECRET"
    assert stripe["labels"] == ["egress", "sensitive"]
    wiki = cli.json(
        "egress", "add", "wiki", "--base", "http://10.0.0.5:8080", "--internal",
        "--credential", "basic:reader=env:WIKI_PASSWORD",
    )  # fmt: skip
    assert wiki["internal"] is True
    listed = cli.json("egress", "list")
    assert [d["name"] for d in listed["destinations"]] == ["github", "stripe", "wiki"]

    code, out, err = cli("egress", "show", "github")
    assert code == 0, err
    assert "http://127.0.0.1:8700/egress/github/" in out  # the route
    assert "--audience" in out and "http://127.0.0.1:8700/egress/github " in out
    assert "HTTPS_PROXY=http://agent:$TOKEN@127.0.0.1:8701" in out
    assert "Authorization=Bearer {vault:github#token}" in out
    assert "egress, untrusted (the [egress] unlabelled default" in out
    code, out, err = cli("egress", "show", "stripe")
    assert "OAuth client tether at https://auth.stripe.example/token" in out
    assert "(secret env:STRIPE_SECRET, scope charges)" in out
    assert "unlabelled" not in out
    code, out, err = cli("egress", "list")
    assert code == 0 and "basic:reader=env:WIKI_PASSWORD" in out

    labelled = cli.json("egress", "label", "github", "--add", "sensitive")
    assert labelled["effective_labels"] == ["sensitive"]
    code, out, err = cli("egress", "label", "github", "--remove", "sensitive")
    assert code == 0 and "unlabelled default" in out
    assert cli.json("egress", "remove", "wiki", "--reason", "retired") == {"removed": "wiki"}
    [event] = [e for e in cli_events(cli) if e["type"] == "egress.destination_removed"]
    assert event["reasons"] == ["retired"]


def cli_events(cli: Cli) -> list[dict[str, Any]]:
    return list(cli.json("audit", "search")["events"])


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (("egress", "add", "x", "--base", "file:///etc/passwd"), 2, "http or https"),
        (
            ("egress", "add", "x", "--base", "https://h.example", "--credential", "Host=env:A"),
            2,
            "not a header",
        ),
        (
            ("egress", "add", "x", "--base", "https://h.example", "--oauth-scope", "s"),
            2,
            "needs an OAuth client",
        ),
        (
            ("egress", "add", "x", "--base", "https://h.example", "--oauth-client-id", "c"),
            2,
            "needs --oauth-token-url",
        ),
        (
            ("egress", "add", "x", "--base", "https://h.example", "--label", "secret"),
            2,
            "not a label",
        ),
        (("egress", "add", "X", "--base", "https://h.example"), 2, "invalid destination name"),
        (("egress", "add", "taken", "--base", "https://h.example"), 1, "exists already"),
        (("egress", "show", "nope"), 1, "no egress destination nope"),
        (("egress", "remove", "nope"), 1, "no egress destination nope"),
        (("egress", "label", "taken"), 2, "give a label"),
        (("egress", "label", "taken", "--add", "plain", "--add", "egress"), 2, "plain means none"),
    ],
)
def test_the_cli_exit_codes_and_errors(
    cli_env: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, says: str
) -> None:
    cli = initialised(Cli(capsys))
    cli.json("egress", "add", "taken", "--base", "https://taken.example")
    got, out, err = cli(*argv)
    assert got == code, (out, err)
    assert says in err and "Traceback" not in out + err
    got, out, err = cli(*argv, "--json")
    assert got == code
    document = json.loads(out)  # one JSON document, the error
    assert says in document["error_description"]


def test_the_cli_refuses_a_person_who_is_not_an_admin_with_exit_3(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    idp_key, idp_lines = idp_config(tmp_path)
    cli_env.mkdir()
    (cli_env / "tether.toml").write_text(idp_lines)
    cli = initialised(Cli(capsys))
    cli.json(
        "egress",
        "add",
        "github",
        "--base",
        "https://api.github.com",
        "--owner",
        "alice@example.com",
    )
    for email, argv, code in (
        ("bob@example.com", ("egress", "add", "x", "--base", "https://x.example"), 3),
        ("bob@example.com", ("egress", "remove", "github"), 3),
        ("bob@example.com", ("egress", "label", "github", "--add", "sensitive"), 3),
        ("alice@example.com", ("egress", "label", "github", "--add", "sensitive"), 0),
        ("alice@example.com", ("egress", "remove", "github"), 3),
    ):
        monkeypatch.setenv("TETHER_TOKEN", person_token(idp_key, email))
        got, out, err = cli(*argv)
        assert got == code, (email, argv, out, err)
    shown = cli.json("egress", "show", "github")  # alice, the owner, sees the definition
    assert shown["labels"] == ["sensitive"]
    monkeypatch.setenv("TETHER_TOKEN", person_token(idp_key, "bob@example.com"))
    assert set(cli.json("egress", "show", "github")) == {"name", "resource", "route"}
    code, out, _ = cli("egress", "list")
    assert code == 0 and "(hidden)" in out
    monkeypatch.delenv("TETHER_TOKEN")
    refused = [e for e in cli_events(cli) if e["type"] == "access.refused"]
    assert [e["actor"] for e in refused] == ["user:bob@example.com"] * 3 + [
        "user:alice@example.com"
    ]


def test_secrets_never_reach_any_output(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secrets live in the environment; what is shown, recorded or exported names
    them. A secret pasted where a reference belongs is refused without being echoed."""
    monkeypatch.setenv("GH_TOKEN", SECRET)
    monkeypatch.setenv("CLIENT_SECRET", SECRET + "-client")
    cli = initialised(Cli(capsys))
    outputs: list[str] = []
    for argv in (
        ("egress", "add", "github", "--base", "https://api.github.com",
         "--credential", "Authorization=Bearer {env:GH_TOKEN}", "--credential",
         "query:key=env:GH_TOKEN"),
        ("egress", "add", "stripe", "--base", "https://api.stripe.com",
         "--oauth-token-url", "https://auth.example/t", "--oauth-client-id", "c",
         "--oauth-client-secret", "env:CLIENT_SECRET"),
        ("egress", "add", "pasted", "--base", "https://x.example", "--credential",
         f"Authorization={SECRET}"),
        ("egress", "add", "pasted", "--base", "https://x.example", "--credential",
         f"Authorization=Bearer {{{SECRET}}}"),
        ("egress", "add", "pasted", "--base", "https://x.example", "--credential", SECRET),
        ("egress", "add", "pasted", "--base", "https://x.example", "--oauth-token-url",
         "https://a.example/t", "--oauth-client-id", "c", "--oauth-client-secret", SECRET),
        ("egress", "add", "pasted", "--base", "https://x.example", "--credential",
         f"query:key={SECRET}"),
        ("egress", "list"),
        ("egress", "show", "github"),
        ("egress", "show", "stripe"),
        ("egress", "label", "github", "--add", "sensitive"),
        ("egress", "remove", "stripe"),
        ("audit", "search"),
        ("audit", "export", "--format", "jsonl"),
    ):  # fmt: skip
        for extra in ((), ("--json",)):
            _, out, err = cli(*argv, *extra)
            outputs.append(out + err)
    everything = "\n".join(outputs)
    assert "env:GH_TOKEN" in everything and "env:CLIENT_SECRET" in everything
    assert "never the secret itself" in everything
    assert SECRET not in everything
    assert [d["name"] for d in cli.json("egress", "list")["destinations"]] == ["github"]


def test_tokens_for_a_destination_from_the_cli(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = initialised(Cli(capsys))
    cli.json("egress", "add", "github", "--base", "https://api.github.com")
    cli.json("agent", "register", "bot", "--owner", "alice@example.com")
    cli.json("grant", "add", "bot", "--action", "GET", "--resource", "github/repos/acme/**")
    audience = "http://127.0.0.1:8700/egress/github"
    code, token, err = cli("token", "issue", "bot", "--audience", audience)
    assert code == 0, err
    claims = cli.json("token", "inspect", token.strip())
    assert claims["aud"] == audience and claims["scope"] == "GET:github/repos/acme/**"
    code, _, err = cli("token", "issue", "bot", "--audience", audience, "--scope", "POST:github/x")
    assert code == 3 and "beyond the agent's grants" in err
    code, _, err = cli("token", "issue", "bot", "--audience", "http://127.0.0.1:8700/egress/nope")
    assert code == 3 and "names no egress destination" in err
    cli.json("egress", "remove", "github")
    code, _, err = cli("token", "issue", "bot", "--audience", audience)
    assert code == 3 and "names no egress destination" in err
