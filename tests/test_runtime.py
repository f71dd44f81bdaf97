"""The runtime (tether.server): one owner of the running service.

Background jobs run once per store and are taken over when their holder stops or dies;
the runtime stops everything, also after a start-up that failed half way; an MCP session
lives in the process that opened it (another answers 404 "Session not found"); and
``uvicorn tether.server:app --workers 2`` on PostgreSQL serves the API and the gateway,
where a kill through one worker is refused by the other at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import sqlalchemy as sa
from conftest import ADMIN, spec
from helpers.mcp_wire import CALL, INIT, INITIALISED, mcp_headers
from helpers.processes import free_port

from tether import InitResult, Settings, Tether
from tether.api import create_app
from tether.errors import StoreUnavailable
from tether.grants import GrantSpec
from tether.jobs import Job, Periodic
from tether.server import Deployment, Runtime, initialise, standard_jobs
from tether.store import admin_tokens, epoch_acks
from tether.store.locks import StoreLock
from tether.upstreams.servers import UpstreamSpec

SRC = Path(__file__).resolve().parents[1] / "src"
SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"


def _until(check: Callable[[], object], seconds: float = 20, what: str = "") -> None:
    """Poll ``check`` until it is true, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


@pytest.fixture
def initialised(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    Tether.init(settings)[0].close()
    return settings


def _probe(ticks: list[str], who: str) -> Callable[[Tether], list[Job]]:
    """Jobs of one runtime: a probe, once per store, noting which runtime ran it."""

    def jobs(tether: Tether) -> list[Job]:
        lock = StoreLock(tether.store, "job:probe")
        return [Periodic("probe", 0.02, lambda: ticks.append(who), lock=lock)]

    return jobs


# ---- background jobs ------------------------------------------------------------------


def test_a_job_runs_once_across_two_runtimes_and_is_taken_over(initialised: Settings) -> None:
    ticks: list[str] = []
    runtimes = {who: Runtime(initialised, jobs=_probe(ticks, who)) for who in ("one", "two")}
    try:
        for runtime in runtimes.values():
            runtime.__enter__()
        _until(lambda: len(ticks) >= 25, what="25 ticks")
        holder = ticks[0]
        assert set(ticks) == {holder}  # one runtime ran it; the other kept off
        runtimes.pop(holder).__exit__(None, None, None)  # its holder stops
        seen = len(ticks)
        _until(lambda: len(ticks) >= seen + 25, what="the take-over")
        assert set(ticks[seen:]) == set(runtimes)  # the other took over, alone
    finally:
        for runtime in runtimes.values():
            runtime.__exit__(None, None, None)


def test_the_standard_jobs_run_once_per_store(make_settings: Callable[..., Settings]) -> None:
    """The sweeper, the checkpointer and the detector take their job's lock of the store
    (and the sinks, when there are any); the count of this process's suppressed refusals runs in
    every process."""
    settings = make_settings(sweep_interval="1s", audit={"checkpoint_interval_ms": 50})
    Tether.init(settings)[0].close()
    with Runtime(settings) as one, Runtime(settings) as two:
        names = [job.name for job in one.jobs]
        assert names == ["sweeper", "refusals", "checkpointer", "audit-sinks", "detector"]
        assert [job.name for job in standard_jobs(two.tether)] == names
        for job in ("sweeper", "checkpointer", "detect"):
            _until(lambda job=job: _taken(one.tether, f"job:{job}"), what=f"{job}'s lock")
    with Tether.open(settings) as tether, StoreLock(tether.store, "job:sweeper").holding() as got:
        assert got  # both runtimes stopped: the lock is free again


def _taken(tether: Tether, name: str) -> bool:
    """Whether another holds the lock ``name`` (a probe that lets go at once)."""
    with StoreLock(tether.store, name).holding() as got:
        return not got


HOLDER = """
import sys, time
from tether.store import Store
from tether.store.locks import StoreLock
lock = StoreLock(Store.open(sys.argv[1]), "job:probe")
assert lock.hold()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_dead_holders_lock_is_taken_over(initialised: Settings) -> None:
    """A process that holds a job's lock and dies (SIGKILL: no clean-up) leaves it to the
    next process that tries: its connection (PostgreSQL) or its file lock (SQLite) went."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, initialised.database_url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with Tether.open(initialised) as tether:
            lock = StoreLock(tether.store, "job:probe")
            assert not lock.hold()
            holder.kill()
            holder.wait(timeout=30)
            _until(lock.hold, what="the take-over")
            lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_stores_in_other_schemas_of_one_database_hold_their_own_jobs(
    postgres_schema_url: str, postgres_template: Any
) -> None:
    """PostgreSQL advisory locks are per database: two Tether stores in two schemas of one
    database must not take each other's jobs (each runs its own sweeper)."""
    from tether.store import Store

    with postgres_template.schema(migrated=True) as other_url:
        one, two = Store.open(postgres_schema_url), Store.open(other_url)
        mine, theirs = StoreLock(one, "job:sweeper"), StoreLock(two, "job:sweeper")
        three = Store.open(postgres_schema_url)
        same = StoreLock(three, "job:sweeper")
        try:
            assert mine.hold()
            assert theirs.hold()  # another store: its own lock
            assert not same.hold()  # the same store: held by the first
        finally:
            for lock in (mine, theirs, same):
                lock.release()
            for store in (one, two, three):
                store.dispose()


def test_a_lock_whose_connection_died_is_lost_and_taken_over(postgres_schema_url: str) -> None:
    from tether.store import Store

    one, two = Store.open(postgres_schema_url), Store.open(postgres_schema_url)
    mine, theirs = StoreLock(one, "job:probe"), StoreLock(two, "job:probe")
    try:
        assert mine.hold() and mine.hold()  # held, and still held
        assert not theirs.hold()
        with two.engine.begin() as conn:  # the holder's session ends (its server died ...)
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                    "AND classid::bigint = :high AND objid::bigint = :low"
                ),
                {"high": (mine.key >> 32) & 0xFFFF_FFFF, "low": mine.key & 0xFFFF_FFFF},
            )
        _until(theirs.hold, what="the take-over")
        assert not mine.hold()  # the old holder notices, and the lock is not its own
    finally:
        mine.release()
        theirs.release()
        one.dispose()
        two.dispose()


