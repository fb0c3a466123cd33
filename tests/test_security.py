"""Security against real processes: JSON only on the wire, job ids on worker log lines, and
no URL password printed by any command (stdout, stderr, logs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from kiln.cli import UNAVAILABLE
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, run_cli
from tests.params import EMBEDDED_AND_FLEET

# kombu.serialization.SerializerRegistry._for_untrusted_content, raised as ContentDisallowed
# and logged by Celery's consumer as "Received invalid task message: ...".
REFUSAL = "Refusing to deserialize untrusted content of type pickle"
SECRET = "s3cretpw"
BAD_DB = f"postgresql://kiln:{SECRET}@127.0.0.1:5432/nodb"
BAD_BROKER = f"redis://:{SECRET}@127.0.0.1:6399/0"  # nothing listens on 6399
SUBMIT = ("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
          RUGGED_FORMULA, "--steps", "50", "--json")  # fmt: skip


def _wait_for(done: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def _worker(env: dict[str, str], log: Path, *options: str, ready: str = "ready.") -> Iterator[None]:
    """`jobs [OPTIONS] worker --queues cpu`, logging to `log`, stopped (SIGTERM) at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", *options, "worker", "--queues", "cpu",
             "--name", "w1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(lambda: ready in log.read_text() or proc.poll() is not None, 90, ready, log)
        assert proc.poll() is None, f"worker exited:\n{log.read_text()[-3000:]}"
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _queued_fit(stack: Stack) -> str:
    """A queued fit in the database whose id was sent to no queue."""
    from kiln.specs import FitSpec
    from scheduler.kinds import Upload
    from scheduler.limits import Limits
    from scheduler.submit import submit_job

    spec = FitSpec(model="linreg", formula=RUGGED_FORMULA, steps=50, num_samples=50)
    [job] = submit_job(
        stack.sessions(), spec, Upload(RUGGED.read_bytes(), RUGGED.name),
        send=lambda *message: None, limits=Limits.from_settings(stack.settings()),
    )  # fmt: skip
    return job.id


def _show(stack: Stack, job_id: str) -> dict[str, Any]:
    shown = run_cli("show", job_id, "--json", env=stack.env)
    assert shown.returncode == 0, shown.stderr
    return cast(dict[str, Any], json.loads(shown.stdout))


@EMBEDDED_AND_FLEET
def test_a_pickled_task_message_is_refused_and_its_job_not_run(stack: Stack) -> None:
    from worker.app import TASK_NAME, Sender, make_app

    job_id = _queued_fit(stack)
    log = stack.home / "w1.log"
    # The reaper would re-send the queued job as JSON after resend_after_s: not in this test.
    env = {**stack.env, "KILN_RESEND_AFTER_S": "3600"}
    app = make_app(stack.settings())
    try:
        with _worker(env, log):
            # A producer may still send pickle; the worker's accept_content must refuse it.
            app.send_task(TASK_NAME, args=[job_id], queue="cpu", serializer="pickle")
            _wait_for(lambda: REFUSAL in log.read_text(), 60, "refusal", log)
            time.sleep(1)  # had the message been loaded, the claim would be in by now
            job = _show(stack, job_id)
            assert (job["status"], job["attempts"], job["attempt_log"]) == ("queued", 0, [])
            assert f"job {job_id}" not in log.read_text()

            # The same id sent as JSON runs: the pickled copy was refused for its format alone.
            Sender(app)(job_id, "cpu", 5)
            watched = run_cli("watch", job_id, "--timeout", "120", "--json", env=stack.env)
            assert watched.returncode == 0, watched.stderr
    finally:
        app.close()
    job = _show(stack, job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 1)


@EMBEDDED_AND_FLEET
def test_worker_json_log_lines_about_a_job_carry_its_id(stack: Stack) -> None:
    log = stack.home / "w1.log"
    with _worker(stack.env, log, "--log-json", "-v"):
        done = run_cli(*SUBMIT, "--wait", env=stack.env)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["id"]
    lines = log.read_text().splitlines()
    about = [line for line in lines if job_id in line]
    # Each line naming the job is one JSON record (not the banner, not a bare print).
    records = [json.loads(line) for line in about]
    assert any(r["message"] == f"job {job_id}: claimed by w1 (attempt 1)" for r in records)
    assert [r for r in records if r["job_id"] != job_id] == []
    # Every record has the key, and all that the worker package logged came from inside the job.
    every = [json.loads(line) for line in lines if line.startswith('{"')]
    assert all("job_id" in r for r in every)
    ours = [r for r in every if r["logger"].startswith("worker.")]
    assert ours and [r for r in ours if r["job_id"] != job_id] == []


def _env(home: Path, **urls: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return {**env, "KILN_HOME": str(home), **urls}


@pytest.mark.parametrize(
    "args",
    [("list", "--json"), SUBMIT, ("-vv", "--log-json", "list", "--json"),
     ("-vv", "--log-json", "worker", "--queues", "cpu", "--loglevel", "DEBUG")],
    ids=["list", "submit", "list-debug-logs", "worker-debug-logs"],
)  # fmt: skip
def test_no_command_prints_a_password_when_the_database_is_unreachable(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    env = _env(tmp_path, KILN_DATABASE_URL=BAD_DB, KILN_BROKER_URL=BAD_BROKER)
    out = run_cli(*args, env=env, timeout=120)
    assert SECRET not in out.stdout + out.stderr
    assert out.returncode == UNAVAILABLE, out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines()[-1].startswith(
        "error: unavailable: database postgresql+psycopg://kiln:***@127.0.0.1:5432/nodb"
        " unreachable: "
    )


def test_no_command_prints_a_password_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    env = _env(tmp_path, KILN_BROKER_URL=BAD_BROKER)  # the default SQLite database works
    submitted = run_cli("-vv", "--log-json", *SUBMIT, env=env, timeout=120)
    assert SECRET not in submitted.stdout + submitted.stderr
    assert submitted.returncode == UNAVAILABLE, submitted.stderr
    assert submitted.stderr.splitlines()[-1].startswith(
        "error: unavailable: job not submitted: the broker refused it"
    )
    assert json.loads(run_cli("list", "--json", env=env).stdout) == []  # nothing left behind

    # The worker checks the broker before it starts Celery: a clear error, exit 4, no password.
    worker = run_cli("-vv", "--log-json", "worker", env=env, timeout=120)
    assert SECRET not in worker.stdout + worker.stderr
    assert worker.returncode == UNAVAILABLE, worker.stderr
    assert worker.stderr.splitlines()[-1].startswith(
        "error: broker redis://:***@127.0.0.1:6399/0 unreachable: "
    )
