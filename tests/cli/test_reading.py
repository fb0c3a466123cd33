"""Reading results from the CLI: thinned losses, a missing metric, a sweep's id where a job's
goes, and an export whose file name and format disagree."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET

pytestmark = EMBEDDED_AND_FLEET


def jobs(stack: Stack, *args: str) -> Result:
    from kiln.cli import get_cli

    env = {"KILN_HOME": str(stack.home), "KILN_DATABASE_URL": stack.db_url}
    return CliRunner().invoke(get_cli(), list(args), env=env)


def fitted(stack: Stack, steps: int = 100) -> str:
    client = offline_client(stack)
    job_id = client.submit_fit(RUGGED, RUGGED_FORMULA, steps=steps, seed=0, num_samples=50)
    assert run_in_process(stack, job_id) == "succeeded"
    return job_id


def test_losses_thinned_and_the_tail(stack: Stack) -> None:
    job_id = fitted(stack)
    done = jobs(stack, "losses", job_id, "--every", "25", "--format", "json")
    assert [r["step"] for r in json.loads(done.stdout)] == [0, 25, 50, 75]
    done = jobs(stack, "losses", job_id, "--tail", "2", "--every", "10", "--format", "json")
    assert [r["step"] for r in json.loads(done.stdout)] == [80, 90]
    assert jobs(stack, "losses", job_id, "--tail", "0").exit_code == 2
    every = json.loads(jobs(stack, "losses", job_id, "--format", "json").stdout)
    shown = json.loads(jobs(stack, "show", job_id, "--json").stdout)
    tail = [r["loss"] for r in every[-100:]]  # final_loss: the mean of the last 100 steps
    assert abs(shown["info"]["final_loss"] - sum(tail) / len(tail)) < 1e-9
    assert "(mean of the last 100 steps; last step" in jobs(stack, "show", job_id).output
    logs = jobs(stack, "logs", job_id)
    assert logs.exit_code == 0 and logs.stdout == ""
    assert f"job {job_id} kept no log lines" in logs.stderr  # this process logs at WARNING


def test_a_missing_metric_is_not_found_and_names_those_there(stack: Stack) -> None:
    from db.models import Metric

    job_id = fitted(stack, steps=10)
    none = jobs(stack, "metrics", job_id)
    assert none.exit_code == 3 and f"job {job_id} has no metrics" in none.output
    with stack.sessions()() as session:
        session.add_all([Metric(job_id=job_id, name=n, step=1, epoch=1, value=1.0)
                         for n in ("test_elbo", "train_elbo")])  # fmt: skip
        session.commit()
    missing = jobs(stack, "metrics", job_id, "--name", "nosuch")
    assert missing.exit_code == 3
    assert f"job {job_id} has no metric `nosuch`; it has: test_elbo, train_elbo" in missing.output


def test_showing_a_sweeps_id_as_a_job_says_it_is_a_sweep(stack: Stack) -> None:
    done = offline_client(stack).submit_sweep(RUGGED, RUGGED_FORMULA, grid={"lr": [0.01, 0.02]},
                                               steps=10)  # fmt: skip
    shown = jobs(stack, "show", done.sweep_id)
    assert shown.exit_code == 3
    assert f"is not a job but a sweep of 2 members: `jobs sweep show {done.sweep_id}`" in (
        shown.output
    )
    assert "job nosuchjob not found" in jobs(stack, "show", "nosuchjob").output


def test_export_takes_its_format_from_the_file_name_and_refuses_a_mismatch(
    stack: Stack, tmp_path: Path
) -> None:
    job_id = fitted(stack, steps=10)
    csv = tmp_path / "out.csv"
    assert jobs(stack, "export", job_id, "-o", str(csv)).exit_code == 0
    assert csv.read_text().splitlines()[0].startswith("draw,Intercept,")
    mismatch = jobs(stack, "export", job_id, "-o", str(tmp_path / "x.csv"), "--format", "netcdf")
    assert mismatch.exit_code == 2 and "names a csv file, but --format is netcdf" in mismatch.output
    assert not (tmp_path / "x.csv").exists()
    unknown = jobs(stack, "export", job_id, "-o", str(tmp_path / "x.out"))
    assert unknown.exit_code == 2 and "give --format" in unknown.output
    assert (
        jobs(stack, "export", job_id, "-o", str(tmp_path / "x.out"), "--format", "json").exit_code
        == 0
    )


def test_a_running_fits_loss_curve_is_drawn_as_far_as_it_has_run(
    stack: Stack, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from db.models import Job, Loss

    client = offline_client(stack)
    job_id = client.submit_fit(RUGGED, RUGGED_FORMULA, steps=1000, seed=0)
    with stack.sessions()() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", step=50))
        session.add_all(Loss(job_id=job_id, step=s, loss=300.0 - s) for s in range(50))
        session.commit()
    drawn = jobs(stack, "plot", job_id, "--kind", "loss", "-o", str(tmp_path / "l.png"))
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "l.png").stat().st_size > 5_000
    params = jobs(stack, "plot", job_id, "--kind", "params", "-o", str(tmp_path / "p.png"))
    assert params.exit_code == 2  # no draws until it ends: said, not a traceback


def test_a_sweep_says_at_submit_which_members_run_one_by_one_and_why(stack: Stack) -> None:
    done = offline_client(stack).submit_sweep(
        RUGGED, RUGGED_FORMULA, grid={"guide": ["AutoNormal", "AutoMultivariateNormal"]},
        sweep={"seeds": 3}, steps=10,
    )  # fmt: skip
    assert done.packed == 3
    assert done.unpacked == {
        "guide AutoMultivariateNormal couples a fit's sites (one covariance per fit)": 3
    }