# ---- starting and stopping ------------------------------------------------------------


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("tether-")}


def test_the_runtime_starts_and_stops_everything(initialised: Settings) -> None:
    before = _threads()
    with Runtime(initialised) as runtime:
        running = _threads() - before
        assert {"tether-sweeper", "tether-refusals", "tether-checkpointer"} <= running
        if runtime.tether.store.dialect == "postgresql":
            assert "tether-epoch" in running
            _until(lambda: _acks(runtime.tether) == 1, what="the listener's acknowledgement")
        assert runtime.app.title == "Tether"
        tether = runtime.tether
    _until(lambda: _threads() <= before, what="the threads to end")
    with pytest.raises(RuntimeError, match="not running"):
        runtime.tether  # noqa: B018
    if tether.store.dialect == "postgresql":
        with Tether.open(initialised) as other:
            assert _acks(other) == 0  # no longer a process a kill waits for


def _acks(tether: Tether) -> int:
    with tether.store.read() as conn:
        return len(conn.execute(sa.select(epoch_acks)).all())


def test_a_start_that_fails_half_way_stops_what_had_started(initialised: Settings) -> None:
    stopped: list[str] = []

    class Broken:
        name = "broken"

        def start(self) -> None:
            raise RuntimeError("cannot start")

        def stop(self) -> None:
            stopped.append(self.name)

    def jobs(tether: Tether) -> list[Job]:
        good = Periodic("good", 60.0, lambda: None)
        return [good, Broken()]

    before = _threads()
    runtime = Runtime(initialised, jobs=jobs)
    with pytest.raises(RuntimeError, match="cannot start"):
        runtime.__enter__()
    assert stopped == ["broken"]
    _until(lambda: _threads() <= before, what="the started job and the listener to stop")
    with pytest.raises(RuntimeError, match="not running"):
        runtime.app  # noqa: B018


