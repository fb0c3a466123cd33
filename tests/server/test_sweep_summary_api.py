"""`jobs sweep show --by` over the HTTP API prints exactly what it prints directly, including
its refusal of an unknown key; another user's sweep is not found."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.conftest import RUGGED, RUGGED_FORMULA, run_in_process
from tests.server.conftest import Api, same_cli


def test_a_sweeps_summary_by_settings_reads_the_same_over_the_api(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    alice = api.remote_env("alice", tmp_path / "alice")
    done = jobs_cli("submit", "sweep", "--model", "linreg", "--data", str(RUGGED),
                    "--formula", RUGGED_FORMULA, "--grid", "lr=0.01,0.02", "--seeds", "2",
                    "--steps", "30", "--num-samples", "20", "--json", env=alice)  # fmt: skip
    assert done.exit_code == 0, done.output
    sweep = json.loads(done.stdout)
    for job_id in sweep["batches"]:
        assert run_in_process(api.stack, job_id) == "succeeded"
    for args in (["--by", "lr", "--json"], ["--by", "lr,seed"], ["--by", "lr", "--format", "csv"]):
        over_api = same_cli(api, jobs_cli, alice, "sweep", "show", sweep["id"], *args)
        assert over_api.exit_code == 0, over_api.output
    doc = json.loads(jobs_cli("sweep", "show", sweep["id"], "--by", "lr", "--json",
                              env=alice).stdout)  # fmt: skip
    assert [(g["lr"], g["members"], g["succeeded"]) for g in doc["groups"]] == [
        (0.01, 2, 2), (0.02, 2, 2)]  # fmt: skip
    refused = same_cli(api, jobs_cli, alice, "sweep", "show", sweep["id"], "--by", "lrr")
    assert refused.exit_code == 2 and "did you mean `lr`?" in refused.stderr
    bob = api.remote_env("bob", tmp_path / "bob")
    hidden = jobs_cli("sweep", "show", sweep["id"], "--by", "lr", env=bob)
    assert hidden.exit_code == 3, hidden.output
