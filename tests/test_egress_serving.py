"""Serving the egress forward proxy: the runtime serves it only where it is asked to
(``tether up`` on ``[egress] port`` or ``--proxy-port``, ``tether proxy`` alone, an ASGI
deployment whose ``tether.toml`` sets ``[egress] port``), never from ``create_app``; a
port it cannot bind stops the start, saying why, with everything stopped again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.forward_client import Raw
from helpers.processes import ServerProcess, free_port

from tether import Settings, Tether
from tether.errors import InvalidRequest
from tether.server import Deployment, ProxyAddress, Runtime, configured_proxy

SRC = Path(__file__).resolve().parents[1] / "src"
TETHER = [sys.executable, "-c", "from tether.cli.main import main; main()"]


@pytest.fixture
def initialised(home: Path, db_url: str) -> Settings:
    settings = Settings.load(home, db_url=db_url)
    Tether.init(settings)[0].close()
    return settings


def _answers_407(port: int) -> bool:
    raw = Raw(port)
    try:
        reply = raw.request("CONNECT", "example.com:443", [("host", "example.com:443")])
    finally:
        raw.close()
    return reply.status == 407 and reply.json()["error"] == "invalid_token"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def _until(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_proxy_is_served_only_where_asked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert configured_proxy(Settings.load(home)) is None  # the default 8701 is `up`'s only
    (home / "tether.toml").write_text("[egress]\nport = 0\n")
    assert configured_proxy(Settings.load(home)) is None
    (home / "tether.toml").write_text('[egress]\nport = 18701\nhost = "0.0.0.0"\n')
    assert configured_proxy(Settings.load(home)) == ProxyAddress("0.0.0.0", 18701, reuse_port=True)


def test_a_runtime_serves_the_proxy_when_asked_and_stops_it(initialised: Settings) -> None:
    before = _threads()
    with Runtime(initialised) as plain:
        assert plain.proxy is None
        assert "tether-egress-proxy" not in _threads()
    with Runtime(initialised, app=None, proxy=ProxyAddress("127.0.0.1", 0)) as runtime:
        assert runtime.proxy is not None and runtime.proxy.port
        port = runtime.proxy.port
        assert _answers_407(port)
        assert runtime.proxy.ca is not None
        assert runtime.proxy.ca.cert_file == initialised.home / "egress" / "ca.pem"
        with pytest.raises(RuntimeError, match="serves no app"):
            _ = runtime.app
    assert _refused(port)
    _until(lambda: _threads() <= before)


def test_a_port_that_cannot_be_bound_stops_the_start_and_everything_with_it(
    initialised: Settings,
) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    before = _threads()
    try:
        with pytest.raises(
            InvalidRequest, match=f"cannot serve the egress proxy on 127.0.0.1:{port}"
        ):
            Runtime(initialised, proxy=ProxyAddress("127.0.0.1", port)).__enter__()
    finally:
        taken.close()
    _until(lambda: _threads() <= before)


def test_an_asgi_deployment_serves_the_proxy_its_config_names(initialised: Settings) -> None:
    from fastapi.testclient import TestClient

    port = free_port()
    configured = initialised.model_copy(
        update={"egress": initialised.egress.model_copy(update={"port": port})}
    )
    assert "port" in configured.egress.model_fields_set
    with TestClient(Deployment(lambda: configured)) as client:
        assert client.get("/healthz").status_code == 200
        assert _answers_407(port)
    assert _refused(port)


def _env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return env | {"TETHER_HOME": str(home), "TETHER_DB": db_url, "PYTHONPATH": str(SRC)}


@pytest.mark.slow
def test_tether_up_serves_the_proxy_and_says_where(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    port, proxy_port = free_port(), free_port()
    served = ServerProcess(
        [*TETHER, "up", "--port", str(port), "--proxy-port", str(proxy_port)],
        _env(home, db),
        port,
    )
    try:
        assert _answers_407(proxy_port)
    finally:
        out = served.stop()
    line = f"Egress proxy: http://127.0.0.1:{proxy_port}  (HTTPS_PROXY; CA: {home}/egress/ca.pem)"
    assert line in out, out
    assert (home / "egress" / "ca.pem").exists()
    assert "Traceback" not in out


@pytest.mark.slow
def test_tether_proxy_serves_the_proxy_alone_until_a_signal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home, f"sqlite:///{tmp_path / 'tether.db'}")
    refused = subprocess.run(
        [*TETHER, "proxy", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert "is not initialised: run `tether init` first" in refused.stderr + refused.stdout
    subprocess.run([*TETHER, "init"], env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(
        [*TETHER, "proxy", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Egress proxy: http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert f"CA: {home}/egress/ca.pem" in line
        assert _answers_407(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stdout.read()
        assert _refused(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