def test_processes_initialising_one_store_together_make_one_admin_token(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    results: list[InitResult] = []
    errors: list[BaseException] = []

    def init() -> None:
        try:
            tether, result = initialise(settings)
            tether.close()
            results.append(result)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 3
    assert [r.created for r in results].count(True) == 1
    [made] = [r.admin_token for r in results if r.admin_token]
    assert settings.admin_token_file.read_text().strip() == made
    with Tether.open(settings) as tether, tether.store.read() as conn:
        assert len(conn.execute(sa.select(admin_tokens)).all()) == 1


@pytest.mark.unmigrated  # an empty store: nothing initialised it
def test_a_store_not_initialised_is_refused(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    with pytest.raises(StoreUnavailable, match="tether init"):
        Runtime(Settings.load(home, db_url=db_url)).__enter__()
    home.mkdir()
    with pytest.raises(StoreUnavailable, match="tether init"):
        Runtime(Settings.load(home, db_url=db_url)).__enter__()


def test_the_asgi_app_opens_nothing_until_its_lifespan_and_refuses_clearly(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    app = Deployment(lambda: Settings.load(home))
    answers: list[dict[str, Any]] = []

    async def lifespan() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> Any:
            return next(messages)

        async def send(message: Any) -> None:
            answers.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    anyio.run(lifespan)
    assert not home.exists()
    [failed] = answers
    assert failed["type"] == "lifespan.startup.failed"
    assert "is not initialised: run `tether init` first" in failed["message"]


def test_the_asgi_app_runs_a_runtime_and_closes_it(initialised: Settings) -> None:
    from fastapi.testclient import TestClient

    before = _threads()
    with TestClient(Deployment(lambda: initialised)) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert "tether-sweeper" in _threads()
    _until(lambda: _threads() <= before, what="the threads to end")


# ---- MCP sessions across processes --------------------------------------------------------


def _organisation(tether: Tether) -> str:
    """An upstream ``test``, an agent ``helper`` that may call its echo; its token."""
    tether.upstreams.add(ADMIN, UpstreamSpec("test", command=f"{sys.executable} {SERVER}"))
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "test/echo"))
    agent = tether.registry.get(ADMIN, "helper")
    resource = f"{tether.settings.issuer}/mcp/test"
    return tether.tokens.client_credentials(agent, resource, None, None).access_token


def test_a_session_reaching_a_process_that_does_not_hold_it_is_not_found(
    postgres_schema_url: str, home: Path
) -> None:
    """Two processes on one store (two Tethers, two apps): a session opened in one is
    unknown to the other (404 "Session not found", the SDK's JSON-RPC error), and lives
    on where it was opened."""
    settings = Settings.load(home, db_url=postgres_schema_url)
    Tether.init(settings)[0].close()
    with Tether.open(settings) as one, Tether.open(settings) as two:
        token = _organisation(one)

        async def work() -> None:
            apps = create_app(one), create_app(two)
            async with (
                apps[0].router.lifespan_context(apps[0]),
                apps[1].router.lifespan_context(apps[1]),
                httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=apps[0]), base_url="http://a"
                ) as a,
                httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=apps[1]), base_url="http://b"
                ) as b,
            ):
                opened = await a.post("/mcp/test", json=INIT, headers=mcp_headers(token))
                sid = opened.headers["mcp-session-id"]
                await a.post("/mcp/test", json=INITIALISED, headers=mcp_headers(token, sid))
                for method, body in (("POST", CALL), ("GET", None), ("DELETE", None)):
                    elsewhere = await b.request(
                        method, "/mcp/test", json=body, headers=mcp_headers(token, sid)
                    )
                    assert elsewhere.status_code == 404, (method, elsewhere.text)
                    assert elsewhere.json() == {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32600, "message": "Session not found"},
                    }
                here = await a.post("/mcp/test", json=CALL, headers=mcp_headers(token, sid))
                assert here.status_code == 200 and '"hi"' in here.text
                # the other process, asked without a session, opens its own
                again = await b.post("/mcp/test", json=INIT, headers=mcp_headers(token))
                assert again.status_code == 200 and again.headers["mcp-session-id"] != sid

        anyio.run(work)
    decided = [e.decision for e in one.events.list(type="decision")]
    assert decided == ["allow"]  # the refused requests were never half-served


# ---- uvicorn tether.server:app --workers 2, tether up --workers 2 ---------------------------


UVICORN = [sys.executable, "-m", "uvicorn", "tether.server:app", "--timeout-keep-alive", "300"]
UP = [sys.executable, "-c", "from tether.cli.main import main; main()", "up"]


