"""A mini-batched library fit whose worker is SIGKILLed resumes from its checkpoint on another
worker: the same batches are replayed, each epoch's metric is stored once, and the final
parameters equal an uninterrupted fit's with the same seed."""

from __future__ import annotations

import json
from typing import cast

import numpy as np
import pytest

from tests.conftest import FAST_FLEET, Stack, run_cli
from tests.fleet.helpers import job_row, until
from tests.fleet.test_resume import guide_params
from tests.library.test_forecast_hmm_jobs import EMBEDDED, ETH


def submit(stack: Stack) -> str:
    done = run_cli("submit", "fit", "--model", "forecast-linreg", "--data", str(ETH), "--seed",
                   "5", "--set", "epochs=300", "--checkpoint-every", "200", "--json",
                   env=stack.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return cast(str, json.loads(done.stdout)["id"])


@pytest.mark.slow
@EMBEDDED
def test_a_killed_library_fit_resumes_with_the_same_batches(stack, start_worker) -> None:
    stack.extra.update(FAST_FLEET)
    first = start_worker("w1")
    killed = submit(stack)
    until("step 1500", lambda: job_row(stack, killed).step >= 1500, timeout=120, every=0.05)
    first.kill()
    start_worker("w2")
    assert run_cli("watch", killed, "--timeout", "180", env=stack.env).returncode == 0
    shown = json.loads(run_cli("show", killed, "--json", env=stack.env).stdout)
    assert [a["outcome"] for a in shown["attempt_log"]] == ["lost", "succeeded"]
    assert shown["info"]["resumed_from_step"] % 200 == 0

    plain = submit(stack)
    assert run_cli("watch", plain, "--timeout", "180", env=stack.env).returncode == 0
    metrics = {}
    for job_id in (killed, plain):
        out = run_cli("metrics", job_id, "--name", "train_elbo", "--format", "json",
                      env=stack.env).stdout  # fmt: skip
        metrics[job_id] = [(r["epoch"], r["value"]) for r in json.loads(out)]
    assert [e for e, _ in metrics[killed]] == list(range(1, 301))  # each epoch once
    np.testing.assert_allclose([v for _, v in metrics[killed]], [v for _, v in metrics[plain]],
                               rtol=1e-5)  # fmt: skip
    resumed, uninterrupted = guide_params(stack, killed), guide_params(stack, plain)
    assert sorted(resumed) == sorted(uninterrupted) and resumed
    for name in resumed:
        np.testing.assert_allclose(resumed[name], uninterrupted[name], atol=1e-5, err_msg=name)
