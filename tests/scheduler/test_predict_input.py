"""Bad predict submissions: a clear message, the named exit code, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, update

from db.models import Dataset, Job
from kiln.cli import get_cli
from kiln.specs import parse_spec
from scheduler.kinds import Upload
from scheduler.limits import Limits
from scheduler.submit import submit_job
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack
from tests.params import EMBEDDED_AND_FLEET
from tests.scheduler.test_bad_input import queued_messages

pytestmark = EMBEDDED_AND_FLEET


def stored_fit(stack: Stack, status: str = "succeeded") -> str:
    """A fit job row in `status`, made without a broker (the message is dropped)."""
    spec = parse_spec({"model": "linreg", "formula": RUGGED_FORMULA, "steps": 10, "seed": 0})
    (job,) = submit_job(
        stack.sessions(), spec, Upload(RUGGED.read_bytes(), RUGGED.name),
        send=lambda *message: None, limits=Limits(10**6, 3, 10**5, 10**7),
    )  # fmt: skip
    with stack.sessions()() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status=status))
        session.commit()
    return job.id


def counts(stack: Stack) -> tuple[int, int]:
    with stack.sessions()() as session:
        return (
            session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(Dataset)) or 0,
        )


def invoke(*args: str) -> Result:
    return CliRunner().invoke(get_cli(), ["submit", "predict", *args, "--json"])


@pytest.fixture
def new_rows(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str) -> str:
        path = tmp_path / "new.csv"
        path.write_text(text)
        return str(path)

    return write


def test_unknown_fit_is_not_found(stack) -> None:
    result = invoke("--from", "0123456789abcdef")
    assert result.exit_code == 3, result.output
    assert "job 0123456789abcdef not found" in result.stderr
    assert counts(stack) == (0, 0)


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_fit_that_did_not_succeed_is_refused(stack, status) -> None:
    fit = stored_fit(stack, status)
    before = counts(stack)
    result = invoke("--from", fit)
    assert result.exit_code == 2, result.output
    assert f"that fit {status}; there is nothing to predict from" in result.stderr
    assert counts(stack) == before
    assert queued_messages(stack.broker_url) == 0


def test_a_predict_job_is_not_a_fit(stack) -> None:
    fit = stored_fit(stack)
    first = invoke("--from", fit)
    assert first.exit_code == 0, first.output
    predict_id = first.stdout.split('"id": "')[1].split('"')[0]
    before, queued = counts(stack), queued_messages(stack.broker_url)
    result = invoke("--from", predict_id)
    assert result.exit_code == 2, result.output
    assert "that is a predict job; predict needs a fit job" in result.stderr
    assert counts(stack) == before and queued_messages(stack.broker_url) == queued


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "0"], "spec.num_samples: must be > 0 (got 0)"),
        (["--samples", "-3"], "(got -3)"),
        (["--samples", "5000"], "spec.num_samples: at most 1000"),
        (["--seed", "-1"], "spec.seed"),
    ],
)
def test_bad_sample_counts_are_refused(stack, monkeypatch, args, message) -> None:
    monkeypatch.setenv("KILN_MAX_PREDICT_SAMPLES", "1000")
    fit = stored_fit(stack)
    before = counts(stack)
    result = invoke("--from", fit, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert counts(stack) == before
    assert queued_messages(stack.broker_url) == 0


def test_too_many_values_name_the_cap(stack, monkeypatch) -> None:
    monkeypatch.setenv("KILN_MAX_PREDICT_VALUES", "100000")
    fit = stored_fit(stack)
    result = invoke("--from", fit, "--samples", "800")  # 800 x 170 rows = 136000
    assert result.exit_code == 2, result.output
    assert "800 draws x 170 rows is 136000 values" in result.stderr
    assert "KILN_MAX_PREDICT_VALUES" in result.stderr


def test_new_data_missing_a_column_names_it(stack, new_rows) -> None:
    fit = stored_fit(stack)
    before = counts(stack)
    result = invoke("--from", fit, "--data", new_rows("rugged\n0.5\n1.5\n"))
    assert result.exit_code == 2, result.output
    assert "column `cont_africa` not in data (have: rugged)" in result.stderr
    assert counts(stack) == before
    assert queued_messages(stack.broker_url) == 0


def test_new_data_that_is_not_csv_is_refused(stack, new_rows) -> None:
    fit = stored_fit(stack)
    result = invoke("--from", fit, "--data", new_rows('{"rugged": [1, 2]}'))
    assert result.exit_code == 2, result.output
    assert "looks like JSON" in result.stderr


def test_new_data_without_the_response_is_accepted(stack, new_rows) -> None:
    fit = stored_fit(stack)
    result = invoke("--from", fit, "--data", new_rows("cont_africa,rugged\n1,0.5\n0,2.5\n"))
    assert result.exit_code == 0, result.output
    assert '"status": "queued"' in result.stdout
    assert queued_messages(stack.broker_url) == 1


def test_predict_of_a_running_fit_waits_and_is_not_sent(stack) -> None:
    fit = stored_fit(stack, "running")
    result = invoke("--from", fit[:8])  # a unique prefix is enough
    assert result.exit_code == 0, result.output
    assert '"status": "waiting"' in result.stdout
    assert f'"depends_on": "{fit}"' in result.stdout
    assert queued_messages(stack.broker_url) == 0
