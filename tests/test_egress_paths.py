"""Request-target normalisation for the egress proxy (tether.egress.paths, docs/egress-paths.md).

Tables for every trick the issue names (each refused or normalised as documented), then
properties against the API stand-in's own parser (the standard library's ``http.server``
and ``urllib.parse``): whatever Tether accepts, it sends upstream byte for byte on a raw
socket, and the stand-in reads exactly the path and query Tether decided on, so no trick
reaches a resource a grant does not cover.
"""

from __future__ import annotations

import re
import socket
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.api_standin import Received, StandIn, standin
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tether.egress import paths
from tether.egress.paths import (
    MAX_QUERY_PAIRS,
    MAX_TARGET,
    BadTarget,
    Target,
    normalise,
    normalise_host,
    resource,
    within,
)
from tether.errors import InvalidRequest
from tether.permissions import check_resource, pattern_matches

LIVE = settings(max_examples=200, deadline=None)
PROPERTY = settings(max_examples=400, deadline=None)


def refused(target: str, base_path: str = "", *, absolute: bool = False) -> str:
    with pytest.raises(BadTarget) as caught:
        normalise(target, base_path, absolute=absolute)
    return caught.value.description


# --- the path, reverse mode ------------------------------------------------------------

NORMALISED = [
    # (target, path, trailing slash)
    ("", "", False),
    ("/", "", True),
    ("/repos/acme/x", "repos/acme/x", False),
    ("/repos/acme/x/", "repos/acme/x", True),
    ("/repos/acme/%2e%2e/x", "repos/x", False),
    ("/repos/acme/%2E%2e/x", "repos/x", False),
    ("/repos/acme/.%2E/x", "repos/x", False),
    ("/repos/acme/%2e%2e/", "repos", True),
    ("/repos/./acme/x", "repos/acme/x", False),
    ("/repos/%2e/acme", "repos/acme", False),
    ("//repos//acme///x", "repos/acme/x", False),
    ("/repos/acme/x/.", "repos/acme/x", True),
    ("/repos/acme/x/..", "repos/acme", True),
    ("/Repos/ACME/X", "Repos/ACME/X", False),  # paths are case-sensitive
    ("/repos/%61cme/%41", "repos/acme/A", False),  # mixed-case escapes of plain letters
    ("/repos/%61CME", "repos/aCME", False),
    ("/%7euser/a+b", "~user/a+b", False),  # '+' in a path is a plus
    ("/a:b@c=d,e", "a:b@c=d,e", False),
    ("/x/" + "/".join("s" for _ in range(14)), "x/" + "/".join("s" for _ in range(14)), False),
]


@pytest.mark.parametrize(("target", "path", "trailing"), NORMALISED)
def test_paths_are_normalised_as_documented(target: str, path: str, trailing: bool) -> None:
    found = normalise(target, "", absolute=False)
    assert (found.path, found.trailing_slash, found.query) == (path, trailing, ())
    check_resource("GET", resource("github", found))


