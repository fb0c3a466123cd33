"""The PostgreSQL server stopped and started again while fits run on real workers (PostgreSQL +
Redis): the workers ride the outage out and every fit succeeds in its first attempt, with each
step's loss stored once.

This stops the shared server on 127.0.0.1:5432 (pg_ctlcluster, as root) for a few seconds:
other tests using it meanwhile fail. It is `slow` (make test-slow) and restarts the server in
a `finally`. It uses a database of its own, made and dropped over connections of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import PG_ADMIN_URL, Stack, WorkerProcess, missing
from tests.fleet.helpers import job_row, submit_fit, until

if TYPE_CHECKING:
    import psycopg

pytestmark = [pytest.mark.slow, pytest.mark.outage, pytest.mark.postgres, pytest.mark.redis]

OUTAGE_S = 6.0
STEPS = 4000
FITS = 3  # on two workers: the third is claimed once the server is back


def cluster_version() -> str:
    """The one PostgreSQL cluster's version under /etc/postgresql; skips (fails in CI) when
    this machine cannot stop and start it."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        missing("stopping PostgreSQL needs pg_ctlcluster and root")
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if len(versions) != 1:
        missing(f"expected one PostgreSQL cluster under /etc/postgresql, found {versions}")
    return versions[0]


def pg_ctlcluster(version: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def admin_connection(timeout: float = 0.0) -> psycopg.Connection[Any] | None:
    """A fresh autocommit connection to the server (retried for `timeout` seconds), or None."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)


def answers() -> bool:
    connection = admin_connection()
    if connection is None:
        return False
    connection.close()
    return True


@pytest.fixture
def own_database(redis_server: str, tmp_path: Path) -> Iterator[Stack]:
    """A stack on a database of this test's own (its setup and teardown use connections made
    for them, so none is one the outage killed)."""
    import psycopg

    from db.migrate import upgrade_to_head
    from kiln.settings import normalise_db_url

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        missing("PostgreSQL not reachable at 127.0.0.1:5432")
    name = f"kiln_outage_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    upgrade_to_head(normalise_db_url(url))
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home=home, db_url=url, broker_url=redis_server)
    stack.extra.update(
        KILN_LEASE_S="60",  # longer than the outage: no reaper takes a running job after it
        KILN_DB_RETRY_S="90",  # the Sink keeps its losses and retries this long
        KILN_REAPER_INTERVAL_S="1",
    )  # fmt: skip
    try:
        yield stack
    finally:
        if stack.engine is not None:
            stack.engine.dispose()
        again = admin_connection(timeout=60)
        if again is not None:
            with again:
                again.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_fits_ride_out_a_postgres_outage_and_store_each_step_once(own_database: Stack) -> None:
    from sqlalchemy import func, select

    from db.models import Attempt, Job, Loss

    stack = own_database
    version = cluster_version()
    workers = [WorkerProcess(stack, "w1"), WorkerProcess(stack, "w2")]
    try:
        jobs = [submit_fit(stack, "--steps", str(STEPS), "--seed", str(7 + i)) for i in range(FITS)]

        def two_running() -> bool:
            rows = [job_row(stack, j) for j in jobs]
            return sum(r.status == "running" and r.step >= 200 for r in rows) == 2

        until("two fits past step 200", two_running, timeout=180, every=0.1)
        before = {j: job_row(stack, j).step for j in jobs}
        try:
            stopped = pg_ctlcluster(version, "stop")
            assert stopped.returncode == 0, stopped.stderr
            assert not answers()  # a real outage: nothing connects
            time.sleep(OUTAGE_S)
        finally:
            started = pg_ctlcluster(version, "start")  # always, whatever happened above
            back = admin_connection(timeout=60)
            if back is None:
                pytest.fail(f"PostgreSQL did not come back: {started.stderr}")
            back.close()
        assert all(before[j] < STEPS for j in jobs)

        def all_ended() -> bool:
            return all(job_row(stack, j).status in ("succeeded", "failed") for j in jobs)

        until("every fit to end", all_ended, timeout=240, every=0.5)
        logs = "".join(w.log.read_text() for w in workers)
    finally:
        for worker in workers:
            worker.stop()

    assert "database error" in logs  # the Sinks met the outage and kept their losses
    with stack.sessions()() as session:
        for job_id in jobs:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "succeeded", (job_id, job and job.error)
            steps = session.scalars(
                select(Loss.step).where(Loss.job_id == job_id).order_by(Loss.step)
            ).all()
            assert list(steps) == list(range(STEPS)), job_id
            attempts = session.execute(
                select(Attempt.worker, Attempt.outcome).where(Attempt.job_id == job_id)
            ).all()
            assert [outcome for _, outcome in attempts] == ["succeeded"], attempts
        total = session.scalar(select(func.count()).select_from(Loss))
        assert total == FITS * STEPS
