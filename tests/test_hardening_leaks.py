"""Issue 13, items 17, 20 and 22: secrets never leak through an upstream's answers or
error text, and a webhook receiver can neither exhaust memory nor stall the store."""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import httpx2
import pytest
from conftest import spec
from sqlalchemy import text as sql
from sqlalchemy import update
from test_gateway_enforce import http_upstream  # noqa: F401  (a fixture)
from test_gateway_http import SERVER, _connect, _served, _text

from tether.audit.log import AuditLog
from tether.audit.record import Entry
from tether.audit.sinks import SinkRunner
from tether.callers import Caller
from tether.config import SinkConfig
from tether.core import Tether
from tether.errors import InvalidRequest
from tether.gateway import scrub
from tether.gateway.enforce import Gateway
from tether.gateway.upstream import UpstreamSession
from tether.grants import GrantSpec
from tether.store import Store, sink_cursors
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()


def _agent_token(tether: Tether, server: str, name: str = "helper") -> str:
    agent = tether.registry.get(ADMIN, name)
    resource = f"{tether.settings.issuer}/mcp/{server}"
    return tether.tokens.client_credentials(agent, resource, None, None).access_token


def recorded(tether: Tether) -> str:
    return "\n".join(row[-1] for row in tether.events.bodies(after=0))


