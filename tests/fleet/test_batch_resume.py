"""A sweep batch whose worker is killed with SIGKILL resumes from its checkpoint on another
worker, like a single fit, and its members end where an uninterrupted batch's members end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import FAST_FLEET, RUGGED, RUGGED_FORMULA, Stack, cli_json, run_cli
from tests.fleet.helpers import job_row, until
from tests.fleet.test_resume import guide_params
from tests.params import FLEET_AND_SLOW_EMBEDDED

STEPS = 2000
EVERY = 250


def submit_sweep(stack: Stack) -> dict[str, Any]:
    done = run_cli("submit", "sweep", "--model", "linreg", "--data", str(RUGGED), "--formula",
                   RUGGED_FORMULA, "--bootstrap", "6", "--steps", str(STEPS), "--lr", "0.01",
                   "--num-samples", "100", "--seed", "21", "--json", env=stack.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sweep: dict[str, Any] = json.loads(done.stdout)
    assert len(sweep["batches"]) == 1, sweep
    return sweep


def wait_for(stack: Stack, sweep_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        shown: dict[str, Any] = cli_json(stack, "sweep", "show", sweep_id, "--json")
        return shown if shown["status"] in ("succeeded", "failed", "cancelled") else None

    shown: dict[str, Any] = until(f"sweep {sweep_id} to end", ended, timeout=240, every=1)
    return shown


def checkpoint_step(stack: Stack, job_id: str) -> int | None:
    from db.models import Checkpoint

    with stack.sessions()() as session:
        saved = session.get(Checkpoint, job_id)
        return None if saved is None else saved.step


def member_losses(stack: Stack, job_id: str) -> list[tuple[int, float]]:
    rows = cli_json(stack, "losses", job_id, "--format", "json")
    return [(row["step"], row["loss"]) for row in rows]


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@FLEET_AND_SLOW_EMBEDDED
def test_a_killed_batch_resumes_from_its_checkpoint_and_matches_an_uninterrupted_batch(
    stack, start_worker
) -> None:
    stack.extra.update(FAST_FLEET, KILN_CHECKPOINT_EVERY=str(EVERY))
    first = start_worker("w1")
    killed = submit_sweep(stack)
    (batch,) = killed["batches"]
    until("a checkpoint at step 500 or later",
          lambda: (checkpoint_step(stack, batch) or 0) >= 2 * EVERY, timeout=180,
          every=0.05)  # fmt: skip
    first.kill()
    at_kill = job_row(stack, batch).step
    assert job_row(stack, batch).status == "running" and at_kill < STEPS

    start_worker("w2")
    done = wait_for(stack, killed["id"])
    assert done["status"] == "succeeded", done
    shown = cli_json(stack, "show", batch, "--json")
    attempts = [(a["worker"], a["outcome"]) for a in shown["attempt_log"]]
    assert attempts == [("w1", "lost"), ("w2", "succeeded")], attempts
    note = shown["info"]["note"]
    resumed_at = int(note.removeprefix("resumed from its checkpoint at step "))
    assert resumed_at % EVERY == 0 and 2 * EVERY <= resumed_at <= at_kill, (note, at_kill)
    assert checkpoint_step(stack, batch) is None  # deleted with the batch's success

    plain = submit_sweep(stack)
    assert wait_for(stack, plain["id"])["status"] == "succeeded"
    # member k of each sweep has the same seed and resample: the resumed batch's members
    # store every step once, and the same losses and guide as the uninterrupted batch's
    pairs = list(zip(killed["members"], plain["members"], strict=True))
    assert len(pairs) == 6
    for resumed_member, plain_member in pairs:
        resumed, uninterrupted = (member_losses(stack, m) for m in (resumed_member, plain_member))
        assert [s for s, _ in resumed] == list(range(STEPS))
        np.testing.assert_allclose([v for _, v in resumed], [v for _, v in uninterrupted],
                                   rtol=1e-6)  # fmt: skip
        ours, theirs = guide_params(stack, resumed_member), guide_params(stack, plain_member)
        assert sorted(ours) == sorted(theirs) and ours
        for name in ours:
            np.testing.assert_allclose(ours[name], theirs[name], atol=1e-6, err_msg=name)
