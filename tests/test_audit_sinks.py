"""Streaming SIEM sinks against real local receivers (files, UDP and TCP syslog servers,
an HTTP server), on both stores: order, batching, cursors, outages and catch-up."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import free_port

from tether import Tether
from tether.audit.export import render
from tether.audit.log import AuditLog
from tether.audit.record import Entry
from tether.audit.sinks import (
    SYSLOG_FACILITY,
    SinkRunner,
    SyslogSink,
    _State,
    make_sink,
    syslog_severity,
)
from tether.config import SinkConfig
from tether.store import Store

VERSION = "9.9.9-test"
RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)",
    re.DOTALL,
)


# ---- helpers ---------------------------------------------------------------------------


def add_events(tether: Tether, n: int, type: str = "test.event") -> list[int]:
    return [
        seq
        for i in range(n)
        for seq in tether.events.record(
            Entry.of(type, actor="admin", subject=f"subject-{i}", reason=f"r{i}")
        )
    ]


def bodies(tether: Tether, after: int = 0) -> list[str]:
    return [row[-1] for row in tether.events.bodies(after=after)]


def runner(tether: Tether, *configs: SinkConfig, **kw: Any) -> SinkRunner:
    return SinkRunner(tether.store, tether.events, configs, version=VERSION, **kw)


def status_of(r: SinkRunner, name: str) -> dict[str, Any]:
    [found] = [s for s in r.status() if s["name"] == name]
    return found


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


class UdpReceiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(70_000)
            except TimeoutError:
                continue
            self.messages.append(data.decode("utf-8"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class TcpReceiver:
    """A syslog-over-TCP receiver that insists on RFC 6587 octet counting."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.messages: list[str] = []
        self.errors: list[str] = []
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.1)
            self.connections.append(conn)
            thread = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                head, space, rest = buffer.partition(b" ")
                if not space:
                    break
                if not head.isdigit() or head.startswith(b"0"):
                    self.errors.append(f"bad frame length {head[:20]!r}")
                    return
                size = int(head)
                if len(rest) < size:
                    break
                self.messages.append(rest[:size].decode("utf-8"))
                buffer = rest[size:]

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(5)


