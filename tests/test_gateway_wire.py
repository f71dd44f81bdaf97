"""The gateway's own upstream client (:mod:`tether.gateway.wire`): against the SDK test
server over stdio and over streamable HTTP it lists, calls, reads and asks as the SDK's
client did (the same listings, so pins made through the SDK still hold); against hostile
upstreams (garbage, silence, wrong ids, a death mid-call, requests of their own, event
streams) the session fails closed with a clear error, and nothing hangs."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from helpers.http_upstream import sdk_server_over_http
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from tether.errors import UpstreamUnavailable
from tether.gateway import jsonrpc, pipe
from tether.gateway.jsonrpc import Malformed, WireError
from tether.gateway.streamable import Streamable
from tether.gateway.upstream import UpstreamSession
from tether.gateway.wire import MAX_SERVER_REQUESTS, NoAnswer, handshake
from tether.redact import MIN_LENGTH, Redactor
from tether.upstreams.credentials import Credential
from tether.upstreams.servers import Upstream

HELPERS = Path(__file__).parent / "helpers"
SERVER, HOSTILE = HELPERS / "mcp_test_server.py", HELPERS / "hostile_upstream.py"
SECRET = "wire-test-secret-5150"
BOUND = 30.0  # every test ends well within this, or fails (nothing may hang)


def _run(work: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(BOUND):
            await work()

    anyio.run(bounded)


def _stdio(*argv: str, credentials: tuple[Credential, ...] = ()) -> Upstream:
    return Upstream("up", "stdio", (sys.executable, *argv), None, credentials=credentials)


def _leaked(text: str) -> str:
    """The longest start of SECRET (MIN_LENGTH or more: what is redacted) in ``text``."""
    starts = (SECRET[:n] for n in range(MIN_LENGTH, len(SECRET) + 1))
    return max((start for start in starts if start in text), key=len, default="")


def _text(result: dict[str, Any]) -> str:
    return " ".join(c.get("text", "") for c in result["content"])


# ---- a real upstream ------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    with sdk_server_over_http() as url:
        yield url


async def _exercise(session: UpstreamSession) -> None:
    assert "echo" in {t["name"] for t in await session.list_tools()}
    assert session.input_schema("echo") == {
        "type": "object",
        "properties": {"text": {"title": "Text", "type": "string"}},
        "required": ["text"],
        "title": "echoArguments",
    }
    said: dict[int, str] = {}

    async def echo(n: int) -> None:  # many at once, each gets its own answer
        said[n] = _text(await session.call_tool("echo", {"text": f"call {n}"}))

    async with anyio.create_task_group() as group:
        for n in range(20):
            group.start_soon(echo, n)
    assert said == {n: f"call {n}" for n in range(20)}
    assert {r["uri"] for r in await session.list_resources()} == {
        "note://welcome",
        "note://payroll",
    }
    read = await session.read_resource("note://welcome")
    assert read["contents"][0]["text"] == "welcome to the test server"
    prompt = await session.get_prompt("summarise", {"topic": "tea"})
    assert prompt["messages"][0]["content"]["text"] == "Summarise tea in one line."
    with pytest.raises(MCPError, match="Unknown resource"):  # the server's own answer
        await session.read_resource("note://nothing")
    assert not session.broken  # ... which leaves the session open
    assert _text(await session.call_tool("echo", {"text": "still here"})) == "still here"


@pytest.mark.slow
def test_the_sdk_server_over_stdio_answers_everything_through_the_wire() -> None:
    async def work() -> None:
        async with UpstreamSession(_stdio(str(SERVER))) as session:
            await _exercise(session)
            with pytest.raises(UpstreamUnavailable, match="closed its output"):
                await session.call_tool("crash", {})  # it dies mid-call
            assert session.broken

    _run(work)


@pytest.mark.slow
def test_the_sdk_server_over_http_answers_everything_and_keeps_its_session(
    http_server: str,
) -> None:
    async def work() -> None:
        upstream = Upstream("up", "http", (), http_server)
        async with UpstreamSession(upstream) as session:
            wire = session.wire
            assert isinstance(wire, Streamable)
            assert wire.session_id and wire.version == "2025-11-25"
            await _exercise(session)

    _run(work)


@pytest.mark.slow
def test_listings_are_what_the_sdk_client_listed_so_pins_still_hold() -> None:
    async def work() -> None:
        params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
        async with Client(params) as client:
            tools = (await client.list_tools(cache_mode="bypass")).tools
            sdk = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
        async with UpstreamSession(_stdio(str(SERVER))) as session:
            assert await session.list_tools() == sdk

    _run(work)


# ---- hostile upstreams over stdio -----------------------------------------------------


def _hostile(mode: str, **kwargs: Any) -> UpstreamSession:
    return UpstreamSession(_stdio(str(HOSTILE), mode), **kwargs)


FAILS_CLOSED = {
    "garbage": "not JSON",
    "wrong-id": "an answer to no open request",
    "string-id": "an answer to no open request",
    "exit": "closed its output",
    "duplicate-key": "duplicate key 'content'",
    "nan": "NaN is not JSON",
    "surrogate": "not JSON",
    "array": "one JSON object, not list",
    "no-content": "a malformed tools/call result",
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(FAILS_CLOSED))
def test_a_hostile_answer_fails_the_call_and_the_session(mode: str) -> None:
    async def work() -> None:
        async with _hostile(mode) as session:
            with pytest.raises(UpstreamUnavailable, match=FAILS_CLOSED[mode]):
                await session.call_tool("echo", {"text": "hi"})
            assert session.broken
            with pytest.raises(UpstreamUnavailable, match="failed"):  # and stays failed
                await session.list_tools()

    _run(work)


@pytest.mark.slow
def test_a_line_that_never_ends_is_cut_off_at_the_frame_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipe, "MAX_FRAME", 1000)

    async def work() -> None:
        async with _hostile("long-line") as session:
            with pytest.raises(UpstreamUnavailable, match="a line longer than 1000 bytes"):
                await session.call_tool("echo", {"text": "hi"})
            assert session.broken

    _run(work)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("bad-listing", r"tools/list result \(tools without names"),
        ("endless-pages", "more than 100 pages"),
    ],
)
def test_a_listing_without_names_or_without_end_fails_closed(mode: str, why: str) -> None:
    async def work() -> None:
        async with _hostile(mode) as session:
            with pytest.raises(UpstreamUnavailable, match=why):
                await session.list_tools()
            assert session.broken

    _run(work)


@pytest.mark.slow
def test_a_listed_field_sent_as_null_is_left_out_as_the_sdk_client_did() -> None:
    # pins taken through the SDK client (which dropped null fields) still match; what is
    # inside a field (a schema's "default": null) is the server's, kept as sent
    async def work() -> None:
        async with _hostile("nulls") as session:
            [tool] = await session.list_tools()
            assert tool == {"name": "echo", "inputSchema": {"type": "object", "default": None}}

    _run(work)


def test_an_unanswered_call_times_out_alone_and_its_late_answer_is_dropped() -> None:
    async def work() -> None:
        async with _hostile("silent", timeout=0.5) as session:
            with pytest.raises(UpstreamUnavailable, match=r"no answer within 0\.5 s"):
                await session.call_tool("echo", {"text": "hi"})
            # the server was told (and then answered, too late): the session goes on
            assert _text(await session.call_tool("echo", {"text": "x"})) == "cancelled: [2]"
            assert not session.broken

    _run(work)


def test_a_server_that_floods_requests_of_its_own_is_cut_off_with_little_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20 000 pings and it reads nothing more: the replies owed pile up to the bound, and
    # then the connection is failed (no task per request left behind a jammed write)
    monkeypatch.setattr(pipe, "EXIT_GRACE", 0.2)  # (it ignores its closed stdin)

    async def work() -> None:
        async with _hostile("flood", timeout=10) as session:
            wire = session.wire
            assert isinstance(wire, pipe.Pipe)
            why = f"more than {MAX_SERVER_REQUESTS} requests of its own"
            with pytest.raises(UpstreamUnavailable, match=why):
                await session.call_tool("echo", {"text": "hi"})
            assert session.broken
            assert wire.owed <= MAX_SERVER_REQUESTS
            assert len(asyncio.all_tasks()) <= MAX_SERVER_REQUESTS + 8
        assert wire.owed == 0  # every reply ended with the connection

    _run(work)


def test_a_process_that_stops_reading_fails_the_connection_within_the_write_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipe, "WRITE_TIMEOUT", 0.3)
    monkeypatch.setattr(pipe, "EXIT_GRACE", 0.2)

    async def work() -> None:
        async with _hostile("deaf", timeout=10) as session:  # no NoAnswer: the write bound
            with pytest.raises(UpstreamUnavailable, match=r"did not read its input for 0\.3 s"):
                await session.call_tool("echo", {"text": "x" * 1_000_000})  # > the pipe holds
            assert session.broken
            with pytest.raises(UpstreamUnavailable, match="failed"):  # at once
                await session.call_tool("echo", {"text": "hi"})

    _run(work)


@pytest.mark.slow
def test_the_servers_own_requests_are_answered_as_the_sdk_client_answers_them() -> None:
    async def work() -> None:
        async with _hostile("chatty") as session:
            said = json.loads(_text(await session.call_tool("echo", {"text": "hi"})))
            assert not session.broken

        assert said == {
            "p": {},
            "r": {"code": -32600, "message": "List roots not supported"},
            "s": {"code": -32600, "message": "Sampling not supported"},
            "e": {"code": -32600, "message": "Elicitation not supported"},
            "u": {"code": -32601, "message": "Method not found"},
        }

    _run(work)


@pytest.mark.slow
def test_an_error_answer_quoting_an_injected_value_is_redacted_and_keeps_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_TEST_WIRE_SECRET", SECRET)
    given = (Credential("API_SECRET", "env:TETHER_TEST_WIRE_SECRET"),)

    async def work() -> None:
        upstream = _stdio(str(HOSTILE), "secret-error", credentials=given)
        async with UpstreamSession(upstream) as session:
            with pytest.raises(MCPError) as raised:
                await session.call_tool("echo", {"text": "hi"})
            assert raised.value.message == "cannot use [redacted]"
            assert not session.broken

    _run(work)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("cut-version", "protocol version"),
        ("cut-key", "duplicate key"),
        ("cut-id", "an answer to no open request"),
    ],
)
def test_an_injected_value_quoted_where_a_message_would_be_cut_leaks_no_part_of_it(
    mode: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cut before it was redacted, the rest of the value no longer matched the redactor
    monkeypatch.setenv("TETHER_TEST_WIRE_SECRET", SECRET)
    given = (Credential("API_SECRET", "env:TETHER_TEST_WIRE_SECRET"),)

    async def work() -> None:
        with pytest.raises(UpstreamUnavailable, match=why) as raised:
            async with UpstreamSession(_stdio(str(HOSTILE), mode, credentials=given)) as session:
                await session.call_tool("echo", {"text": "hi"})
        assert _leaked(raised.value.description) == ""

    _run(work)


@pytest.mark.slow
def test_a_server_speaking_an_unknown_protocol_version_is_refused() -> None:
    async def work() -> None:
        with pytest.raises(UpstreamUnavailable, match="'1999-01-01', which the gateway"):
            async with _hostile("old-version"):
                pass

    _run(work)


def test_a_program_that_cannot_start_is_unavailable_with_its_reason() -> None:
    async def work() -> None:
        upstream = Upstream("up", "stdio", ("/nonexistent/program",), None)
        with pytest.raises(UpstreamUnavailable, match="FileNotFoundError"):
            async with UpstreamSession(upstream):
                pass

    _run(work)


# ---- hostile upstreams over HTTP (in memory) ------------------------------------------

Handler = Callable[[httpx2.Request], Awaitable[httpx2.Response]]
URL = "http://upstream.test/mcp"
INITIALIZED = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "x"}}


def _answer(request: httpx2.Request, result: Any, **headers: str) -> httpx2.Response:
    message = json.loads(request.content)
    body = {"jsonrpc": "2.0", "id": message["id"], "result": result}
    return httpx2.Response(200, json=body, headers=headers)


def _events(*messages: Any) -> httpx2.Response:
    text = "".join(f"event: message\ndata: {json.dumps(m)}\n\n" for m in messages)
    return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})


class _Server:
    """An in-memory streamable HTTP upstream: it opens a session, then ``call`` answers."""

    def __init__(self, call: Handler) -> None:
        self.call = call
        self.seen: list[httpx2.Request] = []

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        message = json.loads(request.content) if request.content else {}
        if message.get("method") == "initialize":
            return _answer(request, INITIALIZED, **{"mcp-session-id": "s-1"})
        if "id" not in message or "method" not in message:  # a notification or our reply
            return httpx2.Response(202)
        return await self.call(request)


async def _over_http(call: Handler, work: Callable[[Streamable], Awaitable[None]]) -> _Server:
    server = _Server(call)
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server)) as client:
        wire = Streamable(client, URL, anyio.Event(), timeout=0.5)
        await handshake(wire)
        await work(wire)
    return server


def test_http_keeps_the_session_and_version_and_reads_an_event_stream() -> None:
    async def call(request: httpx2.Request) -> httpx2.Response:
        request_id = json.loads(request.content)["id"]
        return _events(
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
            {"jsonrpc": "2.0", "id": "ping-1", "method": "ping"},
            {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}},
        )

    async def work(wire: Streamable) -> None:
        assert await wire.request("tools/call", {"name": "x"}) == {"content": []}
        assert not wire.dead.is_set()

    async def run() -> None:
        server = await _over_http(call, work)
        later = server.seen[1:]  # everything after initialize is in the session
        assert {r.headers["mcp-session-id"] for r in later} == {"s-1"}
        assert {r.headers["mcp-protocol-version"] for r in later} == {"2025-06-18"}
        replies = [json.loads(r.content) for r in later if b"ping-1" in r.content]
        assert replies == [{"jsonrpc": "2.0", "id": "ping-1", "result": {}}]

    _run(run)


def test_an_event_stream_flooding_requests_of_its_own_fails_the_connection() -> None:
    async def call(request: httpx2.Request) -> httpx2.Response:
        request_id = json.loads(request.content)["id"]
        pings = [{"jsonrpc": "2.0", "id": f"p{n}", "method": "ping"} for n in range(1000)]
        return _events(*pings, {"jsonrpc": "2.0", "id": request_id, "result": {}})

    async def work(wire: Streamable) -> None:
        with pytest.raises(Malformed, match=f"more than {MAX_SERVER_REQUESTS} requests"):
            await wire.request("tools/call", {"name": "x"})
        assert wire.dead.is_set()

    async def run() -> None:
        server = await _over_http(call, work)
        sent = [json.loads(r.content) for r in server.seen if r.content]
        replies = [m for m in sent if "result" in m and str(m["id"]).startswith("p")]
        assert len(replies) == MAX_SERVER_REQUESTS  # the gateway answered no more

    _run(run)


@pytest.mark.parametrize(
    ("case", "why"),
    [("redirect", "redirects"), ("wrong id", "an answer to another request")],
)
def test_an_injected_value_quoted_in_an_http_failure_leaks_no_part_of_it(
    case: str, why: str
) -> None:
    # the session redacts what a failure says (as here): the value must be there whole
    async def call(request: httpx2.Request) -> httpx2.Response:
        if case == "redirect":  # the location was cut at 200
            return httpx2.Response(307, headers={"location": f"http://x.test/{'a' * 180}{SECRET}"})
        answer = {"jsonrpc": "2.0", "id": "i" * 30 + SECRET, "result": {}}  # cut at 40
        return _events(answer)

    async def work(wire: Streamable) -> None:
        with pytest.raises(WireError, match=why) as raised:
            await wire.request("tools/call", {"name": "x"})
        assert _leaked(Redactor([SECRET]).redact(str(raised.value))) == ""

    _run(lambda: _over_http(call, work))


def _status(code: int, **kwargs: Any) -> Handler:
    async def call(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(code, **kwargs)

    return call


EVENT_STREAM = {"content-type": "text/event-stream"}
WRONG_ID = {"jsonrpc": "2.0", "id": 99, "result": {}}
HTTP_FAILS_CLOSED: dict[str, tuple[Handler, str]] = {
    "session gone": (_status(404), "ended the session"),
    "credentials refused": (_status(401), "refused the gateway's credentials"),
    "redirect": (_status(307, headers={"location": "http://x.test/"}), "not followed"),
    "accepted, no answer": (_status(202), "HTTP 202 and no answer"),
    "html": (_status(200, text="<html>"), "content type 'text/plain'"),
    "stream ends early": (_status(200, headers=EVENT_STREAM), "ended without the answer"),
    "wrong id": (
        _status(200, text=f"data: {json.dumps(WRONG_ID)}\n\n", headers=EVENT_STREAM),
        "an answer to another request",
    ),
    "garbage": (_status(200, json=[1, 2]), "one JSON object"),
}


@pytest.mark.parametrize("case", sorted(HTTP_FAILS_CLOSED))
def test_http_failures_fail_the_request_and_the_connection(case: str) -> None:
    call, why = HTTP_FAILS_CLOSED[case]

    async def work(wire: Streamable) -> None:
        with pytest.raises(WireError, match=why):
            await wire.request("tools/call", {"name": "x"})
        assert wire.dead.is_set()
        with pytest.raises(WireError, match="failed"):
            await wire.request("tools/list")

    _run(lambda: _over_http(call, work))


def test_an_http_error_status_is_that_requests_failure_only() -> None:
    async def call(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content)["method"] == "tools/list":
            return _answer(request, {"tools": []})
        if b"with-body" not in request.content:
            return httpx2.Response(500, text="oops")
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32602, "message": "bad"}}
        return httpx2.Response(500, json=error)

    async def work(wire: Streamable) -> None:
        with pytest.raises(MCPError, match="the upstream answered HTTP 500"):
            await wire.request("tools/call", {"name": "x"})
        with pytest.raises(MCPError, match=r"^bad$") as raised:  # the server's own error
            await wire.request("tools/call", {"name": "with-body"})
        assert raised.value.code == -32602
        assert await wire.request("tools/list") == {"tools": []}
        assert not wire.dead.is_set()

    _run(lambda: _over_http(call, work))


def test_an_unanswered_http_request_times_out_and_the_connection_stays() -> None:
    async def call(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content)["method"] == "tools/list":
            return _answer(request, {"tools": []})
        await anyio.Event().wait()  # never
        raise AssertionError

    async def work(wire: Streamable) -> None:
        with pytest.raises(NoAnswer, match=r"no answer within 0\.5 s"):
            await wire.request("tools/call", {"name": "x"})
        assert await wire.request("tools/list") == {"tools": []}
        assert not wire.dead.is_set()

    _run(lambda: _over_http(call, work))


# ---- frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ('{"jsonrpc": "2.0", "id": 1, "result": {}, "result": {}}', "duplicate key"),
        ('{"jsonrpc": "2.0", "id": 1, "result": {"x": Infinity}}', "Infinity is not JSON"),
        ('{"jsonrpc": "2.0", "id": 1, "result": {"x": "\\udc00"}}', "not JSON"),
        ('{"jsonrpc": "2.0", "id": 1, "result": {"x": ' + "1" * 5000 + "}}", "not JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {"x": "\xff"}}', "not JSON"),
        ('{"jsonrpc": "1.0", "id": 1, "result": {}}', '"jsonrpc": "2.0"'),
        ('{"jsonrpc": "2.0", "id": true, "result": {}}', "id must be"),
        ('{"jsonrpc": "2.0", "id": null, "result": {}}', "id must be"),
        ('{"jsonrpc": "2.0", "id": 1.0, "result": {}}', "id must be"),
        ('{"jsonrpc": "2.0", "id": 1}', "exactly one of result and error"),
        ('{"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}', "exactly one"),
        ('{"jsonrpc": "2.0", "id": 1, "result": "ok"}', "result must be an object"),
        ('{"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "m"}}', "integer code"),
        ('{"jsonrpc": "2.0", "method": 5}', "method is not text"),
        ('{"jsonrpc": "2.0", "method": "m", "params": [1]}', "params are not an object"),
        ("[]", "one JSON object"),
    ],
)
def test_a_malformed_frame_is_refused_with_its_reason(frame: str | bytes, why: str) -> None:
    with pytest.raises(Malformed, match=why):
        jsonrpc.parse(frame)


def test_what_is_sent_is_built_from_values_and_json_cannot_carry_everything() -> None:
    sent = jsonrpc.encode(jsonrpc.request(1, "m", {"name": "é", "n": 10**30}))
    assert (
        sent
        == f'{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"name":"é","n":{10**30}}}}}'.encode()
    )
    with pytest.raises(ValueError):
        jsonrpc.encode(jsonrpc.request(1, "m", {"x": float("nan")}))
    with pytest.raises(ValueError):
        jsonrpc.encode(jsonrpc.request(1, "m", {"x": "\ud800"}))


def test_an_event_stream_that_goes_on_after_its_answer_does_not_hold_the_call() -> None:
    async def call(request: httpx2.Request) -> httpx2.Response:
        request_id = json.loads(request.content)["id"]

        async def forever() -> AsyncIterator[bytes]:
            answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}
            yield f"data: {json.dumps(answer)}\n\n".encode()
            await anyio.Event().wait()  # and the stream never ends
            yield b""

        return httpx2.Response(200, headers=EVENT_STREAM, content=forever())

    async def work(wire: Streamable) -> None:
        assert await wire.request("tools/call", {"name": "x"}) == {"content": []}
        assert not wire.dead.is_set()

    _run(lambda: _over_http(call, work))


def test_a_failure_on_one_http_request_fails_those_in_flight_at_once() -> None:
    async def call(request: httpx2.Request) -> httpx2.Response:
        if b'"bad"' in request.content:
            return httpx2.Response(
                200, text="not json", headers={"content-type": "application/json"}
            )
        await anyio.Event().wait()  # the other one is never answered
        raise AssertionError

    async def work(wire: Streamable) -> None:
        failed: list[str] = []

        async def waiting() -> None:
            with pytest.raises(WireError, match="failed: not JSON") as raised:
                await wire.request("tools/call", {"name": "wait"})
            failed.append(str(raised.value))

        wire.timeout = BOUND  # a NoAnswer would come too late: the failure ends it first
        async with anyio.create_task_group() as group:
            group.start_soon(waiting)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(Malformed):
                await wire.request("tools/call", {"name": "bad"})
        assert len(failed) == 1

    _run(lambda: _over_http(call, work))