REFUSED = [
    # (target, what the reason says)
    ("/%2e%2e/x", "climbs above"),
    ("/repos/../../x", "climbs above"),
    ("/repos/acme/%2e%2e/%2E%2E/%2e%2e", "climbs above"),
    ("/..", "climbs above"),
    ("/repos/acme..%2f..%2fadmin", "encoded slash"),
    ("/repos/..%2f", "encoded slash"),
    ("/repos/%2Fetc", "encoded slash"),
    ("/repos/%252e%252e/admin", "encoded '%'"),
    ("/repos/%25", "encoded '%'"),
    ("/repos/acme;x/..;/admin", "';'"),
    ("/repos/..;/admin", "';'"),
    ("/repos;/acme", "';'"),
    ("/repos/%3b", "';'"),
    ("/repos/%3B/x", "';'"),
    ("/repos\\admin", "backslash"),
    ("/repos/%5cadmin", "backslash"),
    ("/repos/%5C..%5Cadmin", "backslash"),
    ("/repos/%c0%ae%c0%ae/admin", "not valid UTF-8"),  # overlong '.'
    ("/repos/%c0%af", "not valid UTF-8"),  # overlong '/'
    ("/repos/%e0%80%ae", "not valid UTF-8"),  # three-byte overlong '.'
    ("/repos/%ed%a0%80", "not valid UTF-8"),  # a surrogate
    ("/repos/%ff", "not valid UTF-8"),
    ("/repos/%ef%bc%8f", "a grant cannot name it"),  # fullwidth solidus
    ("/repos/%ef%bc%8e%ef%bc%8e", "a grant cannot name it"),  # fullwidth full stops
    ("/repos/%c3%a9", "a grant cannot name it"),
    ("/repos/%20", "a grant cannot name it"),
    ("/repos/a%3fb", "a grant cannot name it"),
    ("/repos/%23", "a grant cannot name it"),
    ("/repos/*", "a grant cannot name it"),
    ("/repos/%00", "control"),
    ("/repos/%0d%0aX-Injected:%201", "control"),
    ("/repos/%7f", "control"),
    ("/repos/\r\nX: 1", "a control"),
    ("/repos/\x00", "a control"),
    ("/repos/a b", "a space"),
    ("/repos/é", "non-ASCII"),
    ("/repos/x#frag", "fragment"),
    ("/repos/%", "malformed"),
    ("/repos/%2", "malformed"),
    ("/repos/%zz", "malformed"),
    ("/repos/%+1", "malformed"),
    ("/repos/%%32%65", "malformed"),
    ("/repos/...", "dots only"),
    ("/repos/%2e%2e%2e", "dots only"),
    ("repos/acme", "does not start with '/'"),
    ("/" + "/".join("s" for _ in range(16)), "more than 15 segments"),
    ("/" + "x" * MAX_TARGET, "longer than"),
]


@pytest.mark.parametrize(("target", "reason"), REFUSED)
def test_tricks_are_refused_with_a_reason(target: str, reason: str) -> None:
    description = refused(target)
    assert reason in description
    assert len(description) < 400  # never the whole input echoed back


def test_a_refusal_is_an_invalid_request_of_status_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalise("/a/%2f", "", absolute=False)
    assert caught.value.status_code == 400
    assert caught.value.to_dict()["error"] == "invalid_request"


def test_the_public_names_are_pinned() -> None:
    assert paths.__all__ == [
        "BadTarget",
        "Target",
        "normalise",
        "normalise_host",
        "resource",
        "within",
    ]


def test_the_docs_table_is_what_tether_does() -> None:
    doc = Path(__file__).parents[1] / "docs" / "egress-paths.md"
    rows = re.findall(
        r"^\| `/egress/github([^`]*)`.*? \| `([^`]+)` \| `([^`]+)` \|$", doc.read_text(), re.M
    )
    assert len(rows) >= 7
    for target, name, upstream in rows:
        found = normalise(target, "", absolute=False)
        assert (resource("github", found), found.upstream) == (name, upstream), target


# --- the base path and forward mode ----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "base_path", "path", "upstream"),
    [
        ("/v1/things", "/v1", "things", "/v1/things"),
        ("/v1", "/v1", "", "/v1"),
        ("/v1/", "/v1", "", "/v1/"),
        ("/v1?a=1", "/v1", "", "/v1?a=1"),
        ("//v1//things", "/v1", "things", "/v1/things"),
        ("/%76%31/things", "/v1", "things", "/v1/things"),
        ("/api/v1/x", "/api/v1", "x", "/api/v1/x"),
        ("/api//v1/x", "/api/v1", "x", "/api/v1/x"),
        ("/", "", "", "/"),
        ("/repos/x", "", "repos/x", "/repos/x"),
    ],
)
def test_forward_targets_carry_the_base_path(
    target: str, base_path: str, path: str, upstream: str
) -> None:
    found = normalise(target, base_path, absolute=True)
    assert (found.path, found.upstream) == (path, upstream)


