"""``tether proxy`` (the egress forward proxy alone) and ``tether egress ca`` (its CA)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from tether.cli import output
from tether.cli.context import settings
from tether.cli.options import Json
from tether.egress.ca import InstallationCA
from tether.errors import TetherError

__all__ = ["ca_command", "proxy", "proxy_line"]


def ca_command(json_: Json = False) -> None:
    """Print the egress proxy's CA certificate (made on first use) and where it is.

    Agents that use the forward proxy trust it: SSL_CERT_FILE=<path> in the agent's own
    environment (never a system trust store). It is read from TETHER_HOME, the home of
    the Tether that serves the proxy."""
    ca = _ca(settings().home)
    certificate = ca.certificate
    if json_:
        output.emit(
            {
                "path": str(ca.cert_file),
                "pem": ca.pem,
                "subject": certificate.subject.rfc4514_string(),
                "sha256_fingerprint": ca.fingerprint,
                "not_after": certificate.not_valid_after_utc.isoformat(),
            }
        )
        return
    output.console.print(
        f"{ca.cert_file}\n(SHA-256 {ca.fingerprint}; trust it in agents' environments only: "
        f"SSL_CERT_FILE={ca.cert_file})",
        markup=False,
    )
    output.console.print(ca.pem.rstrip("\n"), markup=False, soft_wrap=True)


def proxy(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: [egress] host, 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port to listen on; 0: any free port [default: [egress] port, 8701].",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Serve the egress forward proxy alone (HTTPS_PROXY for agents), on an initialised
    TETHER_HOME; it hears kills and other processes' changes as `tether up` does."""
    from tether.server import ProxyAddress, Runtime

    config = settings()
    address = ProxyAddress(
        host or config.egress.host or "127.0.0.1",
        config.egress.port if port is None else port,
    )
    with _until_a_signal() as stop, Runtime(config, app=None, proxy=address) as runtime:
        served = runtime.proxy
        assert served is not None  # asked for
        output.console.print(
            proxy_line(address.host, served.port, served.ca), markup=False, soft_wrap=True
        )
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # request URLs may carry secrets
        while not stop.wait(1.0):
            pass


def proxy_line(host: str, port: int | None, ca: InstallationCA | None) -> str:
    """The greeting's line for the forward proxy."""
    shown = f"[{host}]" if ":" in host else host
    where = ca.cert_file if ca is not None else "tether egress ca"
    return f"Egress proxy: http://{shown}:{port}  (HTTPS_PROXY; CA: {where})"


def _ca(home: Path) -> InstallationCA:
    if not home.is_dir():
        raise TetherError(f"TETHER_HOME {home} is not initialised: run `tether init`")
    return InstallationCA.open(home)


@contextmanager
def _until_a_signal() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (handled from the start, so that a signal during
    the start-up also stops the proxy cleanly)."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
