"""`jobs` over the HTTP API (KILN_API_URL + KILN_TOKEN): the same output, --json documents and
exit codes as directly, with no database or broker URL."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.conftest import RUGGED, RUGGED_FORMULA, run_cli, run_in_process
from tests.server.conftest import Api, same_cli

ROOT = Path(__file__).resolve().parents[2]


def test_a_linreg_fit_through_the_api_reads_back_as_it_does_directly(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    remote = api.remote_env("alice", tmp_path / "laptop")
    submitted = jobs_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED),
                         "--formula", RUGGED_FORMULA, "--steps", "300", "--seed", "0",
                         "--json", env=remote)  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["id"]
    assert run_in_process(api.stack, job_id) == "succeeded"
    for args in (["list", "--json"], ["show", job_id, "--json"], ["show", job_id[:8]],
                 ["losses", job_id, "--format", "json"], ["params", job_id, "--format", "csv"],
                 ["params", job_id], ["watch", job_id, "--json"]):  # fmt: skip
        assert same_cli(api, jobs_cli, remote, *args).exit_code == 0
    assert not (tmp_path / "laptop" / "kiln.db").exists()  # the laptop opened no database
    with api.stack.sessions()() as session:
        from db.jobs import get_job

        assert get_job(session, job_id).owner == "alice"
    tail = api.http("alice").get(f"/jobs/{job_id}/losses", params={"tail": 3, "every": 100})
    assert [step for step, _ in tail.json()["rows"]] == [0, 100, 200]
    tail = api.http("alice").get(f"/jobs/{job_id}/losses", params={"tail": 2})
    assert [step for step, _ in tail.json()["rows"]] == [298, 299]


def test_a_model_file_and_a_predict_go_through_the_api_and_cancel_works(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    remote = api.remote_env("bob", tmp_path / "laptop")
    examples = ROOT / "examples"
    fit = jobs_cli(
        "submit",
        "fit",
        "--model",
        str(examples / "eight_schools.py"),
        "--data",
        str(examples / "eight_schools.json"),
        "--steps",
        "20",
        "--json",
        env=remote,
    )
    assert fit.exit_code == 0, fit.output
    fit_id = json.loads(fit.stdout)["id"]
    predict = jobs_cli("submit", "predict", "--from", fit_id, "--samples", "10", "--json",
                       env=remote)  # fmt: skip
    assert predict.exit_code == 0, predict.output
    doc = json.loads(predict.stdout)
    assert (doc["kind"], doc["status"], doc["depends_on"]) == ("predict", "waiting", fit_id)
    shown = json.loads(jobs_cli("show", fit_id, "--json", env=remote).stdout)
    assert shown["spec"]["kind"] == "user_svi_fit"
    assert shown["spec"]["model"] == "eight_schools.py:model"
    cancelled = jobs_cli("cancel", fit_id, "--json", env=remote)
    assert json.loads(cancelled.stdout) == {"id": fit_id, "status": "cancelled",
                                            "cancel_requested": True}  # fmt: skip
    # alice may not see bob's job: exit 3, as for a job that does not exist
    hidden = jobs_cli("show", fit_id, env=api.remote_env("alice", tmp_path / "alice"))
    assert (hidden.exit_code, hidden.stderr.strip()) == (3, f"error: job {fit_id} not found")


def test_refusals_over_the_api_exit_5_and_an_unreachable_server_4(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    reader = api.remote_env("reader", tmp_path / "r")
    refused = jobs_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED),
                       "--formula", RUGGED_FORMULA, env=reader)  # fmt: skip
    assert refused.exit_code == 5
    assert refused.stderr.startswith("error: not allowed: role `read` may only read")
    bad = jobs_cli("list", env={**reader, "KILN_TOKEN": "kiln_000000000000_nope"})
    assert (bad.exit_code, bad.stderr.strip()) == (5, "error: not allowed: the token is not valid")
    down = jobs_cli("list", env={**reader, "KILN_API_URL": "http://127.0.0.1:9"})
    assert down.exit_code == 4 and "unreachable" in down.stderr


def test_jobs_needs_nothing_but_the_api_url_and_a_token(api: Api, tmp_path: Path) -> None:
    """A separate process whose environment holds no database or broker setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update({k: v for k, v in api.remote_env("admin", tmp_path / "h").items() if v})
    done = run_cli("list", "--json", env=env, timeout=60)
    assert (done.returncode, json.loads(done.stdout)) == (0, []), done.stderr
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").iterdir())