@pytest.mark.parametrize(
    ("target", "base_path", "reason"),
    [
        ("/v1x", "/v1", "not under"),
        ("/v1x/things", "/v1", "not under"),
        ("/v2/x", "/v1", "not under"),
        ("/V1/x", "/v1", "not under"),
        ("/", "/v1", "not under"),
        ("/./v1/x", "/v1", "not under"),
        ("/api/x", "/api/v1", "not under"),
        ("/v1/../v2/x", "/v1", "climbs above"),
        ("/v1/%2e%2e/v1/x", "/v1", "climbs above"),
        ("/v1/..", "/v1", "climbs above"),
        ("/v1%2fx", "/v1", "encoded slash"),
        ("http://api.example.com/v1/x", "/v1", "origin form"),
        ("*", "", "origin form"),
        ("", "", "origin form"),
        ("?a=1", "", "origin form"),
    ],
)
def test_forward_targets_outside_the_base_are_refused(
    target: str, base_path: str, reason: str
) -> None:
    assert reason in refused(target, base_path, absolute=True)


def test_reverse_targets_are_relative_to_the_base_path() -> None:
    found = normalise("/things/%2e%2e/other", "/v1", absolute=False)
    assert (found.path, found.upstream) == ("other", "/v1/other")
    assert normalise("", "/v1", absolute=False).upstream == "/v1"
    assert normalise("/", "/v1", absolute=False).upstream == "/v1/"
    assert normalise("?a=b", "/v1", absolute=False).upstream == "/v1?a=b"
    assert "climbs above" in refused("/%2e%2e/v2", "/v1")


# --- the query ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "pairs", "upstream"),
    [
        ("a=1&b=2", (("a", "1"), ("b", "2")), "a=1&b=2"),
        ("b=2&a=1&b=3", (("b", "2"), ("a", "1"), ("b", "3")), "b=2&a=1&b=3"),
        ("flag", (("flag", ""),), "flag="),
        ("a=&b", (("a", ""), ("b", "")), "a=&b="),
        ("q=a+b", (("q", "a b"),), "q=a%20b"),
        ("q=a%2Bb", (("q", "a+b"),), "q=a%2Bb"),
        ("q=a%20b", (("q", "a b"),), "q=a%20b"),
        ("q=x;y=z", (("q", "x;y=z"),), "q=x%3By%3Dz"),  # no second separator upstream
        ("q=%C3%A9t%c3%a9", (("q", "été"),), "q=%C3%A9t%C3%A9"),
        ("a=1&&b=2&", (("a", "1"), ("b", "2")), "a=1&b=2"),
        ("to=/a?b&c", (("to", "/a?b"), ("c", "")), "to=%2Fa%3Fb&c="),
        ("%61=%2e%2e%2f", (("a", "../"),), "a=..%2F"),
        ("=x", (("", "x"),), "=x"),
        ("", (), ""),
    ],
)
def test_queries_are_decoded_and_reencoded_canonically(
    query: str, pairs: tuple[tuple[str, str], ...], upstream: str
) -> None:
    found = normalise(f"/search?{query}", "", absolute=False)
    assert found.query == pairs
    assert found.upstream == ("/search?" + upstream if upstream else "/search")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("q=%25", "encoded '%'"),
        ("q=%2573ecret", "encoded '%'"),
        ("q=%00", "control"),
        ("q=%0d%0a", "control"),
        ("q=%c2%85", "control"),  # NEL, a C1 control
        ("q=%c0%ae", "not valid UTF-8"),
        ("q=%ff", "not valid UTF-8"),
        ("q=%", "malformed"),
        ("q=%g1", "malformed"),
        ("%zz=1", "malformed"),
        ("q=a#b", "fragment"),
        ("q=a b", "a space"),
        ("&".join(f"p{i}=1" for i in range(MAX_QUERY_PAIRS + 1)), "more than 256"),
    ],
)
def test_bad_queries_are_refused(query: str, reason: str) -> None:
    assert reason in refused(f"/search?{query}")


