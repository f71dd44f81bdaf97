"""The runtime: the running service, started the same way by ``tether up [--workers N]``,
by an ASGI server (``uvicorn tether.server:app --workers N``) and by tests.

A :class:`Runtime` opens the Tether (or initialises it), starts the epoch listener and
the background jobs, and builds the ASGI app; on exit it stops all of it in reverse
order, also when start-up failed half way. Serving the app (and running its lifespan:
the gateway's upstream connections and MCP sessions) is the caller's part.

What runs where, when several processes share one store:

* in every process: the API and the gateway (each with its own upstream connections
  and MCP sessions), the epoch listener (each must hear kills), and the count of its
  own suppressed refusals;
* once per store (:class:`~tether.store.locks.StoreLock`, taken over when its holder
  stops or dies): the sweeper (expiry, token purge, retried kill actions), the
  checkpointer (in processes whose home holds the audit key), the SIEM sinks and the
  behaviour detector.

The egress proxy's forward-proxy face (:mod:`tether.egress.forward`) is served by the
runtime too, when it is asked to (``proxy``): on a thread and event loop of its own
(:class:`ForwardProxyService`), with its own engine (:class:`tether.egress.engine.
EgressProxy`) over the same Tether. ``tether up`` asks for it on ``[egress] port``
(default 8701; ``--proxy-port``, 0: not served), ``tether proxy`` serves it alone, and an
ASGI deployment serves it when ``tether.toml`` sets ``[egress] port`` (its workers share
the port: ``SO_REUSEPORT``). Apps made by ``create_app`` never serve it.

``app`` below is for ASGI servers: its lifespan builds a Runtime from the environment
(``TETHER_HOME``, ``TETHER_DB``, ``tether.toml``) and closes it at shutdown. It does not
initialise a store: run ``tether init`` once first (several workers starting together
then only open it, so nothing races); a worker whose store is not initialised refuses
to start, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass

from anyio import to_thread
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from tether.api import create_app
from tether.audit.checkpoints import Checkpointer
from tether.audit.sinks import SinkRunner
from tether.config import Settings
from tether.core import InitResult, Tether
from tether.egress.ca import InstallationCA
from tether.egress.engine import EgressProxy
from tether.egress.forward import ForwardProxy, Limits
from tether.errors import InvalidRequest, StoreUnavailable, TetherError
from tether.jobs import Job, Periodic
from tether.store import Store
from tether.store.locks import StoreLock
from tether.sweeper import Sweeper, every

__all__ = [
    "WORKER_SETTINGS",
    "Deployment",
    "ForwardProxyService",
    "ProxyAddress",
    "Runtime",
    "app",
    "configured_proxy",
    "initialise",
    "standard_jobs",
    "workers_app",
]

log = logging.getLogger("tether.server")

WORKER_SETTINGS = "TETHER_UP_SETTINGS"
"""Where ``tether up --workers N`` hands its workers what it decided beyond the
environment's settings (the issuer it serves as, the development IdP), as JSON."""

_INIT_WAIT = 120.0  # seconds to wait for another process's initialisation


def standard_jobs(tether: Tether) -> list[Job]:
    """The background jobs of a running Tether (see the module's docstring)."""
    config = tether.settings

    def once(job: str) -> StoreLock:
        return StoreLock(tether.store, f"job:{job}")

    chores = [
        tether.tokens.purge,
        # kill actions outside the store that failed (vault leases, rotations) are retried
        every(10.0, tether.killswitch.retry),
        # data-flow labels older than [guard] flow_window no longer count: forgotten
        every(60.0, tether.flows.prune),
    ]
    interval = config.sweep_interval.total_seconds()
    detector = [tether.detector.job(lock=once("detect"))] if config.detect.enabled else []
    return [
        Sweeper(tether.registry, interval, chores, lock=once("sweeper")),
        # this process's suppressed refusals' counts, on record
        Periodic("refusals", 5.0, tether.refusals.settle),
        Checkpointer(
            tether.checkpoints,
            tether.events,
            config.audit.checkpoint_every,
            config.audit.checkpoint_interval_ms / 1000,
            lock=once("checkpointer"),
        ),
        SinkRunner(
            tether.store,
            tether.events,
            config.audit.sinks,
            version=tether.version,
            lock=once("audit-sinks"),
        ),
        *detector,  # behaviour baselines and alerts ([detect]), once per store
    ]


