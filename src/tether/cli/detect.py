"""``tether detect run``: the behaviour detector on its own (it also runs inside ``up``)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from tether.cli import output
from tether.cli.context import settings
from tether.cli.options import Json
from tether.errors import Conflict, InvalidRequest, StoreUnavailable

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The behaviour detector (baselines and alerts).")


@app.command("run")
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Read the log up to its end, then exit.")
    ] = False,
    json_: Json = False,
) -> None:
    """Run the detector on TETHER_HOME's store until interrupted (one per store: a second
    one waits, and takes over when the first stops)."""
    from tether.core import Tether
    from tether.store.locks import StoreLock

    config = settings()
    if not config.detect.enabled:
        raise InvalidRequest("the detector is off ([detect] enabled = false in tether.toml)")
    if not config.home.is_dir():
        raise StoreUnavailable(
            f"TETHER_HOME {config.home} is not initialised: run `tether init` first"
        )
    with Tether.open(config) as tether:
        lock = StoreLock(tether.store, "job:detect")
        if once:
            if not lock.hold():
                raise Conflict("another detector is running on this store (tether up holds one)")
            try:
                raised = tether.detector.run_until_idle()
            finally:
                lock.release()
            result = {"cursor": tether.detector.cursor(), "alerts": [a.to_dict() for a in raised]}
            if json_:
                output.emit(result)
            else:
                output.console.print(
                    f"Read the log to event {result['cursor']}; {len(raised)} alert(s) raised.",
                    markup=False,
                )
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        tether.listen()
        job = tether.detector.job(lock=lock)
        job.start()
        store = tether.store.describe()
        if json_:
            output.emit({"detector": "started", "store": store})
        else:
            output.console.print(
                f"Detector started on {store}: it works while it holds the store's detector "
                "lock (one per store; it waits while another process holds it). Ctrl-C stops.",
                markup=False,
            )
        try:
            stop.wait()
        finally:
            job.stop()
