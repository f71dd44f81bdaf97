"""Streaming SIEM sinks: audit events pushed to a file, syslog or a webhook as they are
committed, each sink with a durable cursor in the store.

**Cursors.** Every sink has a row in ``sink_cursors``: the ``seq`` of the last event it
delivered. A sink without a row gets one at 0, so a new sink delivers the whole log from
the first event (to start a new sink "from now", set its cursor before starting it).
A batch is read after the cursor, rendered (:func:`tether.audit.export.render`), sent,
and only once the send succeeded is the cursor advanced, in a store write transaction.

**At least once.** An event is never skipped: a failed send leaves the cursor where it
was and the same events are sent again on the next attempt. A duplicate happens only if
the process dies (or the store fails) between a successful send and the cursor update,
or if a send is cut off after the receiver took part of it; receivers that must not see
duplicates can drop events whose ``seq`` they have already seen.

**No transaction waits for a receiver.** The cursor is read in one short transaction
and advanced in another, by compare-and-set on its old value; nothing of the store is
held while a batch is sent, so a slow receiver never holds up another writer. On
PostgreSQL a batch is delivered while holding the sink's session-level advisory lock
(``pg_try_advisory_lock``, on a connection in autocommit: no transaction, no row lock):
a second process finds it taken and leaves the sink alone, so two processes never
deliver the same batch. On SQLite, within one process a lock per sink serialises
deliveries, and two processes sharing one SQLite file may both send a batch (never lose
one).

**Failures.** A failed send records ``last_error`` on the cursor row (never a header, a
URL or a secret: every representation of them is redacted, :mod:`tether.redact`) and
the sink retries with exponential backoff: ``retry_initial_ms``, doubling up to
``retry_max_ms``. Each sink has its own thread, so a slow or broken sink
does not hold up the others.

The kinds:

* ``file``: the lines appended (one per event, ``\\n``-terminated), flushed and fsynced
  before the cursor moves; created with mode 0600 if new. The directory is not created:
  it must exist. The file is opened for each batch, so rotation by renaming is safe.
* ``syslog``: one RFC 5424 message per event, ``<PRI>1 TIME HOST tether - TYPE - LINE``
  with facility 13 (log audit), severity 4 (warning) for a deny or a refusal, 6
  (informational) for any other decision and 5 (notice) for every other event (a change).
  TIME is the event's time, TYPE its type (the MSGID, at most 32 ASCII characters), LINE
  the rendered event (no BOM, no structured data). Over UDP each message is one datagram
  (cut to 65,000 bytes); UDP acknowledges nothing, so the cursor moves once the kernel
  took the datagrams. Over TCP, messages are framed by octet counting (RFC 6587
  ``LEN SP MSG``); the connection is made when first needed, checked before each batch
  (a peer that closed it is noticed and reconnected to) and dropped after any error.
* ``webhook``: one HTTP POST per batch, the body being the rendered lines, each ending
  in ``\\n`` (newline-delimited: ``application/x-ndjson`` for ``ocsf`` and ``jsonl``,
  ``text/plain; charset=utf-8`` for ``cef``), with ``X-Tether-First-Seq`` and
  ``X-Tether-Last-Seq`` naming the batch's events and the configured headers added (they
  may replace ``Content-Type``). Any answer but 2xx (redirects are not followed) is a
  failure, and so is an exchange not over within ``timeout_ms``: a deadline for the whole
  request (connecting, sending, the answer's headers and body), not a per-read timeout.
  At most 4 KiB of an answer's body is read, the rest never (:mod:`tether.audit.poster`).
  A configured header whose value is no valid HTTP field value (a control character such
  as a trailing newline) fails every send, naming the header, never its value.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import select as _select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy import Connection, insert, select, update

from tether.audit.export import render
from tether.audit.log import AuditLog
from tether.audit.poster import DeadlinePassed, Poster
from tether.config import SinkConfig
from tether.errors import Conflict
from tether.redact import SECRETS, Redactor, is_field_value
from tether.safe_text import neutralise
from tether.store import Store, sink_cursors
from tether.store.locks import StoreLock

__all__ = [
    "SYSLOG_FACILITY",
    "FileSink",
    "Sink",
    "SinkRunner",
    "SyslogSink",
    "WebhookSink",
    "make_sink",
    "syslog_severity",
]

_logger = logging.getLogger("tether.audit.sinks")

SYSLOG_FACILITY = 13  # log audit
_WARNING, _NOTICE, _INFO = 4, 5, 6
_UDP_MAX = 65_000
_ERROR_MAX = 500
_POLL_SECONDS = 1.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DeliveryFailed(Exception):
    """A send failed; the message is safe to show and store (no secrets)."""


# ---- the sinks ---------------------------------------------------------------------------


class Sink:
    """Where a sink's lines go. ``send`` returns once they are delivered, or raises."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config

    def message(self, event: Mapping[str, Any], line: str) -> str:
        """What is sent for ``event`` whose rendered line is ``line`` (by default the line)."""
        return line

    def send(self, lines: list[str]) -> None:
        raise NotImplementedError

    def send_batch(self, lines: list[str], first: int, last: int) -> None:
        """Send the messages of events ``first`` to ``last`` (by default: :meth:`send`)."""
        self.send(lines)

    def close(self) -> None:
        """Release connections; the sink may be used again (it reconnects)."""

    def describe(self, exc: BaseException) -> str:
        """A one-line account of a failure, free of the secrets in play (:mod:`tether.redact`)."""
        if isinstance(exc, OSError) and exc.strerror:
            text = f"{type(exc).__name__}: {exc.strerror}"
            if exc.filename is not None:
                text += f": {exc.filename}"
            return SECRETS.redact(text)
        return SECRETS.redact(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__


class FileSink(Sink):
    """Appends lines to ``path`` and fsyncs before returning."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        assert config.path is not None
        self.path = Path(config.path)

    def send(self, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        existed = self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if not existed:  # make the new directory entry durable too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def syslog_severity(event: Mapping[str, Any]) -> int:
    """4 (warning) for a deny or a refusal, 6 (informational) for other decisions, 5
    (notice) for everything else."""
    kind = str(event.get("type") or "")
    if event.get("decision") == "deny" or kind.endswith(".refused"):
        return _WARNING
    if kind == "decision":
        return _INFO
    return _NOTICE


def _token(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or ``-``."""
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


class SyslogSink(Sink):
    """RFC 5424 over UDP (a datagram per message) or TCP (RFC 6587 octet counting)."""

    def __init__(self, config: SinkConfig, hostname: str | None = None) -> None:
        super().__init__(config)
        assert config.host is not None
        assert config.port is not None
        self.host = config.host
        self.port = config.port
        self.timeout = config.timeout_ms / 1000
        self.hostname = _token(hostname if hostname is not None else socket.gethostname(), 255)
        self._sock: socket.socket | None = None
        self._addr: Any = None

    def message(self, event: Mapping[str, Any], line: str) -> str:
        pri = SYSLOG_FACILITY * 8 + syslog_severity(event)
        stamp = _token(str(event.get("time") or ""), 64)
        msgid = _token(str(event.get("type") or ""), 32)
        return f"<{pri}>1 {stamp} {self.hostname} tether - {msgid} - {neutralise(line)}"

    def send(self, lines: list[str]) -> None:
        try:
            if self.config.protocol == "udp":
                self._send_udp(lines)
            else:
                self._send_tcp(lines)
        except BaseException:
            self.close()
            raise

    def _send_udp(self, lines: list[str]) -> None:
        if self._sock is None:
            family, kind, proto, _, addr = socket.getaddrinfo(
                self.host, self.port, 0, socket.SOCK_DGRAM
            )[0]
            self._sock = socket.socket(family, kind, proto)
            self._sock.settimeout(self.timeout)
            self._addr = addr
        for line in lines:
            self._sock.sendto(line.encode("utf-8")[:_UDP_MAX], self._addr)

    def _send_tcp(self, lines: list[str]) -> None:
        if self._sock is not None and not _open(self._sock):
            self.close()
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        frames = bytearray()
        for line in lines:
            data = line.encode("utf-8")
            frames += f"{len(data)} ".encode("ascii") + data
        self._sock.sendall(frames)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _open(sock: socket.socket) -> bool:
    """Whether a TCP connection to a syslog receiver (which never writes) is still up:
    a readable socket means the peer closed it or reset it."""
    try:
        readable, _, _ = _select.select([sock], [], [], 0)
        if not readable:
            return True
        return bool(sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):
        return False


class WebhookSink(Sink):
    """One HTTP POST per batch of newline-delimited lines (:class:`Poster`: one deadline
    for the whole exchange, the answer's body capped)."""

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        assert config.url is not None
        self.url = config.url
        content_type = (
            "text/plain; charset=utf-8" if config.format == "cef" else "application/x-ndjson"
        )
        headers = httpx.Headers({"Content-Type": content_type, "User-Agent": "tether-audit-sink"})
        headers.update(config.headers)  # case-insensitively: may replace Content-Type
        secret = dict(config.headers)
        parts = urlsplit(config.url)
        if parts.username is not None or parts.password is not None:  # basic auth, as httpx
            user = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            secret["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
            headers["Authorization"] = secret["Authorization"]
            self.url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self._headers = list(headers.items())
        self._secrets = _secrets_of(config.url, secret)
        self._redactor = Redactor(self._secrets)
        self._poster: Poster | None = None

    def send(self, lines: list[str]) -> None:
        self._post(lines, {})

    def send_batch(self, lines: list[str], first: int, last: int) -> None:
        self._post(lines, {"X-Tether-First-Seq": str(first), "X-Tether-Last-Seq": str(last)})

    def _post(self, lines: list[str], extra: Mapping[str, str]) -> None:
        for name, value in self.config.headers.items():
            if not is_field_value(value):  # never handed to a library that would echo it
                raise DeliveryFailed(
                    f"the configured header {name!r} has a value no HTTP header may carry "
                    "(a control character such as a trailing newline, a blank at either "
                    "end, or a non-ASCII character)"
                )
        if self._poster is None:
            self._poster = Poster(self.url, deadline=self.config.timeout_ms / 1000)
            SECRETS.add(self._secrets)  # kept out of every log line while connected
        body = "".join(line + "\n" for line in lines).encode("utf-8")
        try:
            status = self._poster.post(body, [*self._headers, *extra.items()])
        except DeadlinePassed:
            raise DeliveryFailed(
                f"the webhook did not answer within {self.config.timeout_ms} ms "
                "(the deadline of the whole request)"
            ) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"the webhook answered HTTP {status}")

    def close(self) -> None:
        poster, self._poster = self._poster, None
        if poster is not None:
            poster.close()
            SECRETS.discard(self._secrets)

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, DeliveryFailed):
            return str(exc)
        return self._redactor.redact(super().describe(exc))