@pytest.mark.slow
def test_item_20_a_credential_with_a_newline_never_leaks_into_errors(
    tether: Tether,
    http_upstream: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = f"ghp_{secrets.token_hex(16)}"
    monkeypatch.setenv("TETHER_TEST_LEAKY_SECRET", core + "\n")
    tether.upstreams.add(
        ADMIN,
        UpstreamSpec(
            "test", url=http_upstream, credentials=["Authorization=env:TETHER_TEST_LEAKY_SECRET"]
        ),
    )
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/echo"))
    token = _agent_token(tether, "test")
    admin = tether.admin_tokens.create()
    caplog.set_level(logging.DEBUG)

    async def work(transport: Any) -> tuple[str, str]:
        async with _connect(transport, token) as c:
            said = await c.call_tool("echo", {"text": "hello"})
            assert said.is_error
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as h:
            listed = await h.get(
                "/v1/gateway/servers", headers={"Authorization": f"Bearer {admin}"}
            )
            assert listed.status_code == 200
        return _text(said), listed.text

    said, listed = anyio.run(_served, tether, work)
    assert "env:TETHER_TEST_LEAKY_SECRET" in said, said
    seen = {"answer": said, "list": listed, "log": caplog.text, "audit": recorded(tether)}
    for where, text in seen.items():
        assert core not in text, (where, text)


def test_item_20_every_representation_of_a_secret_is_redacted() -> None:
    from tether.redact import Redactor

    value = f'ghp_{secrets.token_hex(8)}"é\n\x00'
    shown = [
        value,
        repr(value),
        repr(value.encode()),
        json.dumps(value),
        json.dumps(value, ensure_ascii=False),
        json.dumps(repr(value.encode())),  # a bytes repr inside a JSON event
        quote(value, safe=""),
        quote_plus(value),
        value.encode("unicode_escape").decode(),
        value.strip(),
        value.splitlines()[0],  # what a first-line-only message keeps
    ]
    redactor = Redactor([value])
    for text in shown:
        cleaned = redactor.redact(f"Illegal header value {text}; retrying")
        assert "ghp_" not in cleaned, (text, cleaned)
        assert cleaned.startswith("Illegal header value ") and cleaned.endswith("; retrying")
    error = RuntimeError(f"Illegal header value {value.encode()!r} " + "x" * 500)
    assert "ghp_" not in redactor.describe(error, limit=30)  # redacted before it is cut


def test_item_20_log_records_never_carry_a_secret_in_play(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tether.redact import SECRETS

    core = f"tok_{secrets.token_hex(12)}"
    value = core + "\r\n"
    caplog.set_level(logging.DEBUG)
    SECRETS.add([value])
    try:
        logger = logging.getLogger("some.library")
        logger.warning("sending header %r", value.encode())
        try:
            raise ValueError(f"Illegal header value {value!r}")
        except ValueError:
            logger.exception("the request failed")
    finally:
        SECRETS.discard([value])
    assert "the request failed" in caplog.text and "sending header" in caplog.text
    assert core not in caplog.text


@pytest.mark.parametrize(
    ("transport", "bad"),
    [("http", "tok\n"), ("http", " tok"), ("http", "t\x7fok"), ("stdio", "t\x00ok")],
)
def test_item_20_a_credential_value_is_checked_before_use(transport: str, bad: str) -> None:
    from tether.upstreams.credentials import parse_credential, resolve

    credential = parse_credential("X_KEY=env:TETHER_TEST_BAD", transport)
    with pytest.raises(InvalidRequest) as refused:
        resolve(credential, {"TETHER_TEST_BAD": bad}, transport=transport)
    assert "env:TETHER_TEST_BAD" in refused.value.description
    assert "tok" not in refused.value.description
    good = "Bearer tok\tline" if transport == "http" else "multi\nline"
    assert resolve(credential, {"TETHER_TEST_BAD": good}, transport=transport) == good


@pytest.mark.slow
def test_item_20_a_sink_with_a_bad_header_value_leaves_last_error_clean(
    tether: Tether, caplog: pytest.LogCaptureFixture
) -> None:
    core = f"sk_{secrets.token_hex(12)}"
    receiver = Receiver(answer_now)
    try:
        tether.events.record(Entry.of("test.event", actor="admin", subject="s", reason="r"))
        config = SinkConfig(
            name="hook",
            kind="webhook",
            format="jsonl",
            url=f"{receiver.url}?token={core}x",
            headers={"Authorization": f"Bearer {core}\n"},
        )
        with SinkRunner(tether.store, tether.events, [config], version="t") as runner:
            assert runner.deliver_once() == 0
            [status] = runner.status()
    finally:
        receiver.stop()
    assert "Authorization" in status["last_error"], status
    assert core not in status["last_error"]
    assert core not in caplog.text
    assert receiver.requests == 0  # the header never left


# ---- item 17: injected credentials never come back out -------------------------------


@pytest.mark.slow
def test_item_17_an_upstream_echoing_its_credential_is_redacted_and_recorded(
    tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"upstream-{secrets.token_hex(12)}"
    monkeypatch.setenv("TETHER_TEST_ECHOED_SECRET", value)
    tether.upstreams.add(
        ADMIN,
        UpstreamSpec(
            "test",
            command=f"{sys.executable} {SERVER}",
            credentials=["API_SECRET=env:TETHER_TEST_ECHOED_SECRET"],
        ),
    )
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/env_value"))
    token = _agent_token(tether, "test")

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        gate = Gateway(tether, "test")
        prints = scrub.fingerprinter(tether.settings.home)
        async with UpstreamSession(tether.upstreams.get("test"), fingerprint=prints) as upstream:
            said = await gate.call_tool(token, upstream, "env_value", {"name": "API_SECRET"})
            failed = await gate.call_tool(
                token, upstream, "env_value", {"name": "API_SECRET", "fail": True}
            )
            other = await gate.call_tool(token, upstream, "env_value", {"name": "HOME"})
            return said, failed, other

    said, failed, other = anyio.run(run)
    print_ = scrub.fingerprinter(tether.settings.home)(value)
    mark = f"[redacted:injected-credential:{print_}]"
    assert mark in json.dumps(said) and value not in json.dumps(said)
    assert failed["isError"] and f"cannot use '{mark}'" in json.dumps(failed)
    assert value not in json.dumps(failed)
    assert not other.get("isError") and "[redacted" not in json.dumps(other)
    tether.events.flush()
    results = [e.detail for e in tether.events.list(type="tool.result")]
    secret = {"type": "injected-credential", "fingerprint": print_, "credential": "API_SECRET"}
    assert results[0]["redacted"] == {
        "count": 2,
        "types": {"injected-credential": 2},
        "secrets": [{**secret, "count": 2}],
    }, results
    assert results[1]["redacted"]["secrets"] == [{**secret, "count": 1}]
    assert "redacted" not in results[2]
    assert value not in recorded(tether)


# ---- item 22: a webhook receiver can neither fill memory nor stall the store ---------


class Receiver:
    """A raw HTTP/1.1 receiver on 127.0.0.1: reads each request whole, then ``answer``
    writes whatever it writes (through :meth:`send`, which counts the bytes); notes when
    the client closed the connection under it (a write failed)."""

    def __init__(self, answer: Callable[[Receiver, socket.socket], None]) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.requests = 0
        self.served = 0
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.served += len(data)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
                conn.settimeout(10)
                try:
                    if self._request(conn):
                        self.answer(self, conn)
                except OSError:
                    self.closed.set()

    def _request(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65_536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += conn.recv(65_536)
        self.requests += 1
        self.arrived.set()
        return True

    def stop(self) -> None:
        self.stopping.set()
        self.release.set()
        self._thread.join(10)
        self.listener.close()


def answer_now(receiver: Receiver, conn: socket.socket) -> None:
    receiver.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


HUGE = 64 * 1024 * 1024


def huge_answer(status: int) -> Callable[[Receiver, socket.socket], None]:
    def answer(receiver: Receiver, conn: socket.socket) -> None:
        receiver.send(conn, f"HTTP/1.1 {status} X\r\nContent-Length: {HUGE}\r\n\r\n".encode())
        chunk = b"x" * 65_536
        for _ in range(HUGE // len(chunk)):
            receiver.send(conn, chunk)

    return answer


def drip(receiver: Receiver, conn: socket.socket) -> None:
    """The status line and headers, a byte at a time (about 3 s in all)."""
    answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 300 + b"\r\nContent-Length: 0\r\n\r\n"
    for byte in answer:
        receiver.send(conn, bytes([byte]))
        receiver.stopping.wait(0.01)


def held(receiver: Receiver, conn: socket.socket) -> None:
    """Answer only once the test releases it."""
    receiver.release.wait(30)
    answer_now(receiver, conn)


def webhook(receiver: Receiver, **kw: Any) -> SinkConfig:
    return SinkConfig(name="hook", kind="webhook", format="jsonl", url=receiver.url, **kw)


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.slow
def test_item_22_a_huge_answer_is_never_read(tether: Tether, status: int) -> None:
    receiver = Receiver(huge_answer(status))
    try:
        tether.events.record(Entry.of("test.event", actor="admin", subject="s", reason="r"))
        with SinkRunner(tether.store, tether.events, [webhook(receiver)], version="t") as r:
            delivered = r.deliver_once()
            [state] = r.status()
        assert receiver.closed.wait(10)  # the answer was cut off, not read to its end
    finally:
        receiver.stop()
    assert receiver.served < 4 * 1024 * 1024, receiver.served  # of 64 MiB offered
    if status == 200:
        assert delivered == tether.events.size() and state["last_error"] is None
    else:
        assert delivered == 0 and state["last_error"] == "the webhook answered HTTP 500"


@pytest.mark.slow
def test_item_22_a_dripping_receiver_hits_the_deadline(tether: Tether) -> None:
    receiver = Receiver(drip)
    try:
        tether.events.record(Entry.of("test.event", actor="admin", subject="s", reason="r"))
        config = webhook(receiver, timeout_ms=300)
        with SinkRunner(tether.store, tether.events, [config], version="t") as r:
            delivered = r.deliver_once()
            [state] = r.status()
        assert receiver.closed.wait(10)  # Tether hung up on it
    finally:
        receiver.stop()
    assert delivered == 0 and state["cursor"] == 0
    assert "within 300 ms" in state["last_error"] and "deadline" in state["last_error"]


@pytest.mark.slow
def test_item_22_no_transaction_is_held_while_a_receiver_waits(tether: Tether) -> None:
    receiver = Receiver(held)
    other = Store.open(tether.settings.database_url)
    try:
        tether.events.record(Entry.of("test.event", actor="admin", subject="s", reason="r"))
        pending = tether.events.size()
        r = SinkRunner(tether.store, tether.events, [webhook(receiver)], version="t")
        done: list[int] = []
        sending = threading.Thread(target=lambda: done.append(r.deliver_once()))
        sending.start()
        assert receiver.arrived.wait(10)
        # while the receiver holds its answer: another connection appends to the audit
        # log and writes the sink's own cursor row, without waiting for the send
        AuditLog(other, tether.clock).record(Entry.of("test.other", actor="admin", subject="s"))
        with other.write() as conn:
            if other.dialect == "postgresql":
                conn.execute(sql("SET LOCAL lock_timeout = '2s'"))
            conn.execute(
                update(sink_cursors)
                .where(sink_cursors.c.name == "hook")
                .values(last_error="touched")
            )
        receiver.release.set()
        sending.join(30)
        r.stop()
    finally:
        receiver.stop()
        other.dispose()
    assert done == [pending]
