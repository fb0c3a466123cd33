"""The stack bench_server.py measures: its own PostgreSQL database and Redis db, `jobs db
upgrade`, tokens, `jobs server` (optionally with a bigger pool) and workers; stop() takes
them all down."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from proc_cpu import TICK  # bench/, beside this file

ROOT = Path(__file__).resolve().parents[1]
# `jobs server` with a bigger SQLAlchemy pool (--server-pool-size): the fix this bench measures.
POOLED_SERVER = """
import sys
import db.session
make = db.session.make_engine
size = int(sys.argv.pop(1))
db.session.make_engine = lambda url, **kw: make(url, **{"pool_size": size, "max_overflow": size,
                                                        **kw})
from kiln.cli import main
main()
"""


class Stack:
    """The database, the broker db, the server and the workers; stop() takes them all down."""

    def __init__(self, database_url: str, broker_url: str) -> None:
        self.database_url, self.broker_url = database_url, broker_url
        self.home = Path(tempfile.mkdtemp(prefix="kiln-bench-server-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        self.env |= {"KILN_DATABASE_URL": database_url, "KILN_BROKER_URL": broker_url,
                     "KILN_HOME": str(self.home)}  # fmt: skip
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.created_db = self.owns_broker = False
        self.port = 0

    def admin(self) -> psycopg.Connection[Any]:
        url = self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)

    def jobs(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "kiln.cli", *args], env=self.env,
                              capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"jobs {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def start(self, workers: int, pool_size: int | None) -> None:
        name = self.database_url.rsplit("/", 1)[1]
        keys = redis.Redis.from_url(self.broker_url).dbsize()
        if keys:
            raise SystemExit(f"{self.broker_url} holds {keys} keys; pass another --broker-url")
        self.owns_broker = True
        with self.admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')  # fails if it exists: never someone's
        self.created_db = True
        self.jobs("db", "upgrade")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        pooled = ["-c", POOLED_SERVER, str(pool_size)] if pool_size else ["-m", "kiln.cli"]
        self.spawn("server", *pooled, "server", "--port", str(self.port))
        for i in range(workers):
            worker = ["worker", "--queues", "cpu", "--name", f"bench-w{i}"]
            self.spawn(f"worker{i}", "-m", "kiln.cli", *worker)

    def spawn(self, label: str, *args: str) -> None:
        with open(self.home / f"{label}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen([sys.executable, *args], env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True)  # fmt: skip
        self.procs.append((label, proc))

    def check_alive(self) -> None:
        for label, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.home / f"{label}.log").read_text()[-2000:]
                raise SystemExit(f"{label} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # the group: a worker's pool children too
            proc.wait()
        if self.created_db:
            with self.admin() as admin:
                name = self.database_url.rsplit("/", 1)[1]
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if self.owns_broker:
            redis.Redis.from_url(self.broker_url).flushdb()
        shutil.rmtree(self.home, ignore_errors=True)

    def counters(self) -> tuple[int, int]:
        """This database's (sessions, transactions) so far, from pg_stat_database."""
        with self.admin() as admin:
            name = self.database_url.rsplit("/", 1)[1]
            row = admin.execute(
                "SELECT sessions, xact_commit + xact_rollback FROM"
                " pg_stat_database WHERE datname = %s",
                (name,),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    def reaped_cpu(self) -> float:
        """CPU seconds of the PostgreSQL backends that have exited so far (any database's):
        the postmaster reaps them, so their time is in its children's counters."""
        with self.admin() as admin:
            row = admin.execute("SHOW data_directory").fetchone()
        assert row is not None
        pid = (Path(row[0]) / "postmaster.pid").read_text().split()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / TICK

    def backends(self) -> set[int]:
        """Process ids of the PostgreSQL backends connected to this database now."""
        with self.admin() as admin:
            name = self.database_url.rsplit("/", 1)[1]
            rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
            return {int(r[0]) for r in rows.fetchall()}


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