def _secrets_of(url: str, headers: Mapping[str, str]) -> list[str]:
    """Text that must not appear in a message: header values, and the URL's password,
    query and path (webhook URLs often carry a token there), and the URL itself."""
    parts = urlsplit(url)
    found = [url, *headers.values()]
    found += [p for p in (parts.password, parts.query, parts.path) if p and p != "/"]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def make_sink(config: SinkConfig) -> Sink:
    if config.kind == "file":
        return FileSink(config)
    if config.kind == "syslog":
        return SyslogSink(config)
    return WebhookSink(config)


# ---- the runner --------------------------------------------------------------------------


class _State:
    """A sink, its lock, its retry schedule and its thread's wake-up."""

    def __init__(self, config: SinkConfig, sink: Sink) -> None:
        self.config = config
        self.sink = sink
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.ready = False  # its cursor row exists
        self.failures = 0
        self.due = 0.0  # time.monotonic() of the next attempt by the thread
        self.last_error: str | None = None
        self.thread: threading.Thread | None = None

    def backoff(self) -> float:
        """Seconds to wait after ``failures`` consecutive failures."""
        initial, most = self.config.retry_initial_ms, self.config.retry_max_ms
        doublings = min(max(self.failures - 1, 0), 62)
        return min(initial << doublings, max(most, initial)) / 1000