def test_the_most_query_pairs_pass() -> None:
    query = "&".join(f"p{i}=1" for i in range(MAX_QUERY_PAIRS))
    assert len(normalise(f"/s?{query}", "", absolute=False).query) == MAX_QUERY_PAIRS


# --- the resource ------------------------------------------------------------------------


def test_the_resource_names_the_destination_and_the_path() -> None:
    assert resource("github", normalise("", "", absolute=False)) == "github"
    assert resource("github", normalise("/", "", absolute=False)) == "github"
    assert resource("github", normalise("/repos/x/", "", absolute=False)) == "github/repos/x"


def test_a_resource_longer_than_a_grant_can_name_is_refused() -> None:
    target = normalise("/" + "x" * 600, "", absolute=False)
    with pytest.raises(BadTarget, match="longer than 512"):
        resource("github", target)


# --- hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("API.GitHub.com", "api.github.com"),
        ("api.github.com.", "api.github.com"),
        ("xn--exmple-cua.com", "xn--exmple-cua.com"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[0:0::1]", "::1"),
        ("[::FFFF:127.0.0.1]", "::ffff:7f00:1"),
        ("[2001:DB8::1]", "2001:db8::1"),
    ],
)
def test_hosts_are_normalised(host: str, normal: str) -> None:
    assert normalise_host(host) == normal


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "127.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "127.000.0.1",
        "example.123",
        "[fe80::1%25eth0]",
        "fe80::1%eth0",
        "[127.0.0.1]",
        "[::1",
        "exämple.com",
        "ex ample.com",
        "a..b",
        "-a.com",
        "a-.com",
        "a_b.com",
        "host:443",
        "evil.com/x",
        "user@host",
        "a" * 64 + ".com",
        ".".join(["a" * 60] * 5),
        "a\x00.com",
    ],
)
def test_junk_hosts_are_refused(host: str) -> None:
    with pytest.raises(BadTarget):
        normalise_host(host)


# --- redirects ---------------------------------------------------------------------------

BASE = ("https", "api.example.com", 443, "/v1")
CURRENT = "/v1/a/b?x=1"


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/v1/c", "/v1/c"),
        ("c", "/v1/a/c"),
        ("../c", "/v1/c"),
        ("./c/", "/v1/a/c/"),
        ("?y=2", "/v1/a/b?y=2"),
        ("/v1/c?q=a+b#top", "/v1/c?q=a%20b"),
        ("https://api.example.com/v1/c", "/v1/c"),
        ("https://API.Example.COM:443/v1/c#frag", "/v1/c"),
        ("https://api.example.com./v1/c", "/v1/c"),
        ("https://api.example.com:/v1/c", "/v1/c"),
        ("HTTPS://api.example.com/v1", "/v1"),
        ("//api.example.com/v1/c", "/v1/c"),
        ("/v1//c/%2e/d", "/v1/c/d"),
    ],
)
def test_redirects_within_the_destination_are_followed(location: str, target: str) -> None:
    assert within(*BASE, location, CURRENT) == target


