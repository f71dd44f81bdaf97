"""The gateway's two HTTP paths side by side (``gateway_path`` lean and sdk, one store),
in front of an upstream that records what it parsed (tests/helpers/recording_server.py).

- Hypothesis-generated tool arguments go through both paths: what the upstream parsed
  equals what the face passed to ``Gateway.call_tool`` (what was decided on, and
  recorded in the audit log under the tool's path), on both paths.
- Hostile frames (duplicate keys, lone surrogates, huge numbers, NaN, deep nesting,
  wrong types, unknown methods, odd ids, batches, an oversized body) reach the upstream
  not at all on the lean path, and both paths refuse what either refuses, except where
  the SDK path forwards something ambiguous that the lean path refuses
  (:data:`SDK_FORWARDS`, each case said there).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import Clock, spec
from helpers.mcp_wire import INIT, INITIALISED, mcp_headers
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.api import create_app
from tether.callers import Caller
from tether.core import Tether
from tether.gateway import enforce
from tether.gateway.frames import MAX_INT
from tether.grants import GrantSpec
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
SERVER = Path(__file__).parent / "helpers" / "recording_server.py"
BASE = "http://testserver"

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_INT, MAX_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
ARGUMENTS = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        _SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=10,
    ),
    max_size=5,
)


def _call(arguments: str, *, ident: str = "7", name: str = '"record"') -> bytes:
    params = f'{{"name":{name},"arguments":{arguments}}}'
    return f'{{"jsonrpc":"2.0","id":{ident},"method":"tools/call","params":{params}}}'.encode()


HOSTILE: dict[str, bytes] = {
    "duplicate key in the arguments": _call('{"a":1,"a":2}'),
    "duplicate tool name": (
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        b'"params":{"name":"other","name":"record","arguments":{}}}'
    ),
    "lone surrogate": _call('{"a":"\\ud800"}'),
    "lone surrogate in a key": _call('{"\\udc00":1}'),
    "huge integer": _call('{"a":123456789012345678901234567890}'),
    "integer just past 2**53": _call('{"a":9007199254740993}'),
    "NaN": _call('{"a":NaN}'),
    "-Infinity": _call('{"a":-Infinity}'),
    "1e400": _call('{"a":1e400}'),
    "deep nesting": _call('{"a":' + "[" * 100 + "]" * 100 + "}"),
    "name not a string": _call("{}", name="5"),
    "arguments a list": _call("[1]"),
    "params a list": b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":["record"]}',
    "unknown method": b'{"jsonrpc":"2.0","id":7,"method":"tools/destroy","params":{}}',
    "missing id": b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"record"}}',
    "id true": _call("{}", ident="true"),
    "id 1.5": _call("{}", ident="1.5"),
    "id null": _call("{}", ident="null"),
    "id an object": _call("{}", ident="{}"),
    "batch": b"[" + _call("{}") + b"]",
    "jsonrpc 1.0": _call("{}").replace(b'"2.0"', b'"1.0"'),
    "not UTF-8": _call('{"a":"x"}').replace(b'"x"', b'"\xff"'),
    "oversized body": _call('{"a":"' + "x" * (5 * 1024 * 1024) + '"}'),
}

# What the SDK path forwards that the lean path refuses: a frame two parsers may read
# differently, so the upstream could act on something other than what was decided.
SDK_FORWARDS = {
    "duplicate key in the arguments": "the last value wins in the SDK's parser, not in all",
    "duplicate tool name": "the SDK decides on the last name; another parser may call the first",
    "huge integer": "read exactly by Python, rounded by a parser with doubles",
    "integer just past 2**53": "read exactly by Python, rounded by a parser with doubles",
    # NaN, -Infinity and 1e400 are read by the SDK's parser too, but the upstream client
    # (tether.gateway.wire) cannot write them as JSON, so they never get further
    "deep nesting": "100 levels: read here, refused by a parser with a lower limit",
}


def _examples() -> list[dict[str, Any]]:
    """Hypothesis-generated arguments, drawn up front (a fixed seed): every one goes
    through both paths in one served session each."""
    drawn: list[dict[str, Any]] = []

    @settings(max_examples=40, database=None, derandomize=True)
    @given(ARGUMENTS)
    def draw(arguments: dict[str, Any]) -> None:
        drawn.append(arguments)

    draw()
    return drawn


@pytest.fixture
def paths(tether: Tether, clock: Clock, tmp_path: Path) -> Iterator[tuple[Tether, Tether, Path]]:
    """The lean Tether of the test and an SDK-path one on the same store, an upstream
    ``rec`` that records to a file, and an agent granted its ``record`` tool."""
    record = tmp_path / "record.jsonl"
    record.touch()
    command = f"{sys.executable} {SERVER}"
    tether.upstreams.add(
        ADMIN, UpstreamSpec("rec", command=command, env=(f"RECORD_FILE={record}",))
    )
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "rec/record"))
    sdk_settings = tether.settings.model_copy(update={"gateway_path": "sdk"})
    with Tether.open(sdk_settings, clock=clock) as sdk:
        yield tether, sdk, record


def _token(tether: Tether) -> str:
    agent = tether.registry.get(ADMIN, "helper")
    resource = f"{tether.settings.issuer}/mcp/rec"
    return tether.tokens.client_credentials(agent, resource, None, None).access_token


class Wire:
    """One raw MCP session on ``/mcp/rec`` of a served app."""

    def __init__(self, http: httpx2.AsyncClient, token: str, record: Path) -> None:
        self.http, self.token, self.record = http, token, record
        self.session: str | None = None

    async def open(self) -> None:
        opened = await self.http.post("/mcp/rec", json=INIT, headers=mcp_headers(self.token))
        assert opened.status_code == 200, opened.text
        self.session = opened.headers["mcp-session-id"]
        await self.post(json.dumps(INITIALISED).encode())

    async def post(self, body: bytes) -> httpx2.Response:
        headers = mcp_headers(self.token, self.session) | {"Content-Type": "application/json"}
        return await self.http.post("/mcp/rec", content=body, headers=headers)

    def lines(self) -> list[str]:
        return self.record.read_text(encoding="utf-8").splitlines()


def _answer(response: httpx2.Response) -> Any:
    """The JSON-RPC answer of a response (JSON or one SSE event), or None."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = next((ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")), "")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


