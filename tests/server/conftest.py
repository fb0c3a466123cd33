"""Fixtures for the HTTP API: a database with tokens, the app in-process, and uvicorn on a
free loopback port for the CLI's round trips. Submissions go nowhere (offline_client); a test
runs a job in this process (run_in_process) when it needs results."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI

from tests.conftest import Stack, offline_client


@dataclass
class Api:
    """A served app: its stack (database), tokens by name, and how to call it."""

    stack: Stack
    app: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)
    url: str = ""
    clients: list[httpx.Client] = field(default_factory=list)

    def http(self, who: str | None) -> httpx.Client:
        """A client of the served API with `who`'s token (None: no token)."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(client)  # closed when the server stops
        return client

    def remote_env(self, who: str, home: Path) -> dict[str, str | None]:
        """Environment for a CLI over the API: no database, no broker, an empty KILN_HOME."""
        return {"KILN_API_URL": self.url, "KILN_TOKEN": self.tokens[who],
                "KILN_HOME": str(home), "KILN_DATABASE_URL": None, "KILN_BROKER_URL": None,
                "KILN_POLL_INTERVAL_S": "0.1"}  # fmt: skip


def make_api(stack: Stack, **settings: Any) -> Api:
    from db.tokens import create_token
    from kiln.server import create_app

    client = offline_client(stack)
    client.settings = client.settings.model_copy(update=settings)
    api = Api(stack, create_app(client.settings, client=client))
    with stack.sessions()() as session:
        for name, user, role in [
            ("alice", "alice", "submit"),
            ("bob", "bob", "submit"),
            ("reader", "carol", "read"),
            ("admin", "root", "admin"),
        ]:
            view, token = create_token(session, user, role)
            api.tokens[name], api.token_ids[name] = token, view.id
    return api


@pytest.fixture
def api_stack(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A stack on the database; its broker is never used (submissions go nowhere)."""
    import os

    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home=home, db_url=db_url, broker_url="redis://127.0.0.1:9/0")
    for key in [k for k in os.environ if k.startswith("KILN_")]:
        monkeypatch.delenv(key)
    yield stack
    if stack.engine is not None:
        stack.engine.dispose()
    from worker.embedded import stop_embedded_broker

    stop_embedded_broker(home)  # a direct `jobs submit` in a test started one there


@pytest.fixture
def api(api_stack: Stack) -> Iterator[Api]:
    """The API on the stack, served (see serve), with tokens for alice, bob (submit), reader
    (user carol, read) and admin (user root)."""
    with serve(make_api(api_stack)) as api:
        yield api


@contextmanager
def serve(api: Api) -> Iterator[Api]:
    """The api under a real uvicorn, in a thread, on a free loopback port."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    api.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield api
    finally:
        for client in api.clients:
            client.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def jobs_cli() -> Callable[..., Result]:
    """jobs_cli(*args, env=...) -> click's Result of `jobs ARGS` run in this process."""
    from kiln.cli import get_cli

    def run(*args: str, env: dict[str, str | None]) -> Result:
        return CliRunner().invoke(get_cli(), list(args), env=env, catch_exceptions=False)

    return run


def direct_env(api: Api) -> dict[str, str | None]:
    """The environment of a `jobs` command on the stack's database, not through the API."""
    return {"KILN_HOME": str(api.stack.home), "KILN_DATABASE_URL": api.stack.db_url,
            "KILN_API_URL": None, "KILN_TOKEN": None}  # fmt: skip


def same_cli(api: Api, jobs_cli: Callable[..., Result], remote: dict[str, str | None],
             *args: str) -> Result:  # fmt: skip
    """`jobs ARGS` over the API and directly: the same exit code, stdout and stderr (with the
    output file named alike); the API's result."""
    over_api, direct = jobs_cli(*args, env=remote), jobs_cli(*args, env=direct_env(api))
    assert (over_api.exit_code, over_api.stdout, over_api.stderr) == (
        direct.exit_code, direct.stdout, direct.stderr), args  # fmt: skip
    return over_api
