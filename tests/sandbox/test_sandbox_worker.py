"""The sandbox through a real worker on PostgreSQL + Redis: a model that sleeps forever is
cancelled within 5 s; os._exit, a segfault and a 4 GB allocation fail only their own job; a
model sees no database or broker URL; the next job on that worker succeeds; and a worker
killed with SIGKILL takes its sandbox with it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.client import Client
from tests.conftest import Stack
from tests.fleet.helpers import until
from tests.sandbox.test_sandbox_limits import DATA, FIT, model_file

pytestmark = pytest.mark.parametrize(
    ("db_url", "broker_url"),
    [pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
    ids=["postgres-redis"],
)


@pytest.fixture
def kiln(stack: Stack) -> Iterator[Client]:
    with Client(stack.db_url, stack.broker_url, stack.home) as client:
        yield client


def submit(kiln: Client, tmp_path: Path, body: str = "", top: str = "") -> str:
    return kiln.submit_model(model_file(tmp_path, body, top), DATA, **FIT)


def ended(kiln: Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    until(f"job {job_id} to end", lambda: kiln.job(job_id)["status"] in
          ("succeeded", "failed", "cancelled"), timeout=timeout)  # fmt: skip
    return kiln.job(job_id)


def _processes() -> dict[int, tuple[int, list[bytes]]]:
    """pid -> (parent pid, argv) of every live process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        ppid = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))
        found[int(entry)] = (ppid, argv)
    return found


def sandboxes_of(worker_pid: int) -> list[int]:
    """Pids of the sandboxes a worker's zygote forked (the zygote's last argument is the
    worker's pid)."""
    procs = _processes()
    mine = [b"worker.sandbox.zygote", str(worker_pid).encode()]
    zygotes = {pid for pid, (_, argv) in procs.items() if argv[-4:-1:2] == mine}
    return [pid for pid, (ppid, _) in procs.items() if ppid in zygotes]


def alive(pids: list[int]) -> list[int]:
    procs = _processes()
    return [pid for pid in pids if pid in procs]


@pytest.fixture
def user_code_on(stack: Stack) -> Stack:
    stack.extra["KILN_ALLOW_USER_CODE"] = "true"  # for the workers this test starts
    return stack


def test_hostile_models_fail_only_their_jobs_on_a_real_worker(
    user_code_on, start_worker, tmp_path, kiln
) -> None:
    stack = user_code_on
    worker = start_worker("w1")

    sleeper = submit(kiln, tmp_path, top="import time\ntime.sleep(3600)")
    until("the sleeper to run", lambda: sandboxes_of(worker.proc.pid), timeout=90)
    time.sleep(2)
    asked = time.monotonic()
    kiln.cancel(sleeper)
    until("the sandbox to be gone", lambda: not sandboxes_of(worker.proc.pid), timeout=10)
    job = ended(kiln, sleeper, timeout=10)
    assert job["status"] == "cancelled"
    assert time.monotonic() - asked < 5

    for body, message in [
        ("import os; os._exit(7)", "exited with status 7"),
        ("import ctypes; ctypes.string_at(0)", "segmentation fault"),
        ("big = bytearray(4 * 1024 ** 3)", "KILN_SANDBOX_MEMORY_MB"),
    ]:
        job = ended(kiln, submit(kiln, tmp_path, body))
        assert job["status"] == "failed", (body, job)
        assert message in job["error"], (body, job["error"])
        assert len(job["attempt_log"]) == 1  # the model's fault: not retried

    spy = ended(kiln, submit(kiln, tmp_path, top="import os\nprint(dict(os.environ))"))
    assert spy["status"] == "succeeded", spy["error"]
    assert stack.env["KILN_DATABASE_URL"].split("@")[-1] not in spy["info"]["output"]
    assert "KILN_" not in spy["info"]["output"] and "redis://" not in spy["info"]["output"]
    assert spy["attempt_log"][-1]["worker"] == "w1"  # the same worker, alive after all of it


def test_a_worker_killed_takes_its_sandbox_with_it(
    user_code_on, start_worker, tmp_path, kiln
) -> None:
    worker = start_worker("w1")
    submit(kiln, tmp_path, top="import time\ntime.sleep(3600)")
    sandboxes = until("the sandbox to start", lambda: sandboxes_of(worker.proc.pid), timeout=90)
    worker.kill()
    until("the orphaned sandbox to die", lambda: not alive(sandboxes), timeout=10)
