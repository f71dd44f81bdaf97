"""Issue 13, items 2 and 8: the agent's environment holds only its own key, and MCP sessions
belong to the agent (and chain) that opened them.

Item 2 is shown end to end, as the README's desktop configuration runs it: a real
``tether up`` as root with its ``TETHER_HOME`` mode 0700, and the stdio bridge launched by
the official MCP SDK client as a *different*, unprivileged OS user with exactly the
README's environment (``TETHER_URL`` and ``TETHER_AGENT_KEY``, plus what finds Python).
The agent's granted tool works; from the same user and environment the admin API, the
signing keys, the admin token and the store are out of reach.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import spec
from helpers.gateway_paths import make_settings  # noqa: F401  (each test on both paths)
from helpers.mcp_clients import over_stdio
from helpers.mcp_wire import CALL, INIT, mcp_headers
from helpers.processes import ServerProcess, free_port
from mcp import Client
from mcp.client.stdio import StdioServerParameters

import tether
from tether.api import create_app
from tether.callers import Caller
from tether.core import Tether
from tether.grants import GrantSpec
from tether.upstreams.servers import UpstreamSpec

SRC = Path(tether.__file__).resolve().parents[1]  # the Tether under test (PYTHONPATH's)
TETHER = str(Path(sys.executable).with_name("tether"))
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
AGENT_USER = "tether-agent-test"
CLI = "from tether.cli.main import main; main()"
ADMIN = Caller.admin()
BASE = "http://testserver"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the user switch is mandatory)")
    pytest.skip(reason)


@dataclass
class Agent:
    """The unprivileged OS user the agent runs as, and how it starts Python."""

    uid: int
    gid: int
    python: str  # an interpreter that user can execute
    pythonpath: str  # Tether's source and its dependencies
    home: Path  # the agent's own folder (its key lives here)

    def argv(self, *args: str) -> list[str]:
        switch = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]
        return [*switch, self.python, *args]

    def env(self, url: str, key: Path) -> dict[str, str]:
        """Exactly the README's environment for the bridge, plus what finds Python."""
        return {
            "TETHER_URL": url,
            "TETHER_AGENT_KEY": str(key),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": self.pythonpath,
        }


