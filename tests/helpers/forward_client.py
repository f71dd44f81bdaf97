"""A raw client of a forward proxy, for what no well-behaved client sends: real sockets,
real TLS, ``h11`` for the client side of HTTP/1.1 (the proxy's answers are parsed by a
parser that is not the proxy's own code)."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # the last value of each, names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def basic(token: str, user: str = "agent") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


class Raw:
    """One connection to the proxy at ``port``."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout
        )
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_all(self) -> bytes:
        """Everything until the proxy closes (raises TimeoutError if it does not)."""
        chunks = []
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def closed(self) -> bool:
        """Whether the proxy closed the connection (waiting up to the socket's timeout)."""
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
    ) -> Reply:
        if body:
            headers = [*headers, ("content-length", str(len(body)))]
        out = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        out += self.h11.send(h11.Data(data=body)) if body else b""
        out += self.h11.send(h11.EndOfMessage())
        self.sock.sendall(out)
        return self.reply()

    def reply(self) -> Reply:
        status, headers, chunks = 0, {}, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                if event.status_code == 200 and self.h11.our_state is h11.SWITCHED_PROTOCOL:
                    return Reply(status, headers, b"")
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return Reply(status, headers, b"".join(chunks))

    def next_cycle(self) -> None:
        self.h11.start_next_cycle()

    def tunnel(self, authority: str, token: str | None, ca: Path, server_name: str) -> Reply:
        """CONNECT ``authority``; on 200, TLS inside (trusting only ``ca``) and a fresh
        HTTP/1.1 connection in the tunnel."""
        headers = [("host", authority)]
        if token is not None:
            headers.append(("proxy-authorization", f"Bearer {token}"))
        reply = self.request("CONNECT", authority, headers)
        if reply.status != 200:
            return reply
        context = ssl.create_default_context(cafile=str(ca))
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        assert isinstance(self.sock, socket.socket)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name)
        self.h11 = h11.Connection(h11.CLIENT)
        return reply