@pytest.mark.parametrize(
    "location",
    [
        "http://api.example.com/v1/c",  # another scheme
        "https://api.example.com:8443/v1/c",  # another port
        "https://evil.com/v1/c",
        "https://127.0.0.1/v1/c",
        "//evil.com/v1/c",  # protocol-relative
        "\\\\evil.com/v1/c",
        "/\\evil.com/v1",
        "https:\\\\evil.com/v1",
        "https://api.example.com@evil.com/v1/",  # userinfo tricks
        "https://user:pw@api.example.com/v1/c",
        "https://api.example.com%40evil.com/v1/",
        "https://evil.com#@api.example.com/v1",
        "https://evil.com?@api.example.com/v1",
        "https://evil.com\\@api.example.com/v1",
        "https://api.example.com\t.evil.com/v1",
        " https://evil.com/v1",
        "https://api.example.com\r\n/v1",
        "https:api.example.com/v1/c",  # a scheme without an authority
        "javascript:alert(1)",
        "ftp://api.example.com/v1",
        "https://api.example.com.evil.com/v1",
        "https://[::1]/v1",
        "https://api.example.com:99999/v1",
        "/v2/x",  # outside the base
        "/v1x",
        "../../../etc",
        "/v1/%2e%2e/%2e%2e/x",
        "/v1/a;x/..;/b",
        "",
        "#top",
        "/v1/" + "x" * MAX_TARGET,
        "/v1/é",
    ],
)
def test_redirects_leaving_the_destination_are_not_followed(location: str) -> None:
    assert within(*BASE, location, CURRENT) is None


def test_redirects_on_an_ip_destination_with_a_port() -> None:
    assert within("http", "::1", 8080, "", "http://[::1]:8080/x", "/a") == "/x"
    assert within("http", "::1", 8080, "", "http://[::1]/x", "/a") is None
    assert within("http", "127.0.0.1", 80, "", "http://127.0.0.1:80/x", "/a") == "/x"
    assert within("http", "127.0.0.1", 80, "", "http://127.1/x", "/a") is None


# --- properties --------------------------------------------------------------------------

TRICKS = [
    *("/" * 4),
    *("." * 3),
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%25",
    "%5c",
    "%5C",
    "\\",
    ";",
    "%3b",
    "?",
    "&",
    "=",
    "+",
    "%",
    "2",
    "e",
    "E",
    "f",
    "F",
    "%c0%ae",
    "%e0%80%ae",
    "%ef%bc%8f",
    "%00",
    "%0a",
    "%20",
    "%41",
    "%61",
    "%7e",
    "%2B",
    "%3f",
    "%c3%a9",
    "#",
    " ",
    "é",
    "repos",
    "acme",
    "admin",
    "x",
    "~",
]
PREFIXES = ["", "/", "/repos/acme/", "/repos/acme", "/repos/", "/repos/acme/x/", "/%72epos/acme/"]
# the dot and letter tricks alone: most of these are accepted, so their upstream is checked
DOTS = ["/", "/", ".", "..", "%2e", "%2E", "%41", "%7e", "%2B", "%20", "+", "?", "&", "="]
raw_targets = st.builds(
    lambda prefix, tokens: prefix + "".join(tokens),
    st.sampled_from(PREFIXES),
    st.lists(st.sampled_from(TRICKS), max_size=14)
    | st.lists(st.sampled_from([*DOTS, "repos", "acme", "admin", "x"]), max_size=14),
)
base_paths = st.sampled_from(["", "/v1", "/api/v1"])
GRANT = "github/repos/acme/**"


def expected_view(base_path: str, found: Target) -> str:
    """The path the destination should read: the base, then the decided path."""
    if not found.path:
        return f"{base_path}/" if found.trailing_slash or not base_path else base_path
    return f"{base_path}/{found.path}{'/' if found.trailing_slash else ''}"


@pytest.fixture(scope="module")
def api() -> Iterator[StandIn]:
    with standin() as server:
        yield server