class Workers:
    """``uvicorn tether.server:app --workers N`` (or ``tether up --workers N``: ``via=UP``)
    in a process group of its own."""

    def __init__(
        self, env: dict[str, str], port: int, count: int = 2, via: list[str] = UVICORN
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        argv = [*via, "--workers", str(count), "--port", str(port)]
        if via is UVICORN:
            argv += ["--log-level", "warning"]
        else:
            argv += ["--proxy-port", "0"]  # never the default egress proxy port in tests
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited: {self.output()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _until(healthy, 60, "/healthz")

    def output(self) -> str:
        self.stop()
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def _env(home: Path, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return env | {"TETHER_HOME": str(home), "TETHER_DB": db, "PYTHONPATH": str(SRC)}


@pytest.mark.slow
@pytest.mark.parametrize("count", [1, 2])
def test_uvicorn_refuses_to_start_on_a_store_not_initialised(tmp_path: Path, count: int) -> None:
    """Each worker says why in one line and exits with uvicorn's start-up failure (3);
    with several workers, uvicorn's parent process then stops too (exiting 0: its own
    choice)."""
    home = tmp_path / "home"
    workers = Workers(_env(home, f"sqlite:///{tmp_path / 'none.db'}"), free_port(), count)
    workers.proc.wait(timeout=60)
    out = workers.output()
    assert "Tether cannot start: TETHER_HOME" in out
    assert "is not initialised: run `tether init` first" in out
    assert "Traceback" not in out
    if count == 1:
        assert workers.proc.returncode == 3
    else:
        assert "failed to start, stopping the parent process" in out
    assert not home.exists()


def _decisions(connection: httpx.Client) -> float:
    """This worker's count of decisions (``tether_decisions_total`` is per process)."""
    text = connection.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tether_decisions_total")
    )


def _decide(connection: httpx.Client, admin: dict[str, str]) -> None:
    """One decision, made (and counted) by the worker behind ``connection``."""
    ask = {
        "subject": {"type": "agent", "id": "helper"},
        "action": {"name": "tools/call"},
        "resource": {"type": "mcp_tool", "id": "test/echo"},
        "context": {},
    }
    assert connection.post("/access/v1/evaluation", json=ask, headers=admin).status_code == 200


def _apart(a: httpx.Client, b: httpx.Client, admin: dict[str, str]) -> bool:
    """Whether two kept-alive connections reach two different workers: a decision made
    through ``b`` leaves the count of ``a``'s worker unchanged only if it is another."""
    before = _decisions(a)
    _decide(b, admin)
    return _decisions(a) == before


def _session(connection: httpx.Client, token: str) -> str:
    opened = connection.post("/mcp/test", json=INIT, headers=mcp_headers(token))
    assert opened.status_code == 200, opened.text
    sid = opened.headers["mcp-session-id"]
    connection.post("/mcp/test", json=INITIALISED, headers=mcp_headers(token, sid))
    return sid


@pytest.mark.slow
@pytest.mark.parametrize("via", [UVICORN, UP], ids=["uvicorn", "tether-up"])
def test_two_workers_serve_and_a_kill_through_one_is_refused_by_the_other(
    postgres_schema_url: str, tmp_path: Path, via: list[str]
) -> None:
    """Two worker processes (``uvicorn tether.server:app --workers 2`` or ``tether up
    --workers 2``) each serve the API and the gateway, and each refuses at once what a
    kill through the other killed."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "tether.toml").write_text(f'issuer = "http://127.0.0.1:{port}"\n')
    settings = Settings.load(home, db_url=postgres_schema_url)
    first, result = Tether.init(settings)
    with first:
        token = _organisation(first)
    admin = {"Authorization": f"Bearer {result.admin_token}"}
    workers = Workers(_env(home, postgres_schema_url), port, via=via)
    connections: list[httpx.Client] = []

    def connect() -> httpx.Client:
        client = httpx.Client(
            base_url=workers.url, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        connections.append(client)
        return client

    try:
        workers.wait_healthy()
        with Tether.open(settings) as watcher:  # both workers listen for kills
            _until(lambda: _acks(watcher) == 2, 60, "two workers' epoch listeners")
        a = connect()
        for _ in range(60):  # each fresh connection lands on either worker
            b = connect()
            if _apart(a, b, admin):
                break
        else:
            raise AssertionError("60 fresh connections all reached one worker")
        sessions = {}
        for worker, connection in (("a", a), ("b", b)):  # the gateway, on each worker
            sessions[worker] = sid = _session(connection, token)
            said = connection.post("/mcp/test", json=CALL, headers=mcp_headers(token, sid))
            assert said.status_code == 200 and '"hi"' in said.text, said.text
            active = connection.post("/oauth2/introspect", data={"token": token}, headers=admin)
            assert active.json()["active"] is True
        # a's session is unknown on b's worker
        stray = b.post("/mcp/test", json=CALL, headers=mcp_headers(token, sessions["a"]))
        assert stray.status_code == 404

        killed = a.post("/v1/agents/helper/kill", json={"reason": "test"}, headers=admin)
        assert killed.status_code == 200, killed.text

        for worker, connection in (("b", b), ("a", a)):  # at once: no wait, no retry
            gone = connection.post("/oauth2/introspect", data={"token": token}, headers=admin)
            assert gone.json() == {"active": False}, worker
            sid = sessions[worker]
            call = connection.post("/mcp/test", json=CALL, headers=mcp_headers(token, sid))
            assert call.status_code == 401, (worker, call.text)
            fresh = connection.post("/mcp/test", json=INIT, headers=mcp_headers(token))
            assert fresh.status_code == 401, (worker, fresh.text)
        assert _apart(a, b, admin)  # the same two workers answered throughout
    finally:
        for client in connections:
            client.close()
        out = workers.output()
    assert "Traceback" not in out, out


def test_tether_up_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    """SQLite serves one process: ``--workers 2`` on it says so, exits 2 and starts nothing
    (the home is not even made)."""
    home = tmp_path / "home"
    env = _env(home, f"sqlite:///{tmp_path / 'one.db'}")
    done = subprocess.run(
        [*UP, "--workers", "2", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--workers 2 needs a PostgreSQL store" in done.stderr
    assert not home.exists()
    assert not (tmp_path / "one.db").exists()
