"""The egress proxy's forward-proxy face: agents point ``HTTPS_PROXY`` (and ``HTTP_PROXY``)
at it and call their APIs unmodified.

    HTTPS_PROXY=http://agent:$TETHER_AGENT_TOKEN@127.0.0.1:8701
    SSL_CERT_FILE=$TETHER_HOME/egress/ca.pem          # tether egress ca

What it accepts, on HTTP/1.1 (``h11``; :mod:`tether.egress.http1` holds the limits):

- ``CONNECT host:port`` with the agent's Tether token in ``Proxy-Authorization``
  (``Bearer TOKEN``, or ``Basic`` of ``ANY:TOKEN``: what a proxy URL with user info makes
  every client send). No valid token: 407 with ``Proxy-Authenticate``, recorded; a valid
  token and no ``https`` destination registered at exactly that host and port (or only
  destinations its audience does not cover): 403, recorded; there is no tunnel to
  anywhere else, ever. A client must wait for the answer: bytes sent after ``CONNECT``
  before it close the connection. Otherwise ``200 Connection
  established`` and TLS with a certificate for the host from the installation's CA
  (:mod:`tether.egress.ca`); inside, HTTP/1.1 requests in origin form, kept alive, each
  one handed to the engine with the tunnel's token. A request whose ``Host`` names
  another host or port is refused (421) and the tunnel closed; one whose path is under
  no destination at that host is refused (403, recorded).
- Absolute-form requests (``GET http://host:port/path``) to ``http`` destinations, each
  with its own ``Proxy-Authorization``. ``https://`` in absolute form is refused (clients
  use ``CONNECT`` for those), and so is an origin-form request outside a tunnel (400).

Every tunnel and kept-alive connection is registered with the engine's connections
(:class:`tether.egress.connections.Connections`): killing its agent closes it. Every
request is still a decision of its own (the engine verifies the token each time). Any
error on the way is an answer (``{"error", "error_description"}``) and a closed
connection, never a traceback; at most ``max_connections`` clients are served at once
(more are answered 503 and closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit

import h11

from tether.audit.throttle import CLIENT_ADDRESS
from tether.config import EgressSettings
from tether.egress.authority import Authority, destination_for, parse_authority
from tether.egress.ca import InstallationCA
from tether.egress.exchange import Answer, Outbound, actor_of, credentials_from, refusal
from tether.egress.http1 import Http1, Limits, Refused, Request
from tether.errors import TetherError
from tether.tokens import VerifiedToken
from tether.upstreams.destinations import Destination

__all__ = ["Engine", "ForwardProxy", "Limits"]

log = logging.getLogger("tether.egress.forward")

_CHALLENGE = (
    ("proxy-authenticate", 'Bearer realm="tether-egress"'),
    ("proxy-authenticate", 'Basic realm="tether-egress"'),
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"tether-refused: temporarily_unavailable\r\nconnection: close\r\ncontent-length: 86\r\n\r\n"
    b'{"error": "temporarily_unavailable", "error_description": "too many open connections"}'
)


class _Handle(Protocol):
    def close(self) -> None: ...


class _Connections(Protocol):
    def open(self, token: VerifiedToken, close: Callable[[], None]) -> _Handle: ...


class Engine(Protocol):
    """What the forward proxy needs of :class:`tether.egress.engine.EgressProxy`."""

    @property
    def connections(self) -> _Connections: ...

    def authenticate(
        self, credentials: str | None, destination: str | None = None
    ) -> VerifiedToken: ...

    def destinations_at(self, host: str, port: int) -> list[Destination]: ...

    def refuse(self, actor: str, why: str, resource: str, *, action: str = "CONNECT") -> None: ...

    async def exchange(self, credentials: str | None, outbound: Outbound) -> Answer: ...


class ForwardProxy:
    """The forward proxy over ``engine``, minting leaves from ``ca`` (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        ca: InstallationCA,
        settings: EgressSettings,
        *,
        limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.ca = ca
        self.settings = settings
        self.limits = limits or Limits()
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @asynccontextmanager
    async def serving(
        self, host: str, port: int, *, reuse_port: bool = False
    ) -> AsyncIterator[int]:
        """Serve on ``host``:``port`` (0: a free port) until the block ends; yields the
        bound port. ``reuse_port``: share the port with other processes of this user
        (``tether up --workers N``). Open connections are closed when it ends."""
        server = await asyncio.start_server(
            self._accept, host, port, reuse_port=reuse_port or None, backlog=1024
        )
        bound = int(server.sockets[0].getsockname()[1])
        log.info("egress forward proxy on %s:%d", host, bound)
        try:
            yield bound
        finally:
            server.close()
            clients = dict(self._clients)
            for writer in clients.values():
                writer.transport.abort()  # each client's handler then ends on its own
            if clients:
                _, late = await asyncio.wait(clients, timeout=5)
                for task in late:
                    task.cancel()
            await server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self.limits.max_connections:
            writer.write(_BUSY)
            await _close(writer)
            return
        self._clients[task] = writer
        peer = writer.get_extra_info("peername")
        CLIENT_ADDRESS.set(str(peer[0]) if peer else None)  # this task's own context
        http = Http1(reader, writer, self.limits, self.settings.max_request_bytes)
        try:
            await self._serve(http)
        except Refused as refused:
            await http.refuse(refused)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:  # the proxy is stopping: this connection ends
            pass
        except h11.LocalProtocolError as exc:
            log.info("egress forward proxy: an answer could not be sent: %s", exc)
        except Exception:  # a bug: the client's connection ends, never with a traceback
            log.exception("egress forward proxy: a connection failed")
            await http.refuse(Refused(refusal(500, "server_error", "the proxy failed")))
        finally:
            self._clients.pop(task, None)
            await _close(writer)

    async def _serve(self, http: Http1) -> None:
        async with aclosing(http.requests()) as requests:
            async for request in requests:
                target = request.target
                if request.method == "CONNECT":
                    await self._connect(http, request)
                    return
                if target[:7].lower() == "http://":
                    await self._absolute(http, request)
                elif target[:8].lower() == "https://":
                    raise Refused(
                        refusal(400, "invalid_request", "use CONNECT for https:// (HTTPS_PROXY)")
                    )
                else:
                    raise Refused(
                        refusal(
                            400,
                            "invalid_request",
                            "this is Tether's egress proxy: send CONNECT host:port or an "
                            "absolute-form request (http://host/path) with Proxy-Authorization",
                        )
                    )

    # ---- CONNECT: a tunnel to an https destination -------------------------------------

    async def _connect(self, http: Http1, request: Request) -> None:
        where = parse_authority(request.target, default=None)
        if where is None:
            raise Refused(refusal(400, "invalid_request", "CONNECT takes host:port"))
        credentials = credentials_from(request.header("proxy-authorization"))
        token = await self._authenticate(credentials, where, "CONNECT")
        found = await self._destinations(token, credentials, where, "https", "CONNECT")
        if http.h11.trailing_data[0] or http.reader.at_eof():
            raise Refused(None)  # bytes before our answer: not a client that waits for it
        context = self.ca.context_for(where.host)
        handle = self.engine.connections.open(token, _closer(http.writer))
        try:  # a kill that landed before the tunnel was registered: no tunnel for it
            await self._authenticate(credentials, where, "CONNECT")
        except Refused:
            handle.close()
            raise
        # no await between the answer and start_tls: the client's first TLS bytes must
        # reach the TLS layer, not this stream's buffer
        http.writer.write(
            http.h11.send(
                h11.Response(status_code=200, headers=[], reason=b"Connection established")
            )
        )
        try:
            await http.writer.start_tls(context, ssl_handshake_timeout=self.limits.tls_timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            handle.close()
            log.info("egress tunnel to %s: TLS handshake failed: %s", where, type(exc).__name__)
            return
        tunnel = Http1(http.reader, http.writer, self.limits, self.settings.max_request_bytes)
        try:
            await self._tunnel(tunnel, where, found, credentials, token)
        except Refused as refused:
            await tunnel.refuse(refused)
        finally:
            handle.close()

    async def _tunnel(
        self,
        http: Http1,
        where: Authority,
        found: Sequence[Destination],
        credentials: str | None,
        token: VerifiedToken,
    ) -> None:
        async with aclosing(http.requests()) as requests:
            async for request in requests:
                host = parse_authority(request.header("host") or "", default=443)
                if host != where:
                    raise Refused(
                        refusal(
                            421,
                            "misdirected_request",
                            f"this tunnel reaches {where}; the request's Host names another",
                        )
                    )
                if not request.target.startswith("/"):
                    raise Refused(
                        refusal(400, "invalid_request", "inside a tunnel, send origin-form targets")
                    )
                await self._forward(http, request, where, found, credentials, token)

    # ---- absolute form: http destinations ----------------------------------------------

    async def _absolute(self, http: Http1, request: Request) -> None:
        try:
            parts = urlsplit(request.target)
            port = parts.port or 80
        except ValueError:
            raise Refused(refusal(400, "invalid_request", "not a URL")) from None
        where = parse_authority(parts.netloc, default=80)
        if where is None or parts.username is not None or parts.fragment or port != where.port:
            raise Refused(refusal(400, "invalid_request", "not a URL Tether forwards to"))
        host = request.header("host")
        if host is not None and parse_authority(host, default=80) != where:
            raise Refused(refusal(400, "invalid_request", "Host does not match the URL"))
        credentials = credentials_from(request.header("proxy-authorization"))
        token = await self._authenticate(credentials, where, request.method)
        found = await self._destinations(token, credentials, where, "http", request.method)
        origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        forwarded = Request(request.method, origin, request.headers, request.body)
        handle = self.engine.connections.open(token, _closer(http.writer))
        try:
            await self._forward(http, forwarded, where, found, credentials, token)
        finally:
            handle.close()

    # ---- both ---------------------------------------------------------------------------

    async def _forward(
        self,
        http: Http1,
        request: Request,
        where: Authority,
        found: Sequence[Destination],
        credentials: str | None,
        token: VerifiedToken,
    ) -> None:
        destination = destination_for(found, request.target)
        if destination is None:
            why = f"no destination at {where} serves {request.target.split('?')[0][:200]}"
            await self._refuse(token.client_id, why, f"{where}", request.method)
            await http.respond(refusal(403, "access_denied", why))
            return
        outbound = Outbound(
            destination=destination.name,
            method=request.method,
            target=request.target,
            headers=request.headers,
            body=request.body,
            mode="forward",
        )
        try:
            answer = await self.engine.exchange(credentials, outbound)
        except Exception:  # fail closed: the engine answers refusals itself; this is a bug
            log.exception("egress exchange failed")
            answer = refusal(502, "upstream_error", "the request could not be completed")
        await http.respond(answer)

    async def _authenticate(
        self, credentials: str | None, where: Authority, action: str
    ) -> VerifiedToken:
        try:
            return await asyncio.to_thread(self.engine.authenticate, credentials, None)
        except TetherError as exc:
            why = exc.description if credentials else "no Tether token (Proxy-Authorization)"
            await self._refuse(actor_of(exc), why, str(where), action)
            raise Refused(refusal(407, "invalid_token", why, headers=_CHALLENGE)) from None

    async def _destinations(
        self,
        token: VerifiedToken,
        credentials: str | None,
        where: Authority,
        scheme: str,
        action: str,
    ) -> list[Destination]:
        """The ``scheme`` destinations at ``where`` that the token may reach (one for
        ``<issuer>/egress/NAME`` reaches NAME only); none: 403, recorded."""
        try:
            found, reachable = await asyncio.to_thread(self._reachable, credentials, where, scheme)
        except TetherError as exc:
            raise Refused(refusal(exc.status_code, exc.error, exc.description)) from None
        why = ""
        if not found:
            why = f"no {scheme} destination is registered at {where}"
        elif not reachable:
            why = f"the token is for another egress destination than those at {where}"
        if why:
            await self._refuse(token.client_id, why, str(where), action)
            raise Refused(refusal(403, "access_denied", why))
        return reachable

    def _reachable(
        self, credentials: str | None, where: Authority, scheme: str
    ) -> tuple[list[Destination], list[Destination]]:
        found = [
            d for d in self.engine.destinations_at(where.host, where.port) if d.scheme == scheme
        ]
        reachable = []
        for destination in found:
            try:
                self.engine.authenticate(credentials, destination.name)
            except TetherError:
                continue
            reachable.append(destination)
        return found, reachable

    async def _refuse(self, actor: str, why: str, resource: str, action: str) -> None:
        """Record a refusal; a record that fails is logged (the request is refused anyway)."""
        try:
            await asyncio.to_thread(self.engine.refuse, actor, why, resource, action=action)
        except Exception as exc:
            log.warning("egress refusal not recorded: %s", type(exc).__name__)


def _closer(writer: asyncio.StreamWriter) -> Callable[[], None]:
    """Closes the connection at once, from any thread (a kill)."""
    loop = asyncio.get_running_loop()

    def close() -> None:
        loop.call_soon_threadsafe(writer.transport.abort)

    return close


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, TimeoutError, asyncio.CancelledError):
        writer.transport.abort()