def send(api: StandIn, target: str) -> Received:
    """``target`` on the request line, byte for byte, on a socket of our own."""
    api.clear()
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(request.encode("ascii"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return api.last()


def accepted(target: str, base_path: str, *, absolute: bool) -> Target | None:
    try:
        return normalise(target, base_path, absolute=absolute)
    except BadTarget:
        return None


@LIVE
@given(target=raw_targets, base_path=base_paths, absolute=st.booleans())
@example(target="/repos/acme/%2e%2e/admin", base_path="/v1", absolute=False)
@example(target="/repos/acme/x/", base_path="", absolute=False)
@example(target="/repos/acme/x?q=a+b&r=%2B;s", base_path="/v1", absolute=False)
@example(target="", base_path="/v1", absolute=False)
@example(target="/", base_path="/api/v1", absolute=True)
def test_the_standin_reads_exactly_what_tether_decided(
    api: StandIn, target: str, base_path: str, absolute: bool
) -> None:
    if absolute:
        target = base_path + (target if target.startswith("/") else "/" + target)
    found = accepted(target, base_path, absolute=absolute)
    if found is None:
        return
    seen = send(api, found.upstream)
    assert seen.raw_target == found.upstream
    assert seen.path == expected_view(base_path, found)
    assert seen.query == list(found.query)


@LIVE
@given(target=raw_targets, base_path=base_paths)
@example(target="/repos/acme/%2e%2e/admin", base_path="")
@example(target="/repos/acme/..%2fadmin", base_path="")
@example(target="/repos/acme/%2e%2e%2fadmin", base_path="")
@example(target="/repos/acme/..;/admin", base_path="")
@example(target="/repos/acme/%c0%ae%c0%ae/admin", base_path="")
@example(target="/repos/acme/%252e%252e/admin", base_path="")
@example(target="/repos/acme/%5c..%5cadmin", base_path="")
@example(target="/repos/acme%2fx", base_path="")
@example(target="/Repos/acme/x", base_path="")
@example(target="//repos//acme//x", base_path="/v1")
def test_no_trick_reaches_a_path_the_grant_does_not_cover(
    api: StandIn, target: str, base_path: str
) -> None:
    found = accepted(target, base_path, absolute=False)
    if found is None:
        return
    seen = send(api, found.upstream).path
    below = seen.removeprefix(base_path).strip("/")
    # the stand-in's path, below the base, is the resource's path: segment for segment,
    # no empty, '.' or '..' segment left for it to read another way
    assert below.split("/") == found.path.split("/")
    assert not {".", "..", ""} & set(below.split("/")) or below == ""
    covered = pattern_matches(GRANT, resource("github", found))
    under = seen.startswith(f"{base_path}/repos/acme/") and below != "repos/acme"
    assert covered == under


@PROPERTY
@given(target=st.text(max_size=60) | raw_targets, base_path=base_paths, absolute=st.booleans())
def test_normalising_fails_closed_and_reads_the_upstream_form_the_same(
    target: str, base_path: str, absolute: bool
) -> None:
    found = accepted(target, base_path, absolute=absolute)  # nothing but BadTarget escapes
    if found is None:
        return
    assert found.upstream.isascii() and found.upstream.startswith("/")
    again = normalise(found.upstream, base_path, absolute=True)
    assert (again.path, again.query, again.upstream) == (found.path, found.query, found.upstream)
    check_resource("GET", resource("github", found))


hostile_locations = st.builds(
    lambda head, tokens: head + "".join(tokens),
    st.sampled_from(
        [
            "",
            "/",
            "/v1/",
            "//",
            "https://",
            "https://api.example.com",
            "https://api.example.com/v1/",
            "http://api.example.com/v1/",
            "https://api.example.com@",
            "\\\\",
            "../",
        ]
    ),
    st.lists(
        st.sampled_from([*TRICKS, "evil.com", "api.example.com", "@", ":", ":443", "v1", "//"]),
        max_size=10,
    ),
)


@PROPERTY
@given(location=hostile_locations | st.text(string.printable, max_size=40))
def test_a_followed_redirect_stays_under_the_base(location: str) -> None:
    found = within(*BASE, location, CURRENT)
    if found is None:
        return
    assert found == "/v1" or found.startswith(("/v1/", "/v1?"))
    assert normalise(found, "/v1", absolute=True).upstream == found