def initialise(settings: Settings) -> tuple[Tether, InitResult]:
    """:meth:`Tether.init`, one process at a time per store: two started together would
    otherwise both find no admin token and both make one."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Store.open(settings.database_url)
    try:
        lock = StoreLock(store, "init")
        if not lock.wait(_INIT_WAIT):
            raise StoreUnavailable(
                f"another process has been initialising {store.describe()} for "
                f"{_INIT_WAIT:.0f}s; try again when it is done"
            )
        try:
            return Tether.init(settings)
        finally:
            lock.release()
    finally:
        store.dispose()


class Runtime:
    """The running service on ``settings``, as a context manager.

    With ``initialise`` the home and store are made or brought up to date first
    (``tether init``; :attr:`init` then tells what was done); without it they must be
    initialised already. ``prepare`` runs on the opened Tether before the jobs start
    (the demo seeds itself there); ``jobs`` and ``app`` make the background jobs and the
    ASGI app (None: no app, as for ``tether proxy``). With ``proxy``, the egress forward
    proxy is served there (:attr:`proxy` then tells its port); a port it cannot bind
    stops the start, saying why."""

    def __init__(
        self,
        settings: Settings,
        *,
        initialise: bool = False,
        prepare: Callable[[Tether], object] | None = None,
        jobs: Callable[[Tether], Sequence[Job]] = standard_jobs,
        app: Callable[[Tether], FastAPI] | None = create_app,
        proxy: ProxyAddress | None = None,
    ) -> None:
        self.settings = settings
        self._initialise = initialise
        self._prepare = prepare
        self._make_jobs = jobs
        self._make_app = app
        self._proxy = proxy
        self._stack = ExitStack()
        self._tether: Tether | None = None
        self._app: FastAPI | None = None
        self.init: InitResult | None = None
        self.jobs: tuple[Job, ...] = ()
        self.proxy: ForwardProxyService | None = None

    @property
    def tether(self) -> Tether:
        if self._tether is None:
            raise RuntimeError("the runtime is not running")
        return self._tether

    @property
    def app(self) -> FastAPI:
        if self._app is None:
            raise RuntimeError("the runtime is not running, or serves no app")
        return self._app

    def __enter__(self) -> Runtime:
        with ExitStack() as stack:  # unwound unless everything started
            tether = self._open()
            stack.callback(self._closed)
            stack.callback(tether.close)  # also stops the epoch listener
            tether.listen()
            if self._prepare is not None:
                self._prepare(tether)
            self.jobs = tuple(self._make_jobs(tether))
            for job in self.jobs:
                stack.callback(job.stop)  # stopped even if its start fails half way
                job.start()
            log.info("background jobs: %s", ", ".join(job.name for job in self.jobs))
            self._app = self._make_app(tether) if self._make_app is not None else None
            if self._proxy is not None:
                proxy = ForwardProxyService(tether, self._proxy)
                stack.callback(proxy.stop)
                proxy.start()
                self.proxy = proxy
            self._tether = tether
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    def _open(self) -> Tether:
        if self._initialise:
            tether, self.init = initialise(self.settings)
            return tether
        if not self.settings.home.is_dir():
            raise StoreUnavailable(
                f"TETHER_HOME {self.settings.home} is not initialised: run `tether init` first"
            )
        return Tether.open(self.settings)

    def _closed(self) -> None:
        self._tether = None
        self._app = None
        self.proxy = None


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    """Where the forward proxy listens; ``reuse_port``: a port several processes share
    (the workers of one deployment)."""

    host: str
    port: int
    reuse_port: bool = False


def configured_proxy(settings: Settings) -> ProxyAddress | None:
    """The forward proxy of an ASGI deployment: served when ``tether.toml`` sets
    ``[egress] port`` (not 0), on ``[egress] host`` (default 127.0.0.1), its workers
    sharing the port."""
    egress = settings.egress
    if "port" not in egress.model_fields_set or egress.port == 0:
        return None
    return ProxyAddress(egress.host or "127.0.0.1", egress.port, reuse_port=True)


_PROXY_START = 30.0  # seconds the forward proxy may take to listen


class ForwardProxyService:
    """The egress forward proxy of ``tether`` on ``address``, on a thread and event loop
    of its own (a :class:`~tether.jobs.Job` of the runtime). :meth:`start` returns once
    it listens (:attr:`port`: the port bound) or raises why it cannot; :meth:`stop`
    closes its connections and waits for it. ``engine`` makes its engine (tests give
    one that resolves test host names)."""

    name = "egress-proxy"

    def __init__(
        self,
        tether: Tether,
        address: ProxyAddress,
        *,
        limits: Limits | None = None,
        engine: Callable[[Tether], EgressProxy] = EgressProxy,
    ) -> None:
        self._tether = tether
        self.address = address
        self._limits = limits
        self._engine = engine
        self.ca: InstallationCA | None = None
        self.proxy: ForwardProxy | None = None
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tether-egress-proxy", daemon=True)

    def start(self) -> None:
        self.ca = InstallationCA.open(self._tether.settings.home)
        self._thread.start()
        where = f"{self.address.host}:{self.address.port}"
        if not self._ready.wait(_PROXY_START):
            raise StoreUnavailable(f"the egress proxy did not start on {where} in time")
        failed = self._failed
        if failed is not None:
            why = failed.description if isinstance(failed, TetherError) else str(failed)
            raise InvalidRequest(
                f"cannot serve the egress proxy on {where}: {why} (set [egress] port, or "
                "--proxy-port 0 not to serve it)"
            )

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:
            if not self._ready.is_set():
                self._failed = exc
            else:
                log.exception("the egress proxy stopped")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        assert self.ca is not None  # start() opened it
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        engine = self._engine(self._tether)
        self.proxy = proxy = ForwardProxy(
            engine, self.ca, self._tether.settings.egress, limits=self._limits
        )
        address = self.address
        async with (
            engine.running(),
            proxy.serving(address.host, address.port, reuse_port=address.reuse_port) as port,
        ):
            self.port = port
            self._ready.set()
            await self._stopping.wait()


class Deployment:
    """An ASGI app whose lifespan runs a :class:`Runtime` on ``settings()`` (by default
    read from the environment, as the CLI reads them) and the runtime app's own lifespan;
    every other request goes to the runtime's app. A start-up failure is reported in one
    line (the ASGI server then exits non-zero)."""

    def __init__(
        self,
        settings: Callable[[], Settings] = Settings.from_env,
        proxy: Callable[[Settings], ProxyAddress | None] = configured_proxy,
    ) -> None:
        self._settings = settings
        self._proxy = proxy
        self._app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        served = self._app
        if served is None:  # served without its lifespan: nothing is running
            body = {
                "error": "temporarily_unavailable",
                "error_description": "Tether is not running (serve it with the lifespan on)",
            }
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        await served(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            try:
                runtime = await to_thread.run_sync(self._start)
                stack.push_async_callback(to_thread.run_sync, runtime.__exit__, None, None, None)
                inner = runtime.app
                await stack.enter_async_context(inner.router.lifespan_context(inner))
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": _why(exc)})
                return
            self._app = inner
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            self._app = None
        await send({"type": "lifespan.shutdown.complete"})

    def _start(self) -> Runtime:
        settings = self._settings()
        runtime = Runtime(settings, proxy=self._proxy(settings))
        return runtime.__enter__()


def _why(exc: Exception) -> str:
    """One line for the log: why Tether could not start (no traceback for a known cause)."""
    if isinstance(exc, TetherError):
        return f"Tether cannot start: {exc.description}"
    log.debug("start-up failed", exc_info=exc)
    return f"Tether cannot start: {exc.__class__.__name__}: {exc}"


app = Deployment()
"""``uvicorn tether.server:app``: nothing is opened until the lifespan starts."""


def workers_app() -> Deployment:
    """The app of each worker of ``tether up --workers N`` (an ASGI factory): the
    environment's settings as for :data:`app`, with what ``tether up`` decided on top."""
    overrides = json.loads(os.environ.get(WORKER_SETTINGS) or "{}")
    proxy = overrides.pop("proxy", None)  # {"host", "port"}: the forward proxy `up` serves
    address = (
        ProxyAddress(str(proxy["host"]), int(proxy["port"]), reuse_port=True)
        if proxy and proxy.get("port")
        else None
    )
    return Deployment(
        lambda: Settings.from_env().model_copy(update=overrides), proxy=lambda _: address
    )