def _user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(AGENT_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", AGENT_USER],
            capture_output=True,
            text=True,
        )
        if made.returncode not in (0, 9):  # 9: made meanwhile by another test process
            _unavailable(f"cannot create the OS user {AGENT_USER}: {made.stderr.strip()}")
        entry = pwd.getpwnam(AGENT_USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def agent_user() -> Iterator[Agent]:
    """The unprivileged user; its Python is this venv's when that user may run it, else a
    system interpreter of the same version on the venv's packages (a venv under a 0700
    /root is out of an unprivileged user's reach)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        _unavailable("switching to another OS user needs root and setpriv")
    uid, gid = _user()
    site = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    home = Path(tempfile.mkdtemp(prefix="tether-agent-"))
    os.chown(home, uid, gid)
    home.chmod(0o700)
    mirror: Path | None = None
    try:
        paths = f"{SRC}:{site}"
        for attempt in range(2):
            for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
                agent = Agent(uid, gid, python, paths, home)
                probe = subprocess.run(
                    agent.argv("-c", "import tether.gateway.stdio"),
                    env=agent.env("http://unused", home / "none"),
                    capture_output=True,
                    cwd=home,
                )
                if probe.returncode == 0:
                    yield agent
                    return
            if attempt == 0:
                # The checkout or the venv sits below a folder the user cannot enter (a
                # clone under a 0700 /root): give it a readable copy, linked where it can be.
                mirror = Path(tempfile.mkdtemp(prefix="tether-agent-py-"))
                mirror.chmod(0o755)
                paths = ":".join(
                    str(_mirror(Path(p), mirror / n)) for n, p in (("src", SRC), ("site", site))
                )
        _unavailable(f"no Python {version} that the user {AGENT_USER} may run")
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if mirror is not None:
            shutil.rmtree(mirror, ignore_errors=True)


def _mirror(source: Path, target: Path) -> Path:
    """A copy of ``source`` at ``target`` that any user may read: hard links where the file
    system allows (files keep their own modes), a plain copy otherwise."""
    linked = subprocess.run(["cp", "-al", str(source), str(target)], capture_output=True)
    if linked.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir() and not p.is_symlink())]:
        folder.chmod(0o755)
    return target


class Served(ServerProcess):
    """``tether up`` as root on a free port, its TETHER_HOME mode 0700."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700)
        home.chmod(0o700)
        port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        self.env.update(TETHER_HOME=str(home), PYTHONPATH=str(SRC))
        super().__init__([TETHER, "up", "--port", str(port), "--proxy-port", "0"], self.env, port)
        self.admin = {
            **self.env,
            "TETHER_URL": self.url,
            "TETHER_TOKEN": (home / "admin.token").read_text().strip(),
        }

    def tether(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The CLI as the administrator (root, with the admin token)."""
        done = subprocess.run(
            [TETHER, *argv], env=self.admin, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done


@pytest.fixture
def desk(tmp_path: Path, agent_user: Agent) -> Iterator[tuple[Served, Agent, Path]]:
    """The README walk-through: an upstream, an agent with its key, one granted tool; the
    key handed to the agent's OS user."""
    served = Served(tmp_path / "home")
    try:
        served.tether("gateway", "add", "test", "--command", f"{sys.executable} {SERVER}")
        key = agent_user.home / "desk-agent.pem"
        served.tether(
            "agent", "register", "desk-agent", "--owner", "alice@example.com", "--key-out", str(key)
        )
        served.tether(
            "grant", "add", "desk-agent", "--action", "tools/call", "--resource", "test/echo"
        )
        os.chown(key, agent_user.uid, agent_user.gid)
        yield served, agent_user, key
    finally:
        served.stop()


PROBE = """
import json, os, sqlite3, sys
import httpx
from pathlib import Path
from tether.agent_keys import client_assertion, key_file_agent, load_private_key

url, key_file = os.environ["TETHER_URL"], Path(os.environ["TETHER_AGENT_KEY"])
meta = httpx.get(url + "/.well-known/oauth-authorization-server").json()
key, agent = load_private_key(key_file), key_file_agent(key_file)
found = {}
for audience in (meta["issuer"], meta["issuer"] + "/mcp/test"):
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(agent, meta["token_endpoint"], key),
        "resource": audience,
    }
    token = httpx.post(url + "/oauth2/token", data=form).json()["access_token"]
    grant = {"principal": "desk-agent", "action": "*", "resource": "**"}
    auth = {"Authorization": "Bearer " + token}
    found[audience] = httpx.post(url + "/v1/grants", json=grant, headers=auth).status_code
for path in sys.argv[1:]:
    try:
        if path.endswith(".db"):
            sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("select 1 from agents")
        else:
            Path(path).read_bytes()
        found[path] = "read"
    except (OSError, sqlite3.Error) as exc:
        found[path] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(found))
"""


@pytest.mark.slow
def test_item_02_the_desktop_bridge_runs_as_another_user_with_only_its_key(desk) -> None:
    served, agent, key = desk
    env = agent.env(served.url, key)
    bridge = StdioServerParameters(
        command=agent.argv()[0],
        args=[*agent.argv("-c", CLI, "gateway", "stdio", "test")[1:]],
        env=env,
        cwd=str(agent.home),
    )

    async def work(client: Client) -> None:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
        said = await client.call_tool("echo", {"text": "from the desk"})
        assert not said.is_error and said.content[0].text == "from the desk"
        refused = await client.call_tool("write_note", {"path": "/tmp/x", "text": "x"})
        assert refused.is_error and refused.content[0].text.startswith("denied: ")

    over_stdio(bridge, work)

    # The same user and environment cannot reach the admin API ...
    def as_agent(*argv: str, extra: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            agent.argv(*argv),
            env={**env, **(extra or {})},
            cwd=agent.home,
            capture_output=True,
            text=True,
            timeout=120,
        )

    grab = ("-c", CLI, "grant", "add", "desk-agent", "--action", "*", "--resource", "**")
    anonymous = as_agent(*grab)
    assert anonymous.returncode != 0 and "Traceback" not in anonymous.stderr
    guessed = as_agent(*grab, extra={"TETHER_HOME": str(served.home)})
    assert guessed.returncode != 0 and "Permission denied" in guessed.stderr
    # ... not even with its own tokens, nor the signing keys, the admin token or the store.
    secrets = [
        *(str(p) for p in (served.home / "signing").iterdir()),
        str(served.home / "admin.token"),
        str(served.home / "tether.db"),
    ]
    probe = as_agent("-c", PROBE, *secrets)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found.pop(str(served.home / "tether.db")).startswith("OperationalError")
    assert all(v == 403 or v == 401 for k, v in found.items() if k.startswith("http")), found
    assert all(v.startswith("PermissionError") for k, v in found.items() if k.startswith("/"))
    grants = json.loads(served.tether("grant", "list", "--json").stdout)["grants"]
    assert [g["resource"] for g in grants] == ["test/echo"]  # nothing was granted


@pytest.mark.slow
def test_item_02_the_bridge_imports_nothing_of_the_core_and_reads_no_tether_home(
    tmp_path: Path,
) -> None:
    """The bridge module pulls in neither the core nor the store, and without TETHER_URL
    it refuses to start, with the reason, even when a TETHER_HOME is at hand."""
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tether.gateway.stdio; print(' '.join(sorted(sys.modules)))",
        ],
        env={"PYTHONPATH": str(SRC), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=True,
    )
    modules = imported.stdout.split()
    assert "tether.gateway.stdio" in modules
    assert not [m for m in modules if m.split(".")[0] == "sqlalchemy"]
    assert not [m for m in modules if m.startswith(("tether.core", "tether.store", "tether.api"))]

    home = tmp_path / "not-to-be-touched"
    env = {"TETHER_HOME": str(home), "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC)}
    started = subprocess.run(
        [TETHER, "gateway", "stdio", "test"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 2 and "TETHER_URL is not set" in started.stderr
    assert "Traceback" not in started.stderr
    assert not home.exists()


# ---- item 8 -------------------------------------------------------------------------


@pytest.fixture
def two_agents(tether: Tether) -> tuple[Tether, str, str]:
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
    for name in ("owner-agent", "other-agent"):
        tether.registry.register(ADMIN, spec(name))
        tether.grants.add(ADMIN, GrantSpec(name, "tools/call", "test/echo"))
    resource = f"{tether.settings.issuer}/mcp/test"

    def token(name: str) -> str:
        agent = tether.registry.get(ADMIN, name)
        return tether.tokens.client_credentials(agent, resource, None, None).access_token

    return tether, token("owner-agent"), token("other-agent")


@pytest.mark.slow
def test_item_08_a_session_belongs_to_the_agent_that_opened_it(two_agents) -> None:
    """Another agent using or deleting the session ID gets "Session not found" (404); the
    session lives on for its agent, and a kill of that agent still closes it."""
    tether, mine, theirs = two_agents

    async def work() -> int:
        app = create_app(tether)
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as http,
        ):
            opened = await http.post("/mcp/test", json=INIT, headers=mcp_headers(mine))
            sid = opened.headers["mcp-session-id"]
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await http.post("/mcp/test", json=done, headers=mcp_headers(mine, sid))
            for method, body in (("POST", CALL), ("DELETE", None)):
                stolen = await http.request(
                    method, "/mcp/test", json=body, headers=mcp_headers(theirs, sid)
                )
                assert stolen.status_code == 404, (method, stolen.text)
                assert stolen.json()["error"]["message"] == "Session not found"
            still = await http.post("/mcp/test", json=CALL, headers=mcp_headers(mine, sid))
            assert still.status_code == 200 and '"hi"' in still.text
            report = await anyio.to_thread.run_sync(
                lambda: tether.killswitch.kill(ADMIN, "owner-agent", reason="test")
            )
            return report.sessions_closed

    assert anyio.run(work) == 1
    refused = [e for e in tether.events.list(type="tool.refused") if "session" in e.reason]
    assert refused and refused[0].actor == tether.registry.agent_id("other-agent")
