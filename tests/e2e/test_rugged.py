"""Submit -> real worker process -> results, on shared/data: embedded defaults and a fleet."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import torch

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, cli_json, run_cli
from tests.params import DIRECT_AND_API, EMBEDDED_AND_FLEET, FLEET_AND_SLOW_EMBEDDED_AND_API

# Worker-process tests run on the embedded defaults and a fleet (PostgreSQL + Redis); the mixed
# pairs are covered by the in-process submission tests (tests/scheduler/test_bad_input.py).
# A user's scenarios run through the HTTP API too (`via`), with the same results.

TUTORIAL = {"Intercept": 9.17, "cont_africa": -1.85, "rugged": -0.19, "cont_africa:rugged": 0.36}


def submit_rugged(stack: Stack, *extra: str, wait: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["submit", "fit", "--model", "linreg", "--data", str(RUGGED),
            "--formula", RUGGED_FORMULA, "--json", *extra]  # fmt: skip
    if wait:
        args += ["--wait", "--timeout", "240"]
    return run_cli(*args, env=stack.user_env)


@DIRECT_AND_API
@pytest.mark.parametrize(
    "guide", ["AutoNormal", pytest.param("AutoMultivariateNormal", marks=pytest.mark.slow)]
)
def test_rugged_fit_through_a_worker_matches_the_tutorial(stack, via, start_worker, guide) -> None:
    start_worker("w1")
    done = submit_rugged(stack, "--guide", guide, "--steps", "1000", "--lr", "0.02", "--seed", "0")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert job["progress"] == {"step": 1000, "total": 1000}
    assert job["info"]["data"] == {
        "rows_used": 170, "rows_dropped": 64, "response": "log(rgdppc_2000)",
        "terms": ["Intercept", "cont_africa", "rugged", "cont_africa:rugged"],
    }  # fmt: skip
    assert job["info"]["elbo"] == "JitTrace_ELBO"
    assert [a["outcome"] for a in job["attempt_log"]] == ["succeeded"]

    params = cli_json(stack, "params", job["id"], "--format", "json")
    means = {row["site"]: row["mean"] for row in params}
    assert set(means) == {*TUTORIAL, "sigma"}
    for site, published in TUTORIAL.items():
        assert abs(means[site] - published) < 0.1, (site, means[site])
    for row in params:
        assert row["q05"] < row["q50"] < row["q95"] and row["sd"] > 0 and row["shape"] == []

    losses = cli_json(stack, "losses", job["id"], "--format", "json")
    assert [row["step"] for row in losses] == list(range(1000))
    tail = [row["loss"] for row in losses[-100:]]
    assert abs(sum(tail) / 100 - 248) < 5

    csv_out = run_cli("losses", job["id"], "--format", "csv", env=stack.user_env)
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "step,loss" and len(lines) == 1001


@EMBEDDED_AND_FLEET
def test_losses_are_queryable_with_plain_sql(stack, start_worker) -> None:
    from sqlalchemy import text

    start_worker("w1")
    job = json.loads(submit_rugged(stack, "--steps", "50", "--seed", "3").stdout)
    with stack.sessions()() as session:
        rows = session.execute(
            text("SELECT step, loss FROM losses WHERE job_id = :id ORDER BY step"),
            {"id": job["id"]},
        ).all()
        stored = session.execute(
            text("SELECT site, mean FROM params WHERE job_id = :id"), {"id": job["id"]}
        ).all()
    assert [r.step for r in rows] == list(range(50))
    assert {r.site for r in stored} == {*TUTORIAL, "sigma"}


@EMBEDDED_AND_FLEET
def test_same_seed_gives_the_same_fit(stack, start_worker) -> None:
    start_worker("w1")
    first = json.loads(submit_rugged(stack, "--steps", "100", "--seed", "7").stdout)
    second = json.loads(submit_rugged(stack, "--steps", "100", "--seed", "7").stdout)

    def get(job: dict[str, Any]) -> str:
        return run_cli("losses", job["id"], "--format", "json", env=stack.env).stdout

    a, b = json.loads(get(first)), json.loads(get(second))
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(100))
    # Equal up to float noise: TorchScript optimises a traced ELBO differently on later runs.
    torch.testing.assert_close([r["loss"] for r in a], [r["loss"] for r in b], rtol=1e-4, atol=0)


@EMBEDDED_AND_FLEET
def test_nan_loss_fails_the_job_once_with_a_message(stack, start_worker) -> None:
    start_worker("w1")
    done = submit_rugged(stack, "--steps", "300", "--lr", "1e9", "--seed", "0",
                         "--prior", "sigma=uniform(0,1e-3)")  # fmt: skip
    assert done.returncode == 1
    job = json.loads(done.stdout)
    assert job["status"] == "failed"
    assert "step" in job["error"] and ("nan" in job["error"].lower() or "raised" in job["error"])
    assert job["attempts"] == 1


@EMBEDDED_AND_FLEET
def test_wait_without_a_worker_says_so_and_times_out(stack) -> None:
    started = time.monotonic()
    done = submit_rugged(stack, "--steps", "10", wait=False)
    job = json.loads(done.stdout)
    waited = run_cli("watch", job["id"], "--timeout", "6", env=stack.env)
    assert waited.returncode == 4
    assert "no live worker serves queue `cpu`" in waited.stderr
    assert "gave up waiting" in waited.stderr
    assert time.monotonic() - started < 60


@FLEET_AND_SLOW_EMBEDDED_AND_API
def test_cancel_stops_a_running_fit_within_seconds(stack, via, start_worker) -> None:
    from db.models import Job

    stack.extra["KILN_FLUSH_EVERY_S"] = "1.0"  # the default: the cancel check rides on it
    start_worker("w1")
    job = json.loads(submit_rugged(stack, "--steps", "200000", "--seed", "1", wait=False).stdout)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = cli_json(stack, "show", job["id"], "--json")
        if shown["status"] == "running" and shown["progress"]["step"] > 0:
            break
        time.sleep(0.3)
    assert run_cli("cancel", job["id"], env=stack.user_env).returncode == 0
    asked = time.monotonic()
    status = None
    while time.monotonic() - asked < 15 and status != "cancelled":
        with stack.sessions()() as session:
            status = session.get(Job, job["id"]).status
        time.sleep(0.05)
    latency = time.monotonic() - asked
    print(f"\ncancel: status cancelled {latency:.2f} s after `jobs cancel` returned")
    assert status == "cancelled"
    assert latency < 5
    kept = cli_json(stack, "losses", job["id"], "--format", "json")
    assert len(kept) > 0  # what it had done is kept


@EMBEDDED_AND_FLEET
def test_cancelled_queued_job_never_starts(stack, start_worker) -> None:
    job = json.loads(submit_rugged(stack, "--steps", "10", wait=False).stdout)
    out = json.loads(run_cli("cancel", job["id"], "--json", env=stack.env).stdout)
    assert out["status"] == "cancelled"
    start_worker("w1")  # the message is still in the broker; the claim must refuse it
    later = json.loads(submit_rugged(stack, "--steps", "10").stdout)
    assert later["status"] == "succeeded"
    shown = json.loads(run_cli("show", job["id"], "--json", env=stack.env).stdout)
    assert shown["status"] == "cancelled" and shown["attempts"] == 0
