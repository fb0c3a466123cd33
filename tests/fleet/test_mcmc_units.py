"""An MCMC job's chains run as units of work (jobs of kind `chain`) on a fleet: a unit whose
worker is killed (SIGKILL) in warmup or in sampling resumes from its checkpoint on another
worker and the job ends with every draw once, as an uninterrupted job's; two workers share a
job's units; cancelling the job cancels every unit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import FAST_FLEET, Stack, run_cli
from tests.fleet.helpers import until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS_PY = EXAMPLES / "eight_schools.py"
SCHOOLS_JSON = EXAMPLES / "eight_schools.json"
WARMUP, SAMPLES, CHAINS = 1000, 1000, 4

FLEET = pytest.mark.parametrize(
    ("db_url", "broker_url"),
    [pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis])],
    indirect=True,
    ids=["postgres-redis"],
)


def fleet_with_user_code(stack: Stack, **extra: str) -> None:
    """Short leases, units checkpointing every 20 iterations or 2 s, users' files allowed."""
    stack.extra.update(FAST_FLEET, KILN_ALLOW_USER_CODE="true", KILN_CHECKPOINT_EVERY="100",
                       KILN_CHECKPOINT_EVERY_S="2", **extra)  # fmt: skip


def submit_schools(
    stack: Stack, per_unit: int, warmup: int = WARMUP, samples: int = SAMPLES, seed: int = 3
) -> str:
    done = run_cli("submit", "fit", "--model", f"{SCHOOLS_PY}:model", "--data", str(SCHOOLS_JSON),
                   "--method", "nuts", "--chains", str(CHAINS), "--chains-per-unit",
                   str(per_unit), "--warmup", str(warmup), "--samples", str(samples), "--seed",
                   str(seed), "--json", env=stack.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def show(stack: Stack, job_id: str) -> Any:
    done = run_cli("show", job_id, "--json", env=stack.env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def watch(stack: Stack, job_id: str, timeout: float = 400) -> Any:
    done = run_cli("watch", job_id, "--timeout", str(timeout), "--json", env=stack.env,
                   timeout=timeout + 60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return show(stack, job_id)


def units(stack: Stack, job_id: str) -> list[tuple[str, str, str | None, int | None]]:
    """The job's units: (id, status, worker, step of its checkpoint or None)."""
    from sqlalchemy import select

    from db.models import Checkpoint, Job

    with stack.sessions()() as session:
        rows = session.execute(
            select(Job.id, Job.status, Job.worker, Checkpoint.step)
            .outerjoin(Checkpoint, Checkpoint.job_id == Job.id)
            .where(Job.parent_id == job_id)
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def running_unit_checkpointed(
    stack: Stack, job_id: str, worker: str, low: int, high: int
) -> tuple[str, int] | None:
    """A unit running on `worker` whose checkpoint is at an iteration in [low, high]."""
    for unit_id, status, on, step in units(stack, job_id):
        if status == "running" and on == worker and step is not None and low <= step <= high:
            return unit_id, step
    return None


def draws(stack: Stack, job_id: str) -> dict[str, np.ndarray]:
    """The job's stored posterior draws by site, chain-major, reshaped (chains, draws, ...)."""
    from sqlalchemy import select

    from db.codec import decode_array
    from db.models import Sample

    with stack.sessions()() as session:
        rows = session.scalars(
            select(Sample).where(Sample.job_id == job_id, Sample.kind == "posterior")
        ).all()
        out = {}
        for row in rows:
            assert row.num_samples == CHAINS * SAMPLES, (row.site, row.num_samples)
            values = decode_array(row.draws)
            assert values.shape == (CHAINS * SAMPLES, *row.shape), (row.site, values.shape)
            out[row.site] = values.reshape(CHAINS, SAMPLES, *row.shape)
        return out


def max_r_hat(stack: Stack, job_id: str) -> float:
    done = run_cli("diagnostics", job_id, "--json", env=stack.env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["sites"]
    assert rows
    assert all(row["r_hat"] is not None for row in rows), rows
    return max(float(row["r_hat"]) for row in rows)


@pytest.mark.slow
@pytest.mark.timeout(900)
@FLEET
def test_units_killed_in_warmup_and_in_sampling_resume_and_match_an_uninterrupted_job(
    stack, start_worker
) -> None:
    fleet_with_user_code(stack)
    first = start_worker("wa")
    job_id = submit_schools(stack, 2)

    # kill 1: a unit in warmup (its checkpoint between iterations 100 and 700)
    warm = until("a unit checkpointed in warmup", lambda: running_unit_checkpointed(
        stack, job_id, "wa", 100, 700), timeout=180, every=0.05)  # fmt: skip
    first.kill()
    second = start_worker("wb")

    # kill 2: a unit in sampling (its checkpoint between iterations 1100 and 1800)
    sampling = until("a unit checkpointed in sampling", lambda: running_unit_checkpointed(
        stack, job_id, "wb", WARMUP + 100, WARMUP + 800), timeout=300, every=0.05)  # fmt: skip
    second.kill()
    start_worker("wc")
    start_worker("wd")
    # the same job again, never interrupted, beside it
    plain = submit_schools(stack, 2)
    shown = watch(stack, job_id)
    print(f"\nkilled wa with unit {warm[0]} at checkpoint {warm[1]},"
          f" wb with unit {sampling[0]} at checkpoint {sampling[1]}")  # fmt: skip
    assert shown["status"] == "succeeded", shown.get("error")
    records = {u["id"]: u for u in shown["info"]["units"]}
    for record in records.values():
        print("unit", record)
    assert sorted((u["first"], u["count"], u["status"]) for u in records.values()) == [
        (0, 2, "succeeded"), (2, 2, "succeeded")]  # fmt: skip
    # each killed unit resumed where its last checkpoint was (or later, had one come between
    # the check and the kill), never from iteration 0
    warm_resumes = records[warm[0]]["resumed_at"]
    assert warm_resumes and warm[1] <= warm_resumes[0] <= WARMUP, records[warm[0]]
    sampling_resumes = records[sampling[0]]["resumed_at"]
    assert sampling_resumes and sampling[1] <= sampling_resumes[-1] <= WARMUP + SAMPLES
    assert all(r > 0 for u in records.values() for r in u["resumed_at"])
    assert records[warm[0]]["attempts"] >= 2 and records[sampling[0]]["attempts"] >= 2

    killed = draws(stack, job_id)
    assert {"mu", "tau", "theta_tilde"} <= set(killed)
    assert killed["theta_tilde"].shape == (CHAINS, SAMPLES, 8)
    assert max_r_hat(stack, job_id) < 1.01

    # the uninterrupted job's draws: the same, each once, in the same order (a resumed chain
    # goes on from its checkpoint's state, random generator included)
    again = watch(stack, plain)
    assert again["status"] == "succeeded", again.get("error")
    assert all(u["resumed_at"] == [] and u["attempts"] == 1 for u in again["info"]["units"])
    uninterrupted = draws(stack, plain)
    assert sorted(killed) == sorted(uninterrupted)
    for site in killed:
        np.testing.assert_array_equal(killed[site], uninterrupted[site], err_msg=site)


@pytest.mark.slow
@pytest.mark.timeout(900)
@FLEET
def test_two_workers_share_a_jobs_units(stack, start_worker) -> None:
    fleet_with_user_code(stack)
    start_worker("w1")
    started = time.monotonic()
    alone = submit_schools(stack, 1, warmup=500, samples=500)
    shown = watch(stack, alone)
    one_worker = time.monotonic() - started
    assert shown["status"] == "succeeded"
    assert {u["worker"] for u in shown["info"]["units"]} == {"w1"}

    start_worker("w2")
    started = time.monotonic()
    shared = submit_schools(stack, 1, warmup=500, samples=500)
    shown = watch(stack, shared)
    two_workers = time.monotonic() - started
    assert shown["status"] == "succeeded", shown.get("error")
    assert sorted(u["first"] for u in shown["info"]["units"]) == list(range(CHAINS))
    assert {u["worker"] for u in shown["info"]["units"]} == {"w1", "w2"}, shown["info"]["units"]
    assert max_r_hat(stack, shared) < 1.05
    print(f"\n4 units of eight schools: {one_worker:.1f} s on one worker,"
          f" {two_workers:.1f} s on two")  # fmt: skip


@pytest.mark.slow
@FLEET
def test_cancelling_a_job_cancels_all_its_units(stack, start_worker) -> None:
    fleet_with_user_code(stack)
    start_worker("w1")
    start_worker("w2")
    job_id = submit_schools(stack, 1, warmup=5000)

    def sampling_on_both_workers() -> list[tuple[str, str]]:
        running = [u for u in units(stack, job_id) if u[1] == "running" and u[3]]
        on = [(u[0], str(u[2])) for u in running]
        return on if {w for _, w in on} == {"w1", "w2"} else []

    # two units mid-chain (each has checkpointed), two still queued
    running = until("units sampling on both workers", sampling_on_both_workers, timeout=180)
    started = time.monotonic()
    done = run_cli("cancel", job_id, env=stack.env)
    assert done.returncode == 0, done.stderr

    def all_cancelled() -> bool:
        return {u[1] for u in units(stack, job_id)} == {"cancelled"}

    returned = time.monotonic()
    until("every unit cancelled", all_cancelled, timeout=30, every=0.2)
    print(f"\n{len(running)} running units; all cancelled {time.monotonic() - started:.1f} s"
          f" after `kiln cancel` started ({time.monotonic() - returned:.1f} s after it"
          " returned)")  # fmt: skip
    assert show(stack, job_id)["status"] == "cancelled"
    assert len(units(stack, job_id)) == CHAINS
    # the running units were stopped by their workers: their attempts ended cancelled
    from sqlalchemy import select

    from db.models import Attempt, Job

    with stack.sessions()() as session:
        attempts = session.execute(
            select(Attempt.job_id, Attempt.worker, Attempt.outcome, Attempt.ended_at)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.parent_id == job_id)
        ).all()
    assert sorted((a[0], a[1], a[2]) for a in attempts) == sorted(
        (unit_id, worker, "cancelled") for unit_id, worker in running
    ), attempts
    assert all(a[3] is not None for a in attempts)
