"""Continuing a fit (`--continue ID --steps N`): the new job starts from its parent's stored
state (fitted state or checkpoint), its losses carry on the parent's step numbers, and what
cannot be continued is refused with nothing written. Jobs run in process (execute_job)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.jobs import request_cancel
from db.models import Checkpoint, Job
from kiln.client import Client
from kiln.errors import NotFound, SpecError
from tests.conftest import Stack, cli_json, offline_client, run_cli, run_in_process
from tests.params import FLEET_AND_SLOW_EMBEDDED

pytestmark = FLEET_AND_SLOW_EMBEDDED

RUGGED = Path("/work/shared/data/rugged_data.csv")
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS_PY = EXAMPLES / "eight_schools.py"
SCHOOLS = json.loads((EXAMPLES / "eight_schools.json").read_text())
# Prior-median start and a fast lr: the loss falls a long way in 60 steps, so a continuation
# that started over would show it.
LINREG: dict[str, Any] = {"steps": 60, "lr": 0.1, "init": "median", "seed": 1, "elbo": "Trace_ELBO"}


def run(stack: Stack, job_id: str) -> dict[str, Any]:
    status = run_in_process(stack, job_id)
    job = offline_client(stack).job(job_id)
    assert status == "succeeded", job["error"]
    return job


def steps_of(kiln: Client, job_id: str) -> list[int]:
    return [step for step, _ in kiln.loss_rows(job_id)]


def losses_of(kiln: Client, job_id: str) -> list[float]:
    return [loss for _, loss in kiln.loss_rows(job_id)]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_a_succeeded_linreg_fit_continued_carries_on_its_steps_and_its_loss(
    stack: Stack,
) -> None:
    kiln = offline_client(stack)
    parent = kiln.submit_fit(RUGGED, FORMULA, **LINREG)
    run(stack, parent)
    child = kiln.continue_fit(parent[:8], 40, lr=0.05)
    with stack.sessions()() as session:
        queued = session.get(Job, child)
        assert queued is not None and queued.continued_from == parent
        assert (queued.step, queued.total_steps) == (60, 100)
    job = run(stack, child)
    assert steps_of(kiln, child) == list(range(60, 100))
    assert job["spec"]["kind"] == "linreg_fit" and job["spec"]["lr"] == 0.05
    assert job["spec"]["formula"] == FORMULA and job["spec"]["seed"] == 1
    assert job["info"]["continued_from"] == parent and job["info"]["continued_at"] == 60
    assert "resumed_from_step" not in job["info"]
    before, after = losses_of(kiln, parent), losses_of(kiln, child)
    # the seam: the child starts where the parent ended, far below where the parent began
    assert abs(mean(after[:5]) - mean(before[-5:])) < 0.25 * (before[0] - mean(before[-5:]))
    assert job["info"]["final_loss"] == pytest.approx(mean(after), rel=1e-9)


def test_a_cancelled_fit_continues_from_its_last_checkpoint_and_the_lineage_is_one_curve(
    stack: Stack,
) -> None:
    kiln = offline_client(stack)
    parent = kiln.submit_fit(RUGGED, FORMULA, **{**LINREG, "steps": 200_000},
                             checkpoint_every=20)  # fmt: skip
    outcome: dict[str, str] = {}
    runner = threading.Thread(target=lambda: outcome.update(s=run_in_process(stack, parent)))
    runner.start()
    sessions = stack.sessions()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as session:
            saved = session.scalar(select(Checkpoint.step).where(Checkpoint.job_id == parent))
            if saved is not None and saved >= 40:
                request_cancel(session, parent)
                break
        time.sleep(0.05)
    runner.join(120)
    assert outcome["s"] == "cancelled"
    with sessions() as session:
        at = session.scalar(select(Checkpoint.step).where(Checkpoint.job_id == parent))
    assert at is not None and at % 20 == 0
    child = kiln.continue_fit(parent, 30)
    run(stack, child)
    assert steps_of(kiln, child) == list(range(at, at + 30))
    rows = cli_json(stack, "losses", child, "--lineage", "--format", "json")
    assert [r["step"] for r in rows] == list(range(at + 30))
    shown = run_cli("show", child, env=stack.env)
    assert f"continued  from {parent} at step {at}" in shown.stdout, shown.stderr


def test_a_continued_fit_retried_resumes_from_its_own_checkpoint_not_its_parents(
    stack: Stack,
) -> None:
    from inference.checkpoint import continuation

    kiln = offline_client(stack)
    parent = kiln.submit_fit(RUGGED, FORMULA, **LINREG)
    run(stack, parent)
    child = kiln.continue_fit(parent, 40)
    with stack.sessions()() as session:
        # what an earlier attempt of the child would have left: a checkpoint at step 80
        state = kiln_state(session, parent)
        own = continuation(state, step=80, lr=None, keep_rng=False)
        session.add(Checkpoint(job_id=child, step=80, format="kiln-svi-checkpoint/npz-json/v2",
                               content=own))  # fmt: skip
        session.commit()
    job = run(stack, child)
    assert steps_of(kiln, child) == list(range(80, 100))
    assert job["info"]["resumed_from_step"] == 80


def kiln_state(session: Any, job_id: str) -> bytes:
    from db.results import get_fitted_state

    state = get_fitted_state(session, job_id)
    assert state is not None
    return bytes(state.content)


@pytest.mark.slow  # two sandboxed fits: about 20 s
def test_a_user_svi_fit_is_continued_in_the_sandbox(stack: Stack) -> None:
    kiln = offline_client(stack)
    parent = kiln.submit_model(SCHOOLS_PY, SCHOOLS, method="svi", steps=60, lr=0.05, seed=2)
    run(stack, parent)
    child = kiln.continue_fit(parent, 40)
    job = run(stack, child)
    assert job["spec"]["kind"] == "user_svi_fit" and job["spec"]["steps"] == 100
    assert steps_of(kiln, child) == list(range(60, 100))
    before, after = losses_of(kiln, parent), losses_of(kiln, child)
    assert mean(after[:10]) < before[0]


def test_a_library_svi_fit_is_continued_with_its_batches_by_step(stack: Stack) -> None:
    kiln = offline_client(stack)
    parent = kiln.submit_library("bnn-classifier", "digits", ["epochs=1", "hidden=8"], seed=4)
    run(stack, parent)
    done = len(steps_of(kiln, parent))
    child = kiln.continue_fit(parent, 10, lr=0.005)
    job = run(stack, child)
    assert steps_of(kiln, child) == list(range(done, done + 10))
    assert job["spec"]["options"]["lr"] == 0.005 and job["spec"]["seed"] == 4
    with pytest.raises(SpecError, match="split"):
        kiln.continue_fit(parent, 10, seed=5)


def count_jobs(stack: Stack) -> int:
    with stack.sessions()() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_what_cannot_be_continued_is_refused_and_nothing_is_written(stack: Stack) -> None:
    from kiln.continuation import parse_continue_spec
    from scheduler.kinds.base import CheckContext, Upload
    from scheduler.kinds.continuation import check_continuation
    from scheduler.limits import Limits

    kiln = offline_client(stack)
    queued = kiln.submit_fit(RUGGED, FORMULA, **LINREG)
    mcmc = kiln.submit_model(SCHOOLS_PY, SCHOOLS, method="nuts", chains=1, warmup=5, samples=5)
    predict = kiln.predict(queued, num_samples=10)
    cancelled_early = kiln.submit_fit(RUGGED, FORMULA, **LINREG)
    with stack.sessions()() as session:
        request_cancel(session, cancelled_early)
    jobs = count_jobs(stack)
    refusals = [
        (queued, {}, "is queued"),
        (mcmc, {}, "user_mcmc_fit job"),
        (predict, {}, "predict job"),
        (cancelled_early, {}, "before its first checkpoint"),
        (queued, {"formula": "y ~ x"}, "--formula: a continued fit keeps"),
        (queued, {"data": "x.csv"}, "--data: a continued fit keeps"),
    ]
    for job_id, extra, message in refusals:
        with pytest.raises(SpecError, match=message):
            kiln.continue_fit(job_id, 10, **extra)
    with pytest.raises(SpecError, match="spec.continued"):
        kiln.submit_fit(RUGGED, FORMULA, continued={"job": queued, "step": 1, "steps": 1})
    # over the HTTP API a check is owner-scoped: another user's fit is not found
    request = parse_continue_spec({"from_job": queued, "steps": 5})
    context = CheckContext(stack.sessions(), Limits.from_settings(stack.settings()), "mallory")
    with pytest.raises(NotFound):
        check_continuation(request, Upload(), context)
    assert count_jobs(stack) == jobs