async def _served(tether: Tether, work: Any) -> Any:
    app = create_app(tether)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
            return await work(http)


@pytest.mark.slow
def test_what_the_upstream_parsed_is_what_was_decided_on_both_paths(paths, monkeypatch) -> None:
    lean, sdk, record = paths
    examples = _examples()
    decided: list[dict[str, Any]] = []
    real = enforce.Gateway.call_tool

    async def call_tool(self: Any, bearer: str, upstream: Any, name: str, arguments: Any) -> Any:
        decided.append(json.loads(json.dumps(arguments, sort_keys=True)))
        return await real(self, bearer, upstream, name, arguments)

    monkeypatch.setattr(enforce.Gateway, "call_tool", call_tool)

    for tether in (lean, sdk):
        decided.clear()
        before = len(record.read_text(encoding="utf-8").splitlines())

        async def work(http: httpx2.AsyncClient, tether: Tether = tether) -> None:
            wire = Wire(http, _token(tether), record)
            await wire.open()
            for i, arguments in enumerate(examples):
                body = {
                    "jsonrpc": "2.0",
                    "id": i + 10,
                    "method": "tools/call",
                    "params": {"name": "record", "arguments": arguments},
                }
                answer = _answer(await wire.post(json.dumps(body).encode()))
                assert answer and not answer["result"]["isError"], (arguments, answer)

        anyio.run(_served, tether, work)
        parsed = [json.loads(line) for line in record.read_text("utf-8").splitlines()[before:]]
        path = tether.settings.gateway_path
        assert parsed == decided, path
        assert parsed == [json.loads(json.dumps(a, sort_keys=True)) for a in examples], path
    decisions = lean.events.list(type="decision")
    assert {(e.resource, e.decision) for e in decisions} == {("rec/record", "allow")}
    assert len(decisions) == 2 * len(examples)


@pytest.mark.slow
def test_hostile_frames_never_reach_the_upstream_and_both_paths_refuse_them(paths) -> None:
    lean, sdk, record = paths
    outcome: dict[str, dict[str, tuple[int, Any, bool]]] = {}
    for tether in (lean, sdk):
        seen: dict[str, tuple[int, Any, bool]] = {}

        async def work(http: httpx2.AsyncClient, tether: Tether = tether, seen: Any = seen) -> None:
            wire = Wire(http, _token(tether), record)
            await wire.open()
            for label, body in HOSTILE.items():
                before = len(wire.lines())
                response = await wire.post(body)
                answer = _answer(response)
                error = answer.get("error") if isinstance(answer, dict) else None
                error = error.get("code") if isinstance(error, dict) else error
                result = answer.get("result") if isinstance(answer, dict) else None
                if error is None and isinstance(result, dict) and result.get("isError") is True:
                    error = "isError"  # a tool call refused as a tool result
                seen[label] = (response.status_code, error, len(wire.lines()) > before)

        anyio.run(_served, tether, work)
        outcome[tether.settings.gateway_path] = seen
    for label in HOSTILE:
        lean_status, lean_error, lean_forwarded = outcome["lean"][label]
        sdk_status, sdk_error, sdk_forwarded = outcome["sdk"][label]
        said = f"{label}: lean {outcome['lean'][label]}, sdk {outcome['sdk'][label]}"
        assert not lean_forwarded, said
        assert sdk_forwarded == (label in SDK_FORWARDS), said
        # refused: an HTTP error, a JSON-RPC error, a tool result with isError, or accepted
        # as a notification (202) and dropped; never a result of the tool
        assert lean_status >= 400 or lean_error is not None or lean_status == 202, said
        if not sdk_forwarded:
            assert sdk_status >= 400 or sdk_error is not None or sdk_status == 202, said
    # the API's own cap (max_request_bytes) answers first, for both paths alike
    assert outcome["lean"]["oversized body"][0] == outcome["sdk"]["oversized body"][0] == 413


MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def _modern(method: str, params: dict[str, Any], **headers: str) -> tuple[bytes, dict[str, str]]:
    """A per-request-era frame and its routing headers (``headers`` override them)."""
    body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": {**params, "_meta": ENVELOPE}}
    sent = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    named = params.get("uri", params.get("name"))
    if named is not None:
        sent["Mcp-Name"] = str(named)
    return json.dumps(body).encode(), sent | headers


LEGACY_FRAMES: dict[str, bytes] = {
    "tools/list": b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    "tools/call": _call('{"text":"same"}'),
    "tools/call of a tool not served": _call("{}", name='"nope"'),
    "resources/list": b'{"jsonrpc":"2.0","id":1,"method":"resources/list","params":{}}',
    "resources/read, none granted": (
        b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"note://x"}}'
    ),
    "prompts/list": b'{"jsonrpc":"2.0","id":1,"method":"prompts/list"}',
    "prompts/get, a number argument": (
        b'{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":1}}}'
    ),
    "resources/templates/list": b'{"jsonrpc":"2.0","id":1,"method":"resources/templates/list"}',
    "ping": b'{"jsonrpc":"2.0","id":"p","method":"ping"}',
    "tools/list with a number cursor": (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":3}}'
    ),
    "initialize again": json.dumps(INIT).encode(),
    "a client's answer": b'{"jsonrpc":"2.0","id":9,"result":{}}',
    "notifications/cancelled": (
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}'
    ),
}
MODERN_FRAMES: dict[str, tuple[bytes, dict[str, str]]] = {
    "tools/list": _modern("tools/list", {}),
    "tools/call": _modern("tools/call", {"name": "record", "arguments": {"a": "b"}}),
    "tools/call, Mcp-Name disagrees": _modern(
        "tools/call", {"name": "record", "arguments": {}}, **{"Mcp-Name": "other"}
    ),
    "tools/call, Mcp-Method disagrees": _modern(
        "tools/call", {"name": "record"}, **{"Mcp-Method": "tools/list"}
    ),
    "tools/call, no envelope": (
        _call("{}"),
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "record"},
    ),
    "tools/call, name not a string": _modern("tools/call", {"name": 5}),
    "resources/read, none granted": _modern("resources/read", {"uri": "note://x"}),
    "prompts/list": _modern("prompts/list", {}),
    "an unsupported version": _modern("tools/list", {}, **{"MCP-Protocol-Version": "2099-01-01"}),
    "server/discover (the SDK path's)": _modern("server/discover", {}),
}


@pytest.mark.slow
def test_both_paths_give_the_same_answers_in_both_protocol_eras(paths) -> None:
    """The same frames through each path: the same HTTP status and JSON-RPC answer."""
    lean, sdk, record = paths
    answers: dict[str, dict[str, tuple[int, Any]]] = {}
    for tether in (lean, sdk):
        got: dict[str, tuple[int, Any]] = {}

        async def work(http: httpx2.AsyncClient, tether: Tether = tether, got: Any = got) -> None:
            wire = Wire(http, _token(tether), record)
            await wire.open()
            for label, body in LEGACY_FRAMES.items():
                response = await wire.post(body)
                got[f"legacy {label}"] = (response.status_code, _answer(response))
            headers = {
                "Authorization": f"Bearer {wire.token}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            }
            for label, (body, routing) in MODERN_FRAMES.items():
                response = await http.post("/mcp/rec", content=body, headers=headers | routing)
                got[f"modern {label}"] = (response.status_code, _answer(response))

        anyio.run(_served, tether, work)
        answers[tether.settings.gateway_path] = got
    for label, sdk_answer in answers["sdk"].items():
        assert answers["lean"][label] == sdk_answer, label
    got = answers["lean"]
    for era in ("legacy", "modern"):
        said = got[f"{era} tools/call"][1]["result"]
        assert said["content"][0]["text"] == "recorded" and not said["isError"]
        assert got[f"{era} resources/read, none granted"][1]["error"]["code"] == -32003
    assert got["legacy tools/call of a tool not served"][1]["result"]["isError"]
    assert got["modern tools/call, Mcp-Name disagrees"][0] == 400
    assert got["modern tools/call, no envelope"][1]["error"]["code"] == -32602
    assert got["legacy a client's answer"] == (202, None)
