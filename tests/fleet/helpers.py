"""Helpers for fleet tests: poll the database, read jobs and their attempts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, run_cli

if TYPE_CHECKING:
    from db.models import Job


def until(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def submit_fit(stack: Stack, *extra: str) -> str:
    done = run_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
                   RUGGED_FORMULA, "--json", *extra, env=stack.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return cast(str, json.loads(done.stdout)["id"])


def job_row(stack: Stack, job_id: str) -> Job:
    from db.models import Job

    with stack.sessions()() as session:
        job = session.get(Job, job_id)
        assert job is not None, job_id
        session.expunge(job)
        return job