class HttpReceiver:
    """A real HTTP server that records every POST (headers and body lines)."""

    def __init__(self, port: int = 0, status: int = 200, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode("utf-8")
                if delay:
                    time.sleep(delay)
                if receiver.status < 300:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.status = status
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def lines(self) -> list[str]:
        return [line for r in self.requests for line in r["body"].splitlines()]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receivers() -> Iterator[list[Any]]:
    """Receivers a test starts, stopped afterwards whatever happened."""
    started: list[Any] = []
    yield started
    for r in started:
        with contextlib.suppress(OSError):
            r.stop()


@pytest.fixture
def runners() -> Iterator[list[SinkRunner]]:
    made: list[SinkRunner] = []
    yield made
    for r in made:
        r.stop()


def parse_syslog(message: str) -> dict[str, str]:
    match = RFC5424.fullmatch(message)
    assert match is not None, message
    return match.groupdict()


# ---- the file sink ---------------------------------------------------------------------


def test_file_sink_delivers_in_order_and_a_new_runner_resumes(tether: Tether, tmp_path) -> None:
    add_events(tether, 5)
    path = tmp_path / "audit.jsonl"
    config = SinkConfig(name="file", kind="file", format="jsonl", path=path)
    first = runner(tether, config)
    size = tether.events.size()
    assert status_of(first, "file") | {"updated_at": None} == {
        "name": "file",
        "kind": "file",
        "format": "jsonl",
        "cursor": 0,
        "lag": size,
        "last_error": None,
        "updated_at": None,
        "failures": 0,
    }

    assert first.deliver_once() == size  # a new sink delivers the whole log
    assert path.read_text(encoding="utf-8").splitlines() == bodies(tether)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == list(
        range(1, size + 1)
    )
    assert status_of(first, "file")["cursor"] == size
    assert status_of(first, "file")["lag"] == 0
    assert first.deliver_once() == 0
    first.stop()

    add_events(tether, 3)
    second = runner(tether, config)  # as after a restart: resumes from the stored cursor
    assert second.deliver_once() == 3
    assert path.read_text(encoding="utf-8").splitlines() == bodies(tether)  # no gap, no dup
    assert status_of(second, "file")["cursor"] == tether.events.size()
    second.stop()


def test_batches_are_bounded_and_all_pending_is_delivered(tether: Tether, tmp_path) -> None:
    add_events(tether, 7)
    path = tmp_path / "out.jsonl"
    r = runner(tether, SinkConfig(name="f", kind="file", format="jsonl", path=path, batch_size=2))
    assert r.deliver_once() == tether.events.size()
    assert path.read_text().splitlines() == bodies(tether)
    r.stop()


def test_file_sink_outage_then_fixed(tether: Tether, tmp_path) -> None:
    directory = tmp_path / "siem"
    directory.mkdir()
    path = directory / "audit.jsonl"
    config = SinkConfig(name="f", kind="file", format="jsonl", path=path)
    r = runner(tether, config)
    delivered = r.deliver_once()
    before = path.read_text()

    path.unlink()
    directory.rmdir()  # the directory is gone: appends fail, and it is not re-created
    add_events(tether, 4)
    assert r.deliver_once() == 0
    state = status_of(r, "f")
    assert state["cursor"] == delivered
    assert state["lag"] == 4
    assert "FileNotFoundError" in state["last_error"]
    assert state["failures"] == 1

    directory.mkdir()
    path.write_text(before)
    assert r.deliver_once() == 4
    assert path.read_text().splitlines() == bodies(tether)
    state = status_of(r, "f")
    assert (state["cursor"], state["lag"], state["last_error"], state["failures"]) == (
        tether.events.size(),
        0,
        None,
        0,
    )
    r.stop()


# ---- syslog ----------------------------------------------------------------------------


@pytest.mark.slow
def test_syslog_udp_sends_one_rfc5424_datagram_per_event(tether: Tether, receivers) -> None:
    udp = UdpReceiver()
    receivers.append(udp)
    add_events(tether, 2)
    add_events(tether, 1, type="access.refused")
    config = SinkConfig(name="udp", kind="syslog", format="jsonl", host="127.0.0.1", port=udp.port)
    r = runner(tether, config)
    size = tether.events.size()
    assert r.deliver_once() == size
    wait_for(lambda: len(udp.messages) == size)

    expected = bodies(tether)
    assert [parse_syslog(m)["msg"] for m in udp.messages] == expected
    for message, body in zip(udp.messages, expected, strict=True):
        fields, event = parse_syslog(message), json.loads(body)
        assert fields["time"] == event["time"]
        assert fields["host"] == socket.gethostname()
        assert (fields["app"], fields["procid"], fields["sd"]) == ("tether", "-", "-")
        assert fields["msgid"] == event["type"]
        facility, severity = divmod(int(fields["pri"]), 8)
        assert facility == SYSLOG_FACILITY
        assert severity == (4 if event["type"] == "access.refused" else 5)
    assert status_of(r, "udp")["cursor"] == size
    r.stop()


@pytest.mark.slow
def test_syslog_tcp_uses_octet_counting(tether: Tether, receivers) -> None:
    tcp = TcpReceiver()
    receivers.append(tcp)
    tether.events.record(
        Entry.of("subject.with spaces", actor="admin", subject="x", reason="ünïcode ✓")
    )
    add_events(tether, 3)
    config = SinkConfig(
        name="tcp",
        kind="syslog",
        protocol="tcp",
        format="jsonl",
        host="127.0.0.1",
        port=tcp.port,
        batch_size=2,
    )
    r = runner(tether, config)
    size = tether.events.size()
    assert r.deliver_once() == size
    wait_for(lambda: len(tcp.messages) == size)
    assert tcp.errors == []
    assert [parse_syslog(m)["msg"] for m in tcp.messages] == bodies(tether)
    assert len(tcp.connections) == 1  # one connection, kept across batches
    assert parse_syslog(tcp.messages[-4])["msgid"] == "subject.withspaces"
    r.stop()


@pytest.mark.slow
def test_syslog_tcp_outage_and_catch_up(tether: Tether, receivers) -> None:
    tcp = TcpReceiver()
    receivers.append(tcp)
    add_events(tether, 2)
    config = SinkConfig(
        name="tcp", kind="syslog", protocol="tcp", format="jsonl", host="127.0.0.1", port=tcp.port
    )
    r = runner(tether, config)
    delivered = r.deliver_once()
    wait_for(lambda: len(tcp.messages) == delivered)

    tcp.stop()  # the receiver goes away: its connection closes, nothing listens
    missed = add_events(tether, 3)
    assert r.deliver_once() == 0
    assert r.deliver_once() == 0
    state = status_of(r, "tcp")
    assert state["cursor"] == delivered
    assert state["lag"] == 3
    assert "ConnectionRefusedError" in state["last_error"]

    back = TcpReceiver(port=tcp.port)
    receivers.append(back)
    assert r.deliver_once() == 3
    wait_for(lambda: len(back.messages) == 3)
    assert [json.loads(parse_syslog(m)["msg"])["seq"] for m in back.messages] == missed
    assert [parse_syslog(m)["msg"] for m in back.messages] == bodies(tether, after=delivered)
    assert back.errors == []
    state = status_of(r, "tcp")
    assert (state["cursor"], state["last_error"]) == (tether.events.size(), None)
    r.stop()


def test_syslog_severity() -> None:
    assert syslog_severity({"type": "decision", "decision": "deny"}) == 4
    assert syslog_severity({"type": "token.refused", "decision": "deny"}) == 4
    assert syslog_severity({"type": "access.refused", "decision": None}) == 4
    assert syslog_severity({"type": "decision", "decision": "allow"}) == 6
    assert syslog_severity({"type": "agent.registered", "decision": None}) == 5


def test_syslog_header_fields_are_clean() -> None:
    sink = SyslogSink(
        SinkConfig(name="s", kind="syslog", host="127.0.0.1", port=514), hostname="my host"
    )
    message = sink.message({"type": "x" * 40, "time": "2026-01-01T12:00:00.000000Z"}, "LINE")
    fields = parse_syslog(message)
    assert fields["host"] == "myhost"
    assert fields["msgid"] == "x" * 32
    assert fields["pri"] == str(SYSLOG_FACILITY * 8 + 5)
    assert fields["msg"] == "LINE"


# ---- the webhook -----------------------------------------------------------------------


@pytest.mark.slow
def test_webhook_posts_bounded_batches_with_headers(tether: Tether, receivers) -> None:
    http = HttpReceiver()
    receivers.append(http)
    add_events(tether, 6)
    config = SinkConfig(
        name="hook",
        kind="webhook",
        format="jsonl",
        url=http.url,
        headers={"Authorization": "Bearer s3cret-token", "X-Tenant": "acme"},
        batch_size=3,
    )
    r = runner(tether, config)
    size = tether.events.size()
    assert r.deliver_once() == size
    assert http.lines() == bodies(tether)
    sizes = [len(req["body"].splitlines()) for req in http.requests]
    assert sizes == [3] * (size // 3) + ([size % 3] if size % 3 else [])
    seq = 1
    for req in http.requests:
        headers = {k.lower(): v for k, v in req["headers"].items()}
        assert req["path"] == "/ingest"
        assert headers["authorization"] == "Bearer s3cret-token"
        assert headers["x-tenant"] == "acme"
        assert headers["content-type"] == "application/x-ndjson"
        count = len(req["body"].splitlines())
        assert req["body"].endswith("\n")
        assert (headers["x-tether-first-seq"], headers["x-tether-last-seq"]) == (
            str(seq),
            str(seq + count - 1),
        )
        seq += count
    r.stop()


@pytest.mark.slow
def test_webhook_url_credentials_become_basic_auth(tether: Tether, receivers) -> None:
    http = HttpReceiver()
    receivers.append(http)
    add_events(tether, 1)
    url = http.url.replace("http://", "http://us%40er:p%3Ass@") + "?key=1"
    r = runner(tether, SinkConfig(name="hook", kind="webhook", format="jsonl", url=url))
    assert r.deliver_once() == tether.events.size()
    [request] = http.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert headers["host"] == f"127.0.0.1:{http.port}"
    assert request["path"] == "/ingest?key=1"
    r.stop()


@pytest.mark.slow
def test_webhook_outage_and_catch_up(tether: Tether, receivers, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    http = HttpReceiver()
    receivers.append(http)
    add_events(tether, 2)
    secret = "Bearer very-secret-value"
    config = SinkConfig(
        name="hook",
        kind="webhook",
        format="jsonl",
        url=http.url + "/tok_pathsecret",
        headers={"Authorization": secret},
        batch_size=2,
        timeout_ms=2000,
    )
    r = runner(tether, config)
    delivered = r.deliver_once()
    assert len(http.lines()) == delivered

    http.stop()
    missed = add_events(tether, 5)
    assert r.deliver_once() == 0
    state = status_of(r, "hook")
    assert state["cursor"] == delivered
    assert state["lag"] == 5
    assert state["last_error"]
    assert "ConnectError" in state["last_error"]
    ours = "\n".join(rec.getMessage() for rec in caplog.records if rec.name.startswith("tether"))
    assert "hook" in ours  # the failure was logged, without its secrets
    for text in (state["last_error"], ours):
        assert "very-secret-value" not in text
        assert "tok_pathsecret" not in text

    back = HttpReceiver(port=http.port)
    receivers.append(back)
    assert r.deliver_once() == 5
    assert [json.loads(line)["seq"] for line in back.lines()] == missed
    assert back.lines() == bodies(tether, after=delivered)
    assert [len(req["body"].splitlines()) for req in back.requests] == [2, 2, 1]
    state = status_of(r, "hook")
    assert (state["cursor"], state["lag"], state["last_error"]) == (tether.events.size(), 0, None)
    r.stop()


@pytest.mark.slow
def test_webhook_non_2xx_is_a_failure(tether: Tether, receivers) -> None:
    http = HttpReceiver(status=503)
    receivers.append(http)
    config = SinkConfig(name="hook", kind="webhook", format="jsonl", url=http.url)
    r = runner(tether, config)
    assert r.deliver_once() == 0
    state = status_of(r, "hook")
    assert state["cursor"] == 0
    assert state["last_error"] == "the webhook answered HTTP 503"

    http.status = 204
    assert r.deliver_once() == tether.events.size()
    assert http.lines() == bodies(tether)
    r.stop()


# ---- the runner ------------------------------------------------------------------------


def test_a_failing_sink_does_not_hold_up_the_others(tether: Tether, tmp_path) -> None:
    path = tmp_path / "ok.jsonl"
    down = f"http://127.0.0.1:{free_port()}/"
    r = runner(
        tether,
        SinkConfig(name="down", kind="webhook", format="jsonl", url=down),
        SinkConfig(name="ok", kind="file", format="jsonl", path=path),
    )
    size = tether.events.size()
    assert r.deliver_once() == size
    assert path.read_text().splitlines() == bodies(tether)
    by_name = {s["name"]: s for s in r.status()}
    assert by_name["ok"]["cursor"] == size
    assert by_name["ok"]["last_error"] is None
    assert by_name["down"]["cursor"] == 0
    assert by_name["down"]["lag"] == size
    assert by_name["down"]["last_error"]
    r.stop()


@pytest.mark.slow
def test_background_threads_deliver_and_retry_with_backoff(
    tether: Tether, tmp_path, receivers, runners
) -> None:
    path = tmp_path / "bg.jsonl"
    port = free_port()
    r = runner(
        tether,
        SinkConfig(name="file", kind="file", format="jsonl", path=path),
        SinkConfig(
            name="hook",
            kind="webhook",
            format="jsonl",
            url=f"http://127.0.0.1:{port}/in",
            retry_initial_ms=20,
            retry_max_ms=100,
        ),
        poll_interval=30.0,  # only commits (and retries) wake the threads in this test
    )
    runners.append(r)
    r.start()
    add_events(tether, 3)
    wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == tether.events.size())
    assert path.read_text().splitlines() == bodies(tether)

    wait_for(lambda: status_of(r, "hook")["failures"] >= 2)  # retried, not given up
    assert status_of(r, "hook")["cursor"] == 0

    http = HttpReceiver(port=port)
    receivers.append(http)
    wait_for(lambda: len(http.lines()) == tether.events.size())
    assert http.lines() == bodies(tether)

    add_events(tether, 2)  # the commit wakes both threads
    wait_for(lambda: len(http.lines()) == tether.events.size())
    wait_for(lambda: len(path.read_text().splitlines()) == tether.events.size())
    assert http.lines() == bodies(tether)
    assert path.read_text().splitlines() == bodies(tether)
    wait_for(lambda: all(s["lag"] == 0 for s in r.status()))
    r.stop()
    assert all(s["last_error"] is None for s in r.status())


def test_backoff_doubles_up_to_the_maximum() -> None:
    config = SinkConfig(
        name="x", kind="file", path=Path("/nonexistent"), retry_initial_ms=100, retry_max_ms=1000
    )
    state = _State(config, make_sink(config))
    delays = []
    for failures in range(1, 8):
        state.failures = failures
        delays.append(state.backoff())
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    state.failures = 10_000
    assert state.backoff() == 1.0


@pytest.mark.slow
def test_two_processes_deliver_each_batch_once(tether: Tether, receivers) -> None:
    """Two runners on two engines (as two processes would be) share one cursor: nothing
    is lost, and on PostgreSQL (row lock) no batch is delivered twice."""
    http = HttpReceiver(delay=0.05)
    receivers.append(http)
    add_events(tether, 12)
    config = SinkConfig(name="shared", kind="webhook", format="jsonl", url=http.url, batch_size=2)
    other_store = Store.open(tether.settings.database_url)
    try:
        one = runner(tether, config)
        two = SinkRunner(
            other_store, AuditLog(other_store, tether.clock), [config], version=VERSION
        )
        done: list[int] = []

        def go(r: SinkRunner) -> None:
            for _ in range(3):
                done.append(r.deliver_once())

        threads = [threading.Thread(target=go, args=(r,)) for r in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        one.deliver_once()  # whatever a skipped round left
        seqs = [json.loads(line)["seq"] for line in http.lines()]
        size = tether.events.size()
        assert set(seqs) == set(range(1, size + 1))
        if tether.store.dialect == "postgresql":
            assert sorted(seqs) == list(range(1, size + 1))
        assert status_of(one, "shared")["cursor"] == size
        one.stop()
        two.stop()
    finally:
        other_store.dispose()


@pytest.mark.parametrize("fmt", ["ocsf", "cef"])
@pytest.mark.slow
def test_siem_formats_are_rendered_per_event(tether: Tether, tmp_path, receivers, fmt) -> None:
    add_events(tether, 2)
    add_events(tether, 1, type="access.refused")
    http, udp = HttpReceiver(), UdpReceiver()
    receivers.extend([http, udp])
    path = tmp_path / f"out.{fmt}"
    r = runner(
        tether,
        SinkConfig(name="file", kind="file", format=fmt, path=path),
        SinkConfig(name="hook", kind="webhook", format=fmt, url=http.url),
        SinkConfig(name="syslog", kind="syslog", format=fmt, host="127.0.0.1", port=udp.port),
    )
    size = tether.events.size()
    assert r.deliver_once() == 3 * size
    events = [json.loads(body) for body in bodies(tether)]
    expected = [render(body, fmt, version=VERSION) for body in bodies(tether)]
    assert path.read_text(encoding="utf-8").splitlines() == expected
    assert http.lines() == expected
    wait_for(lambda: len(udp.messages) == size)
    assert [parse_syslog(m)["msg"] for m in udp.messages] == expected
    content_type = {k.lower(): v for k, v in http.requests[0]["headers"].items()}["content-type"]
    if fmt == "cef":
        from tether.audit.cef import parse_cef

        assert content_type == "text/plain; charset=utf-8"
        for message, event in zip(udp.messages, events, strict=True):
            header, extensions = parse_cef(message)  # the syslog header is skipped
            assert header[0] == "CEF:0"
            assert (header[3], header[4]) == (VERSION, event["type"])
            assert extensions["externalId"] == str(event["seq"])
    else:
        assert content_type == "application/x-ndjson"
        assert all(isinstance(json.loads(line), dict) for line in expected)
    r.stop()
