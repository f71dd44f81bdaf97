"""A stand-in for a third-party HTTP API: a real server on its own parser (the standard
library's ``http.server``) that records what it received and answers plainly.

Every request is recorded (:class:`Received`: the request line's raw target, the path as
*this server* decodes it, the query, the headers and the body). What it answers:

- ``/echo-headers``: the request's headers as JSON (an API that echoes its credential);
- ``/redirect?to=URL[&status=302]``: a redirect to ``to``;
- ``/bytes?n=N``: ``N`` bytes of ``x``;
- ``/slow?ms=N``: waits ``N`` ms, then answers;
- ``/oauth/token``: an OAuth token endpoint (client credentials; the client must send
  basic auth ``client:secret`` or ``client_id``/``client_secret`` in the form): answers
  ``{"access_token": "at-<n>", "token_type": "Bearer", "expires_in": 3600}`` counting up;
- anything else: ``{"ok": true, "method", "path", "query"}`` as this server saw them.

``tls=True`` serves HTTPS with a certificate for ``localhost`` and ``127.0.0.1`` signed by
a CA made here (:attr:`StandIn.ca_file`, PEM), for tests that trust it explicitly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Received:
    method: str
    raw_target: str  # the request line's target, byte for byte (latin-1)
    path: str  # the path as this server decodes it (urllib's unquote)
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None


class StandIn:
    def __init__(self, url: str, server: ThreadingHTTPServer, ca_file: Path | None) -> None:
        self.url = url
        self.server = server
        self.ca_file = ca_file
        self.received: list[Received] = []
        self.tokens_issued = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def last(self) -> Received:
        with self.lock:
            return self.received[-1]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms stalls)

        def log_message(self, *_: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            received = Received(
                method=self.command,
                raw_target=self.path,
                path=unquote(parts.path),
                query=parse_qsl(parts.query, keep_blank_values=True),
                headers=list(self.headers.items()),
                body=body,
            )
            with standin.lock:
                standin.received.append(received)
            query = dict(received.query)
            if received.path == "/echo-headers":
                self._send(200, json.dumps(dict(self.headers.items())).encode())
            elif received.path == "/redirect":
                status = int(query.get("status", "302"))
                self._send(status, b"", location=query["to"])
            elif received.path == "/bytes":
                self._send(200, b"x" * int(query.get("n", "0")), kind="text/plain")
            elif received.path == "/slow":
                time.sleep(int(query.get("ms", "0")) / 1000)
                self._send(200, b'{"slow": true}')
            elif received.path == "/oauth/token":
                with standin.lock:
                    standin.tokens_issued += 1
                    n = standin.tokens_issued
                answer = {"access_token": f"at-{n}", "token_type": "Bearer", "expires_in": 3600}
                self._send(200, json.dumps(answer).encode())
            else:
                answer = {
                    "ok": True,
                    "method": self.command,
                    "path": received.path,
                    "query": received.query,
                }
                self._send(200, json.dumps(answer).encode())

        def _send(
            self, status: int, body: bytes, *, kind: str = "application/json", location: str = ""
        ) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            if location:
                self.send_header("location", location)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return Handler


def make_ca(
    directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``hosts`` signed by it: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@contextmanager
def standin(
    tmp: Path | None = None, *, tls: bool = False, host: str = "127.0.0.1"
) -> Iterator[StandIn]:
    """Serve a stand-in on a free port of ``host``; yields it (``.url`` has no trailing
    slash). ``tls`` needs ``tmp``, a folder for its certificates."""
    server = ThreadingHTTPServer((host, 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    ca_file: Path | None = None
    if tls:
        if tmp is None:
            raise ValueError("tls=True needs a folder for the certificates")
        ca_file, cert_file, key_file = make_ca(tmp / "standin-tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    port = server.server_address[1]
    api = StandIn(f"{scheme}://{host}:{port}", server, ca_file)
    server.RequestHandlerClass = _handler(api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
