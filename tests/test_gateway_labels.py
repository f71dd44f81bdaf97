"""Issue 17, item 2: labels on tools, resources and prompts (tether.upstreams.labels).

Explicit labels by an admin or the server's owner (recorded, the epoch moved), the
unlabelled defaults, MCP annotations that only ever add (read from the pinned definition),
the decision point's snapshot, and the CLI and API faces with their refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, initialised, served, spec
from helpers.people import IDP_ISSUER, person_header
from hypothesis import given
from hypothesis import strategies as st

from tether.callers import Caller
from tether.config import LABELS, GuardSettings, Settings
from tether.core import Tether
from tether.errors import Forbidden, InvalidRequest, NotFound
from tether.grants import GrantSpec
from tether.policy.decision import AccessRequest
from tether.upstreams.labels import CLASSES, effective_labels
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
ALICE = Caller.user("alice@example.com")  # type: ignore[arg-type]
BOB = Caller.user("bob@example.com")  # type: ignore[arg-type]


def _tool(name: str, **annotations: Any) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name, "inputSchema": {"type": "object"}}
    if annotations:
        tool["annotations"] = annotations
    return tool


@pytest.fixture
def fs(tether: Tether) -> Tether:
    """A server ``fs`` owned by alice, its first listing pinned."""
    tether.upstreams.add(
        ADMIN, UpstreamSpec("fs", url="https://fs.example/mcp", owner="alice@example.com")
    )
    tools = [
        _tool("read_file", readOnlyHint=True),
        _tool("delete_file", destructiveHint=True),
        _tool("fetch", openWorldHint=True),
        _tool("liar", destructiveHint="true", openWorldHint=1),  # not JSON true: nothing
    ]
    tether.pins.observe("fs", "tool", tools)
    tether.pins.observe("fs", "resource", [{"uri": "note://welcome", "name": "welcome"}])
    tether.pins.observe("fs", "prompt", [{"name": "summarise"}])
    return tether


def _of(tether: Tether, action: str, path: str) -> set[str]:
    return set(tether.labels.snapshot().of(action, path))


# ---- effective labels ------------------------------------------------------------------


def test_unlabelled_items_count_as_their_kinds_default(fs: Tether) -> None:
    assert _of(fs, "tools/call", "fs/read_file") == {"untrusted", "egress"}
    assert _of(fs, "resources/read", "fs/note:/=/welcome") == {"untrusted"}
    assert _of(fs, "prompts/get", "fs/summarise") == {"egress"}  # its arguments go out
    # an item nobody pinned yet, on a server nobody added: the default too
    assert _of(fs, "tools/call", "elsewhere/anything") == {"untrusted", "egress"}
    # what is not an MCP item has no labels
    assert _of(fs, "delegate", "spiffe://tether.local/agent/x") == set()


def test_annotations_of_the_pin_add_labels_and_never_remove_one(fs: Tether) -> None:
    assert _of(fs, "tools/call", "fs/delete_file") == {"untrusted", "egress", "destructive"}
    assert _of(fs, "tools/call", "fs/liar") == {"untrusted", "egress"}
    for tool in ("read_file", "delete_file", "fetch", "liar"):
        fs.labels.change(ADMIN, "fs", tool, add=["plain"])
    # readOnlyHint removes nothing; plain leaves only what annotations add
    assert _of(fs, "tools/call", "fs/read_file") == set()
    assert _of(fs, "tools/call", "fs/delete_file") == {"destructive"}
    assert _of(fs, "tools/call", "fs/fetch") == {"untrusted", "egress"}
    assert _of(fs, "tools/call", "fs/liar") == set()
    fs.labels.change(ADMIN, "fs", "fetch", add=["sensitive"], remove=["plain"])
    assert _of(fs, "tools/call", "fs/fetch") == {"sensitive", "untrusted", "egress"}


def test_annotations_come_from_the_pinned_definition_not_the_served_one(fs: Tether) -> None:
    fs.labels.change(ADMIN, "fs", "delete_file", add=["plain"])
    # the upstream now claims the tool is harmless: held as changed, the pin still counts
    shown = fs.pins.observe("fs", "tool", [_tool("delete_file", destructiveHint=False)])
    assert shown == []
    assert _of(fs, "tools/call", "fs/delete_file") == {"destructive"}
    epoch = fs.epoch.current()
    fs.pins.approve(ADMIN, "fs", "delete_file")
    assert fs.epoch.current() > epoch  # an approval sets a pinned definition: epoch moved
    assert _of(fs, "tools/call", "fs/delete_file") == set()


def test_a_first_pin_moves_the_epoch(tether: Tether) -> None:
    tether.upstreams.add(ADMIN, UpstreamSpec("web", url="https://web.example/mcp"))
    epoch = tether.epoch.current()
    tether.pins.observe("web", "tool", [_tool("fetch", openWorldHint=True)])
    assert tether.epoch.current() == epoch + 1  # once per transaction
    again = tether.epoch.current()
    tether.pins.observe("web", "tool", [_tool("fetch", openWorldHint=True)])
    assert tether.epoch.current() == again  # nothing pinned anew: nothing moved


def test_labelling_is_recorded_moves_the_epoch_and_names_the_sources(fs: Tether) -> None:
    epoch = fs.epoch.current()
    item = fs.labels.change(ADMIN, "fs", "fetch", add=["sensitive", "egress"])
    assert fs.epoch.current() == epoch + 1
    assert item.explicit == ("egress", "sensitive")
    assert item.sources == {
        "egress": ["explicit", "annotation:openWorldHint"],
        "sensitive": ["explicit"],
        "untrusted": ["annotation:openWorldHint"],
    }
    [event] = fs.events.list(type="gateway.labelled")
    assert event.actor == "admin"
    assert event.resource == "fs/fetch"
    assert event.detail["added"] == ["egress", "sensitive"]
    assert event.detail["labels"] == ["egress", "sensitive"]
    # a change that changes nothing records nothing and moves nothing
    fs.labels.change(ADMIN, "fs", "fetch", add=["sensitive"])
    assert len(fs.events.list(type="gateway.labelled")) == 1
    assert fs.epoch.current() == epoch + 1
    listing = {(i.kind, i.item): i for i in fs.labels.list(ADMIN, "fs")}
    assert listing[("tool", "read_file")].sources == {
        "egress": ["default"],
        "untrusted": ["default"],
    }
    assert listing[("prompt", "summarise")].to_dict()["labels"] == ["egress"]
    assert listing[("resource", "note://welcome")].path == "fs/note:/=/welcome"


def test_resources_are_labelled_by_uri_and_items_may_be_labelled_before_their_pin(
    fs: Tether,
) -> None:
    fs.labels.change(ADMIN, "fs", "note://welcome", add=["sensitive"], kind="resource")
    assert _of(fs, "resources/read", "fs/note:/=/welcome") == {"sensitive"}
    early = fs.labels.change(ADMIN, "fs", "post", add=["egress"])
    assert early.pinned is False
    assert _of(fs, "tools/call", "fs/post") == {"egress"}


def test_the_owner_labels_others_are_refused_and_that_is_recorded(fs: Tether) -> None:
    fs.labels.change(ALICE, "fs", "read_file", add=["sensitive"])
    assert [i.item for i in fs.labels.list(ALICE, "fs")][:1] == ["delete_file"]
    for attempt in (
        lambda: fs.labels.change(BOB, "fs", "read_file", remove=["sensitive"]),
        lambda: fs.labels.list(BOB, "fs"),
    ):
        with pytest.raises(Forbidden):
            attempt()
    refused = fs.events.list(type="access.refused")
    assert [(e.actor, e.detail["op"]) for e in refused] == [
        ("user:bob@example.com", "gateway.label"),
        ("user:bob@example.com", "gateway.labels"),
    ]
    assert _of(fs, "tools/call", "fs/read_file") == {"sensitive"}


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        ({"add": ["secret"]}, InvalidRequest, "sensitive, untrusted, egress, destructive, plain"),
        ({"remove": ["Egress"]}, InvalidRequest, "the labels are"),
        ({}, InvalidRequest, "--add or --remove"),
        ({"add": ["egress"], "remove": ["egress"]}, InvalidRequest, "both added and removed"),
        ({"add": ["plain", "sensitive"]}, InvalidRequest, "plain means none"),
        ({"add": ["egress"], "kind": "widget"}, InvalidRequest, "unknown kind"),
        ({"add": ["egress"], "item": "bad name"}, InvalidRequest, "cannot be labelled"),
        ({"add": ["egress"], "server": "nope"}, NotFound, "no upstream server nope"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    fs: Tether, change: dict[str, Any], error: type[Exception], says: str
) -> None:
    change = dict(change)  # the parameter is shared by both stores' runs
    server, item = change.pop("server", "fs"), change.pop("item", "read_file")
    epoch = fs.epoch.current()
    with pytest.raises(error, match=says):
        fs.labels.change(ADMIN, server, item, **change)
    assert fs.events.list(type="gateway.labelled") == []
    assert fs.epoch.current() == epoch
    assert all(not i.explicit for i in fs.labels.list(ADMIN, "fs"))


def test_removing_a_server_forgets_its_labels(fs: Tether) -> None:
    fs.labels.change(ADMIN, "fs", "read_file", add=["plain"])
    fs.upstreams.remove(ADMIN, "fs")
    fs.upstreams.add(ADMIN, UpstreamSpec("fs", url="https://other.example/mcp"))
    assert fs.labels.list(ADMIN, "fs") == []
    assert _of(fs, "tools/call", "fs/read_file") == {"untrusted", "egress"}


_HINTS = st.dictionaries(
    st.sampled_from(["readOnlyHint", "destructiveHint", "openWorldHint", "idempotentHint"]),
    st.one_of(st.booleans(), st.none(), st.text(max_size=4), st.integers(-1, 1)),
)


@given(
    kind=st.sampled_from(["tool", "resource", "prompt"]),
    explicit=st.sets(st.sampled_from(LABELS)),
    hints=_HINTS,
)
def test_annotations_only_ever_add(kind: str, explicit: set[str], hints: dict[str, Any]) -> None:
    guard = GuardSettings()
    bare = effective_labels(kind, explicit, {"name": "t"}, guard)
    annotated = effective_labels(kind, explicit, {"name": "t", "annotations": hints}, guard)
    assert set(bare) <= set(annotated) <= set(CLASSES)
    assert "plain" not in annotated
    added = set(annotated) - set(bare)
    assert added <= {
        *(["destructive"] if hints.get("destructiveHint") is True else []),
        *(["untrusted", "egress"] if hints.get("openWorldHint") is True else []),
    }


def test_a_label_change_reaches_another_processs_decisions_at_once(
    make_settings: Callable[..., Settings], clock: Any
) -> None:
    """Two Tethers on one store: a label set in one is in the very next decision of the
    other (the label change moved the epoch; no cache outlives it)."""
    settings = make_settings(decision_staleness_ms=0)
    first, _ = Tether.init(settings)
    first.close()
    with Tether.open(settings, clock=clock) as one, Tether.open(settings, clock=clock) as two:
        one.upstreams.add(ADMIN, UpstreamSpec("fs", url="https://fs.example/mcp"))
        one.registry.register(ADMIN, spec("bot"))
        one.grants.add(ADMIN, GrantSpec("bot", "tools/call", "fs/*"))
        bot = two.registry.get(ADMIN, "bot").id
        ask = AccessRequest.of(bot, "tools/call", "fs/read_file")
        [before] = two.decide_all([ask])
        assert before.allowed and set(before.labels) == {"untrusted", "egress"}
        one.labels.change(ADMIN, "fs", "read_file", add=["sensitive"])
        [after] = two.decide_all([ask])
        assert after.allowed and after.labels == ("sensitive",)


# ---- faces -----------------------------------------------------------------------------


def test_the_cli_labels_lists_and_shows(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = initialised(Cli(capsys))
    cli.json("gateway", "add", "fs", "--url", "https://fs.example/mcp")
    item = cli.json("gateway", "label", "fs", "read_file", "--add", "sensitive")
    assert item["labels"] == ["sensitive"]
    assert item["sources"] == {"sensitive": ["explicit"]}
    cli.json("gateway", "label", "fs", "note://x", "--kind", "resource", "--add", "plain")
    listed = cli.json("gateway", "label", "fs")
    assert [(i["kind"], i["item"], i["labels"]) for i in listed["items"]] == [
        ("tool", "read_file", ["sensitive"]),
        ("resource", "note://x", ["plain"]),
    ]
    one = cli.json("gateway", "label", "fs", "read_file")
    assert one["explicit"] == ["sensitive"]
    shown = cli.json("gateway", "show", "fs")
    assert shown["name"] == "fs"
    assert [i["item"] for i in shown["items"]] == ["read_file", "note://x"]
    code, out, err = cli("gateway", "show", "fs")
    assert code == 0 and "read_file" in out and "sensitive: explicit" in out
    code, out, err = cli("gateway", "label", "fs", "read_file", "--add", "secret")
    assert code == 2 and "sensitive, untrusted, egress, destructive, plain" in err
    code, out, err = cli("gateway", "label", "nope", "x", "--add", "egress")
    assert code == 1 and "no upstream server nope" in err
    code, out, err = cli("gateway", "label", "fs", "--add", "egress")
    assert code == 2
    assert "Traceback" not in out + err


@pytest.fixture
def api(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    with served(make_settings, tmp_path, IDP_ISSUER) as up:
        response = up.client.post(
            "/v1/gateway/servers",
            json={"name": "fs", "url": "https://fs.example/mcp", "owner": "alice@example.com"},
            headers=up.admin,
        )
        assert response.status_code == 201, response.text
        yield up


def test_the_api_labels_for_the_owner_and_refuses_others(api: Any) -> None:
    alice = person_header(api.idp_key, "alice@example.com")
    bob = person_header(api.idp_key, "bob@example.com")
    labels = "/v1/gateway/servers/fs/labels"
    response = api.client.post(labels, json={"item": "fetch", "add": ["untrusted"]}, headers=alice)
    assert response.status_code == 200, response.text
    assert response.json()["labels"] == ["untrusted"]
    response = api.client.get(labels, headers=alice)
    assert [i["item"] for i in response.json()["items"]] == ["fetch"]
    for method, kwargs in (
        ("GET", {}),
        ("POST", {"json": {"item": "fetch", "remove": ["untrusted"]}}),
        ("DELETE", {"params": {"item": "fetch", "label": "untrusted"}}),
    ):
        response = api.client.request(method, labels, headers=bob, **kwargs)
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "access_denied"
    assert len(api.tether.events.list(type="access.refused")) == 3
    response = api.client.post(labels, json={"item": "fetch", "add": ["exfil"]}, headers=api.admin)
    assert response.status_code == 400
    assert (
        "sensitive, untrusted, egress, destructive, plain" in response.json()["error_description"]
    )
    response = api.client.post(
        "/v1/gateway/servers/nope/labels", json={"item": "x", "add": ["egress"]}, headers=api.admin
    )
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    response = api.client.post(labels, json={"item": "x", "add": ["egress"], "x": 1}, headers=alice)
    assert response.status_code == 400
    response = api.client.delete(
        labels, params={"item": "fetch", "label": "untrusted"}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["explicit"] == []
    assert response.json()["sources"] == {"egress": ["default"], "untrusted": ["default"]}
    assert [e.actor for e in api.tether.events.list(type="gateway.labelled")] == [
        "user:alice@example.com",
        "admin",
    ]
