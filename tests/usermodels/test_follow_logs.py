"""`kiln logs ID --follow` through a real worker: a user's model that prints every step shows
its lines while the job runs, and the command exits with the job's outcome when it ends."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from kiln.client import Client
from tests.conftest import Stack, stop_process
from tests.params import FLEET_AND_SLOW_EMBEDDED

MODEL = """
import time
import pyro
import pyro.distributions as dist

CALLS = [0]

def model(y):
    CALLS[0] += 1
    print(f"step line {CALLS[0]}", flush=True)
    time.sleep(0.1)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)
"""


@FLEET_AND_SLOW_EMBEDDED
def test_follow_prints_a_running_models_lines_before_it_ends_and_exits_with_its_outcome(
    stack: Stack, start_worker, tmp_path: Path
) -> None:
    stack.extra["KILN_ALLOW_USER_CODE"] = "true"
    start_worker("w1", "cpu.user")
    model = tmp_path / "printing.py"
    model.write_text(MODEL)
    with Client(stack.db_url, stack.broker_url, stack.home) as kiln:
        job_id = kiln.submit_model(model, {"y": [0.1, -0.2, 0.3]}, steps=60, num_samples=5,
                                   seed=1)  # fmt: skip
        follow = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", "logs", job_id, "--follow"], env=stack.user_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen: list[str] = []
        status_at_first_line: list[str] = []

        def read() -> None:
            assert follow.stdout is not None
            for line in follow.stdout:
                seen.append(line.rstrip("\n"))
                if line.startswith("step line") and not status_at_first_line:
                    status_at_first_line.append(kiln.job(job_id)["status"])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            code = follow.wait(timeout=300)
        finally:
            stop_process(follow, timeout=5)
        reader.join(timeout=10)
        errors = follow.stderr.read() if follow.stderr else ""
        for pipe in (follow.stdout, follow.stderr):
            if pipe is not None:
                pipe.close()
        assert code == 0, (errors, seen)
        assert status_at_first_line == ["running"], seen
        assert kiln.job(job_id)["status"] == "succeeded"
        steps = [line for line in seen if line.startswith("step line")]
        assert len(steps) >= 60
        assert any(f"job {job_id}: succeeded in" in line for line in seen)
        # afterwards, `kiln logs` prints the same lines (the attempts go to stderr)
        after = subprocess.run(
            [sys.executable, "-m", "kiln.cli", "logs", job_id],
            env=stack.user_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert after.returncode == 0 and after.stdout.splitlines() == seen
        assert "attempt 1 on w1" in after.stderr
