"""A fit whose worker is killed with SIGKILL resumes from its checkpoint on another worker and
ends where an uninterrupted fit with the same seed ends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FAST_FLEET, Stack, run_cli
from tests.fleet.helpers import job_row, submit_fit, until
from tests.params import FLEET_AND_SLOW_EMBEDDED


def guide_params(stack: Stack, job_id: str) -> dict[str, np.ndarray]:
    from sqlalchemy import select

    from db.codec import decode_array
    from db.models import GuideParam

    with stack.sessions()() as session:
        rows = session.scalars(select(GuideParam).where(GuideParam.job_id == job_id)).all()
        return {row.name: decode_array(row.value) for row in rows}


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@FLEET_AND_SLOW_EMBEDDED
def test_killed_fit_resumes_from_its_checkpoint_and_matches_an_uninterrupted_fit(
    stack, start_worker
) -> None:
    stack.extra.update(FAST_FLEET)
    first = start_worker("w1")
    fit = ["--steps", "3000", "--seed", "11", "--checkpoint-every", "250"]
    killed = submit_fit(stack, *fit)
    until("step 1500", lambda: job_row(stack, killed).step >= 1500, timeout=120, every=0.05)
    first.kill()
    at_kill = job_row(stack, killed).step
    assert job_row(stack, killed).status == "running"

    start_worker("w2")
    done = run_cli("watch", killed, "--timeout", "180", env=stack.env)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(run_cli("show", killed, "--json", env=stack.env).stdout)
    assert shown["status"] == "succeeded"
    attempts = [(a["worker"], a["outcome"]) for a in shown["attempt_log"]]
    assert attempts == [("w1", "lost"), ("w2", "succeeded")], attempts
    resumed_at = shown["info"]["resumed_from_step"]
    assert resumed_at % 250 == 0 and 1250 <= resumed_at <= at_kill, (resumed_at, at_kill)

    plain = submit_fit(stack, *fit)
    assert run_cli("watch", plain, "--timeout", "180", env=stack.env).returncode == 0

    # every step's loss once, and the replayed steps equal the uninterrupted run's
    losses = {}
    for job_id in (killed, plain):
        out = run_cli("losses", job_id, "--format", "json", env=stack.env).stdout
        losses[job_id] = [(row["step"], row["loss"]) for row in json.loads(out)]
    assert [s for s, _ in losses[killed]] == list(range(3000))
    np.testing.assert_allclose([v for _, v in losses[killed]], [v for _, v in losses[plain]],
                               rtol=1e-5)  # fmt: skip

    resumed, uninterrupted = guide_params(stack, killed), guide_params(stack, plain)
    assert sorted(resumed) == sorted(uninterrupted) and resumed
    for name in resumed:
        np.testing.assert_allclose(resumed[name], uninterrupted[name], atol=1e-5, err_msg=name)
