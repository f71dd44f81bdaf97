"""A bounded HTTP POST for the webhook sink: a receiver can neither fill Tether's memory
nor hold a delivery open.

* **One deadline for the whole exchange.** Connecting, sending the body, and reading the
  status line, the headers and the answer must all be done within ``deadline`` seconds
  of the start: every socket operation is given only the time that is left (a receiver
  that drips one byte at a time never resets a per-read timeout), and once none is left
  the exchange fails with :class:`DeadlinePassed` and the connection is closed.
* **A capped answer.** Only the status matters. At most :data:`ANSWER_MAX` bytes of the
  answer's body are read (a small answer leaves the connection reusable); the rest is
  never read: the connection is closed instead. The socket's receive buffer is fixed at
  :data:`RECEIVE_BUFFER` bytes, and each read takes at most :data:`READ_MAX`, so the
  kernel does not take in megabytes on Tether's behalf either. The status line and the
  headers are capped by the HTTP parser (h11 via httpcore, 100 KiB).
* Redirects are not followed (httpcore never follows one). TLS is verified as httpx does
  (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), and an ``HTTP(S)_PROXY`` from the
  environment is honoured (``NO_PROXY`` too), as the httpx client used before did.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

__all__ = ["ANSWER_MAX", "READ_MAX", "RECEIVE_BUFFER", "DeadlinePassed", "Poster"]

ANSWER_MAX = 4096  # bytes of an answer's body read at most
READ_MAX = 4096  # bytes asked of the socket at a time
RECEIVE_BUFFER = 65_536  # SO_RCVBUF of the connection (no kernel autotuning to megabytes)
_WRITE_CHUNK = 65_536  # a body is written in pieces, each given the time left


class DeadlinePassed(Exception):
    """The exchange was not over before its deadline."""


class _Deadline:
    """The deadline of the exchange under way on one poster (``None``: none is)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def left(self, timeout: float | None) -> float | None:
        """The time an operation may take: ``timeout`` cut to what is left; raises
        DeadlinePassed once nothing is."""
        if self.at is None:
            return timeout
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise DeadlinePassed("the deadline passed")
        return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    """A network stream whose every operation is bounded by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(min(max_bytes, READ_MAX), self._deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_CHUNK):
            piece = buffer[start : start + _WRITE_CHUNK]
            self._inner.write(piece, self._deadline.left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._deadline.left(timeout))
        return _Stream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's synchronous sockets, each stream bounded by the poster's deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        options = [*(socket_options or ()), (socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)]
        stream = self._inner.connect_tcp(
            host, port, self._deadline.left(timeout), local_address, options
        )
        return _Stream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("a webhook is reached over TCP")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class Poster:
    """``Poster(url, deadline=5.0).post(body, headers)`` is the status of the answer;
    one exchange at a time, over one kept-alive connection."""

    def __init__(self, url: str, *, deadline: float) -> None:
        self.url = url
        self.deadline = deadline
        self._lock = threading.Lock()
        self._deadline = _Deadline()
        self._pool: httpcore.ConnectionPool | httpcore.HTTPProxy | None = None

    def post(self, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        """POST ``body``; the answer's status. Raises DeadlinePassed, or httpcore's
        errors (the connection is closed after any failure)."""
        timeout = {"connect": self.deadline, "read": self.deadline, "write": self.deadline}
        with self._lock:
            self._deadline.at = time.monotonic() + self.deadline
            try:
                pool = self._pool = self._pool or self._connect()
                with pool.stream(
                    "POST",
                    self.url,
                    headers=list(headers),
                    content=body,
                    extensions={"timeout": {**timeout, "pool": self.deadline}},
                ) as answer:
                    read = 0
                    for chunk in answer.iter_stream():  # the rest is never read
                        read += len(chunk)
                        if read >= ANSWER_MAX:
                            break
                    return answer.status
            except httpcore.TimeoutException:  # every operation had only the time left
                self._close()
                raise DeadlinePassed("the deadline passed") from None
            except BaseException:
                self._close()
                raise
            finally:
                self._deadline.at = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _connect(self) -> httpcore.ConnectionPool | httpcore.HTTPProxy:
        backend = _Backend(self._deadline)
        context = httpx.create_ssl_context()
        proxy = _proxy_for(self.url)
        if proxy is not None:
            return httpcore.HTTPProxy(
                proxy_url=proxy,
                ssl_context=context,
                max_connections=1,
                retries=0,
                network_backend=backend,
            )
        return httpcore.ConnectionPool(
            ssl_context=context, max_connections=1, retries=0, network_backend=backend
        )


def _proxy_for(url: str) -> str | None:
    """The ``HTTP(S)_PROXY`` of the environment for ``url``, unless ``NO_PROXY`` spares it."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
