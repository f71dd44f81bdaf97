"""``tether init`` and ``tether up``."""

from __future__ import annotations

import json
import logging
import os
import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from tether.callers import Caller
from tether.cli import output
from tether.cli.context import settings
from tether.cli.options import Json
from tether.cli.proxy import proxy_line
from tether.config import Settings
from tether.core import InitResult, Tether
from tether.errors import InvalidRequest

if TYPE_CHECKING:
    from tether.server import ProxyAddress

__all__ = ["init", "up"]


def init(json_: Json = False) -> None:
    """Create TETHER_HOME, bring the store's schema up to date, make the admin token."""
    from tether.server import initialise

    tether, result = initialise(settings())
    tether.close()
    if json_:
        output.emit(
            {
                "home": result.home,
                "database": result.database,
                "schema": result.revision,
                "created": result.created,
                "admin_token": result.admin_token,
            }
        )
        return
    output.console.print(
        f"Tether home: {result.home}\nStore: {result.database} (schema {result.revision})"
    )
    if result.admin_token:
        output.console.print(
            f"Admin token (shown once; also in {settings().admin_token_file}, mode 0600):\n"
            f"  {result.admin_token}"
        )
    else:
        output.console.print("Already initialised; the admin token is unchanged.")


def up(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8700,
    demo: Annotated[bool, typer.Option("--demo", help="Seed a demo organisation.")] = False,
    workers: Annotated[
        int,
        typer.Option(help="Worker processes (more than 1 needs a PostgreSQL store).", min=1),
    ] = 1,
    proxy_port: Annotated[
        int | None,
        typer.Option(
            "--proxy-port",
            help="Port of the egress forward proxy (HTTPS_PROXY); 0: not served "
            "[default: [egress] port, 8701].",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Serve the API and the egress forward proxy (initialising TETHER_HOME if it is new)."""
    config = settings()
    url = f"http://{host}:{port}"
    if "issuer" not in config.model_fields_set:  # tokens name the address actually served
        config = config.model_copy(update={"issuer": url})
    if demo:
        config = config.model_copy(update={"dev_idp": True})
    proxy = _proxy_address(config, host, proxy_port, shared=workers > 1)
    # what the service tells agents (tether egress show) is where it serves the proxy
    served_at = {"port": proxy.port if proxy else 0, "host": proxy.host if proxy else None}
    config = config.model_copy(update={"egress": config.egress.model_copy(update=served_at)})
    if workers > 1:
        _serve_workers(config, host, port, workers, demo=demo, proxy=proxy)
        return
    import uvicorn

    from tether.demo import seed_demo
    from tether.server import Runtime

    with Runtime(
        config, initialise=True, prepare=seed_demo if demo else None, proxy=proxy
    ) as runtime:
        assert runtime.init is not None  # initialise=True
        served = runtime.proxy
        egress = proxy_line(served.address.host, served.port, served.ca) if served else None
        vault_warning = _greet(runtime.tether, runtime.init, url, demo=demo, egress=egress)
        _logging(vault_warning)
        uvicorn.run(runtime.app, host=host, port=port, log_level="warning")


def _proxy_address(
    config: Settings, host: str, port: int | None, *, shared: bool
) -> ProxyAddress | None:
    """Where ``up`` serves the forward proxy: ``--proxy-port`` or ``[egress] port``, on
    ``[egress] host`` or ``--host``; None when the port is 0."""
    from tether.server import ProxyAddress

    chosen = config.egress.port if port is None else port
    if chosen == 0:
        return None
    return ProxyAddress(config.egress.host or host, chosen, reuse_port=shared)


def _serve_workers(
    config: Settings,
    host: str,
    port: int,
    workers: int,
    *,
    demo: bool,
    proxy: ProxyAddress | None,
) -> None:
    """``workers`` processes on one PostgreSQL store: the store is initialised (and the
    demo seeded) here, once, before any worker starts; each worker then runs the same
    runtime as ``uvicorn tether.server:app --workers N`` (its own epoch listener, the
    once-per-store jobs under their locks), and serves the forward proxy on the port
    they share."""
    import sqlalchemy as sa
    import uvicorn

    from tether.demo import seed_demo
    from tether.egress.ca import InstallationCA
    from tether.server import WORKER_SETTINGS, initialise

    if sa.engine.make_url(config.database_url).get_backend_name() != "postgresql":
        raise InvalidRequest(
            f"--workers {workers} needs a PostgreSQL store (TETHER_DB=postgresql+psycopg://...): "
            "SQLite serves one process; run `tether up` without --workers"
        )
    tether, result = initialise(config)
    with tether:
        if demo:
            seed_demo(tether)
        egress = None
        if proxy is not None:  # made here, once, and only opened by the workers
            ca = InstallationCA.open(config.home)
            egress = proxy_line(proxy.host, proxy.port, ca)
        vault_warning = _greet(tether, result, f"http://{host}:{port}", demo=demo, egress=egress)
    _logging(vault_warning)
    overrides: dict[str, object] = {"issuer": config.issuer, "dev_idp": config.dev_idp}
    if proxy is not None:
        overrides["proxy"] = {"host": proxy.host, "port": proxy.port}
    os.environ[WORKER_SETTINGS] = json.dumps(overrides)  # the workers inherit it
    uvicorn.run(
        "tether.server:workers_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )


def _logging(vault_warning: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request URLs may carry secrets
    if vault_warning:
        logging.getLogger("tether.vault").warning("%s", vault_warning)


def _greet(
    tether: Tether, result: InitResult, url: str, *, demo: bool, egress: str | None = None
) -> str | None:
    """Print where Tether serves (and its egress proxy), the admin token and what to try;
    the vault's warning."""
    config = tether.settings
    token_file = config.admin_token_file
    token_cmd = f"$(cat {shlex.quote(str(token_file))})"
    lines = [
        f"Tether serving {url}  (store: {result.database})",
        *([egress] if egress else []),
        f"Admin token: {result.admin_token}  (shown once; also in {token_file})"
        if result.admin_token
        else f"Admin token: in {token_file}",
    ]
    if config.dev_idp:
        lines.append("WARNING: the development identity provider is on (tether dev user-token)")
    vault_warning = tether.vault.root_warning() if tether.vault is not None else None
    if vault_warning:
        lines.append(f"WARNING: {vault_warning}")
    if demo:
        agents = tether.registry.list(Caller.admin())
        lines.append(
            f"Demo organisation: {len(agents)} agents of alice, bob and carol@example.com; "
            "legacy-scraper is unowned, q3-report-bot has expired."
        )
    lines += [
        "",
        "Try:",
        f'  curl -s -H "Authorization: Bearer {token_cmd}" {url}/v1/agents',
        f"  TETHER_URL={url} .venv/bin/tether agent list --unowned",
        f"  TETHER_URL={url} .venv/bin/tether authorize --principal github-connector "
        "--on-behalf-of user:alice@example.com --action tools/call --resource github/create_issue",
        "",
    ]
    output.console.print("\n".join(lines), markup=False)
    return vault_warning