class SinkRunner:
    """Delivers the audit log to its sinks: :meth:`deliver_once` on demand, or a thread per
    sink between :meth:`start` and :meth:`stop`, woken by commits in this process and
    polling every ``poll_interval`` seconds for those of other processes. Given the
    store's ``lock``, the threads deliver only while this process holds it (a background
    job that runs once per store)."""

    name = "audit-sinks"

    def __init__(
        self,
        store: Store,
        log: AuditLog,
        sinks: Sequence[SinkConfig],
        *,
        version: str,
        clock: Callable[[], datetime] = _utcnow,
        poll_interval: float = _POLL_SECONDS,
        sink_factory: Callable[[SinkConfig], Sink] = make_sink,
        lock: StoreLock | None = None,
    ) -> None:
        self._store = store
        self._lock = lock
        self._log = log
        self._version = version
        self._clock = clock
        self._poll = poll_interval
        self._states = [_State(config, sink_factory(config)) for config in sinks]
        self._stopping = threading.Event()
        self._started = False
        log.on_commit(self._committed)

    def __enter__(self) -> SinkRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- the threads -------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for state in self._states:
            state.thread = threading.Thread(
                target=self._run,
                args=(state,),
                name=f"tether-sink-{state.config.name}",
                daemon=True,
            )
            state.thread.start()

    def stop(self) -> None:
        """Stop the threads (a send under way finishes or times out) and close the sinks."""
        self._stopping.set()
        for state in self._states:
            state.wake.set()
        for state in self._states:
            if state.thread is not None:
                state.thread.join(timeout=state.config.timeout_ms / 1000 + 1)
        for state in self._states:
            state.sink.close()
        if self._lock is not None:
            self._lock.release()

    def _committed(self, _size: int) -> None:
        for state in self._states:
            state.wake.set()

    def _run(self, state: _State) -> None:
        while not self._stopping.is_set():
            if time.monotonic() >= state.due and (self._lock is None or self._lock.hold()):
                self._drain(state)
            wait = self._poll
            if state.failures:
                wait = min(wait, max(state.due - time.monotonic(), 0.0))
            state.wake.wait(wait)
            state.wake.clear()

    # ---- delivering --------------------------------------------------------------------

    def deliver_once(self) -> int:
        """Deliver everything pending (as of now) to every sink, a batch at a time, and
        return how many events were delivered. A sink that fails is left at its cursor
        with ``last_error`` set (and its backoff extended) while the others go on; an
        explicit call tries every sink, backoff or not."""
        return sum(self._drain(state) for state in self._states)

    def _drain(self, state: _State) -> int:
        delivered = 0
        with state.lock:
            try:
                if not state.ready:
                    self._ensure(state.config.name)
                    state.ready = True
                target = self._log.size()
                while not self._stopping.is_set():
                    count, last = self._batch(state)
                    delivered += count
                    if count < state.config.batch_size or last >= target:
                        break
            except Exception as exc:  # every failure is retried; none stops the others
                self._failed(state, exc)
            else:
                state.failures = 0
                state.due = 0.0
                state.last_error = None
        return delivered

    def _ensure(self, name: str) -> None:
        with self._store.read() as conn:
            found = conn.execute(
                select(sink_cursors.c.name).where(sink_cursors.c.name == name)
            ).first()
        if found is not None:
            return
        try:
            with self._store.write() as conn:
                conn.execute(
                    insert(sink_cursors).values(
                        name=name, seq=0, updated_at=self._clock(), last_error=None
                    )
                )
        except Conflict:  # another process made it first
            pass

    def _pending(self, state: _State, cursor: int) -> tuple[int, int, list[str]] | None:
        """(first seq, last seq, messages) of the next batch after ``cursor``."""
        rows = self._log.bodies(after=cursor, limit=state.config.batch_size)
        if not rows:
            return None
        messages: list[str] = []
        seqs: list[int] = []
        for row in rows:
            body = row[-1]  # the canonical body is the last field of each row
            event = json.loads(body)
            seqs.append(int(event["seq"]))
            line = render(body, state.config.format, version=self._version)
            messages.append(state.sink.message(event, line))
        return seqs[0], seqs[-1], messages

    def _send(self, state: _State, first: int, last: int, messages: list[str]) -> str | None:
        """Send; the failure's safe description, or None on success."""
        try:
            state.sink.send_batch(messages, first, last)
        except Exception as exc:
            return _clip(state.sink.describe(exc))
        return None

    def _batch(self, state: _State) -> tuple[int, int]:
        """Deliver one batch: (events delivered, the cursor after). Raises DeliveryFailed
        once the failure is recorded."""
        if self._store.dialect == "postgresql":
            return self._batch_locked(state)
        return self._batch_compare_and_set(state)

    def _batch_locked(self, state: _State) -> tuple[int, int]:
        """PostgreSQL: the batch is delivered under the sink's lock (a session-level
        advisory lock, :class:`StoreLock`), so the wait for the receiver holds no
        transaction, no row and no table lock."""
        with StoreLock(self._store, f"audit-sink:{state.config.name}").holding() as mine:
            if not mine:
                return 0, 0  # another process is delivering this sink's batch
            return self._batch_compare_and_set(state)

    def _batch_compare_and_set(self, state: _State) -> tuple[int, int]:
        name = state.config.name
        with self._store.read() as conn:
            cursor = int(
                conn.execute(select(sink_cursors.c.seq).where(sink_cursors.c.name == name)).one()[0]
            )
        pending = self._pending(state, cursor)
        if pending is None:
            return 0, cursor
        first, last, messages = pending
        error = self._send(state, first, last, messages)
        with self._store.write() as conn:
            if error is not None:
                self._record(conn, name, error)
            elif not self._advance(conn, name, last, old=cursor):
                _logger.warning(
                    "audit sink %s: another process moved the cursor past %d meanwhile; "
                    "events %d-%d may have been delivered twice",
                    name,
                    cursor,
                    first,
                    last,
                )
        if error is not None:
            raise DeliveryFailed(error)
        return len(messages), last

    def _advance(self, conn: Connection, name: str, seq: int, *, old: int | None = None) -> bool:
        query = update(sink_cursors).where(sink_cursors.c.name == name)
        if old is not None:
            query = query.where(sink_cursors.c.seq == old)
        result = conn.execute(query.values(seq=seq, updated_at=self._clock(), last_error=None))
        return bool(result.rowcount)

    def _record(self, conn: Connection, name: str, error: str) -> None:
        conn.execute(
            update(sink_cursors)
            .where(sink_cursors.c.name == name)
            .values(last_error=error, updated_at=self._clock())
        )

    def _failed(self, state: _State, exc: Exception) -> None:
        recorded = isinstance(exc, DeliveryFailed)
        error = str(exc) if recorded else _clip(state.sink.describe(exc))
        state.failures += 1
        delay = state.backoff()
        state.due = time.monotonic() + delay
        state.last_error = error
        _logger.warning(
            "audit sink %s: delivery failed (%d in a row; next try in %.1fs): %s",
            state.config.name,
            state.failures,
            delay,
            error,
        )
        if not recorded:  # a store or render failure: record it if the store lets us
            try:
                with self._store.write() as conn:
                    self._record(conn, state.config.name, error)
            except Exception:
                _logger.debug("audit sink %s: could not record the failure", state.config.name)

    # ---- reporting ---------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Each sink: name, kind, format, cursor, lag (events not yet delivered),
        last_error (the stored one: any process's), updated_at, and this process's count
        of failures in a row."""
        names = [state.config.name for state in self._states]
        with self._store.read() as conn:
            rows = {
                row.name: row
                for row in conn.execute(select(sink_cursors).where(sink_cursors.c.name.in_(names)))
            }
        size = self._log.size()
        report: list[dict[str, Any]] = []
        for state in self._states:
            row = rows.get(state.config.name)
            cursor = int(row.seq) if row is not None else 0
            report.append(
                {
                    "name": state.config.name,
                    "kind": state.config.kind,
                    "format": state.config.format,
                    "cursor": cursor,
                    "lag": max(size - cursor, 0),
                    "last_error": row.last_error if row is not None else state.last_error,
                    "updated_at": row.updated_at.isoformat() if row is not None else None,
                    "failures": state.failures,
                }
            )
        return report


def _clip(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _ERROR_MAX else message[: _ERROR_MAX - 3] + "..."
