"""A job's own log (`kiln logs`, Client.logs): Kiln's lines and the warnings of a built-in fit,
what a user's model prints (redacted), and the cap that keeps the first and last parts.
Jobs run in process (execute_job), on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db.joblogs import DROPPED, log_rows, log_state
from kiln.client import Client
from tests.conftest import Stack, offline_client, run_cli, run_in_process
from tests.params import FLEET_AND_SLOW_EMBEDDED
from worker.joblog import JobLog, capturing

pytestmark = FLEET_AND_SLOW_EMBEDDED

RUGGED = Path("/work/shared/data/rugged_data.csv")
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
DATA = {"y": [0.1, -0.3, 0.4, 0.2]}
PRINTING = """
import warnings
import pyro
import pyro.distributions as dist

STEP = [0]

def model(y):
    STEP[0] += 1
    print(f"model call {STEP[0]} via postgresql://kiln:hunter2pass@db.example/kiln")
    if STEP[0] == 1:
        warnings.warn("a warning from the user's model")
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)
"""


@pytest.fixture
def info_logs() -> Iterator[None]:
    """Kiln's per-job lines are INFO, as `kiln worker` logs them (--loglevel INFO)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


@pytest.mark.filterwarnings("default:a warning raised while the job runs:RuntimeWarning")
def test_a_linreg_fits_log_has_its_claimed_and_succeeded_lines_and_a_warning_raised_in_it(
    stack: Stack, info_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.svi import run_svi as real

    def warning_run_svi(*args: Any, **kwargs: Any) -> Iterator[Any]:
        warnings.warn("a warning raised while the job runs", RuntimeWarning, stacklevel=1)
        yield from real(*args, **kwargs)

    monkeypatch.setattr("worker.runners.svi.run_svi", warning_run_svi)
    kiln = offline_client(stack)
    job_id = kiln.submit_fit(RUGGED, FORMULA, steps=30, seed=1)
    assert run_in_process(stack, job_id) == "succeeded"
    text = kiln.logs(job_id)
    lines = text.splitlines()
    assert any(f"job {job_id}: claimed by in-process (attempt 1)" in line for line in lines)
    assert any(f"job {job_id}: succeeded in" in line for line in lines[-2:]), text
    assert "RuntimeWarning: a warning raised while the job runs" in text
    streams = {line.stream for line in kiln.log_lines(job_id)}
    assert streams == {"kiln", "warning"}
    # the job's hooks are gone once it ended
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_Handler"]
    assert warnings.showwarning.__name__ != "hook"


def test_a_user_models_prints_and_warnings_are_in_its_log_redacted(
    stack: Stack, tmp_path: Path
) -> None:
    model = tmp_path / "printing.py"
    model.write_text(PRINTING)
    kiln = offline_client(stack)
    job_id = kiln.submit_model(model, DATA, steps=5, num_samples=10, seed=1)
    assert run_in_process(stack, job_id) == "succeeded"
    text = kiln.logs(job_id)
    assert "model call 1 via postgresql://kiln:***@db.example/kiln" in text
    assert "hunter2pass" not in text
    assert "UserWarning: a warning from the user's model" in text
    outputs = [line for line in kiln.log_lines(job_id) if line.stream == "output"]
    assert len([line for line in outputs if "model call" in line.text]) >= 5
    seqs = [line.seq for line in kiln.log_lines(job_id)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    after = kiln.log_lines(job_id)[2].seq
    assert kiln.logs(job_id, after=after) == "".join(
        line.text + "\n" for line in kiln.log_lines(job_id) if line.seq > after
    )
    done = run_cli("logs", job_id, "--tail", "2", env=stack.user_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [line.text for line in kiln.log_lines(job_id)[-2:]]


def test_a_capped_log_keeps_its_first_and_last_lines_and_says_how_many_were_dropped(
    stack: Stack,
) -> None:
    kiln = offline_client(stack)
    job_id = kiln.submit_fit(RUGGED, FORMULA, steps=5, seed=1)  # a job row to log against
    sessions = stack.sessions()
    with sessions() as session:
        joblog = JobLog(job_id, 1000, [], log_state(session, job_id, 1000))
    for i in range(100):  # 100 lines of 20 bytes: 2000 bytes into a 1000-byte log
        joblog.add("output", f"line {i:03d} ..........")
        if i % 7 == 0:  # flushes in between: dropped lines already stored are deleted
            with sessions() as session:
                batch = joblog.write(session)
                session.commit()
            joblog.written(batch)
    with sessions() as session:
        joblog.write(session)
        session.commit()
    lines = kiln.log_lines(job_id)
    texts = [line.text for line in lines]
    assert texts[0] == "line 000 .........."
    assert texts[-1] == "line 099 .........."
    assert sum(len(t) + 1 for t in texts if not t.startswith("[")) <= 1000
    note = [line for line in lines if line.stream == DROPPED]
    assert len(note) == 1
    head = texts.index(note[0].text)
    assert head == 25  # 25 lines of 20 bytes fill the first 500
    kept = len(texts) - 1
    assert note[0].text.startswith(f"[{100 - kept} lines ({(100 - kept) * 20} bytes) dropped")
    assert texts[head + 1] == f"line {100 - (kept - 25):03d} .........."

    # the next attempt goes on from what is stored: the same cap, the numbering after it
    with sessions() as session:
        state = log_state(session, job_id, 1000)
        again = JobLog(job_id, 1000, [], state)
        again.add("kiln", "INFO a second attempt " + "x" * 100)
        again.write(session)
        session.commit()
        rows = log_rows(session, job_id)
    assert rows[-1].text.startswith("INFO a second attempt") and rows[-1].seq == state.next_seq
    assert sum(len(r.text) + 1 for r in rows if r.stream != DROPPED) <= 1000
    assert rows[0].text == "line 000 .........."


def test_a_log_line_is_cut_and_kiln_lines_of_other_jobs_are_left_out(stack: Stack) -> None:
    kiln = offline_client(stack)
    job_id = kiln.submit_fit(RUGGED, FORMULA, steps=5, seed=1)
    with stack.sessions()() as session:
        joblog = JobLog(job_id, 1 << 20, [], log_state(session, job_id, 1 << 20))
    from kiln.logs import job_context

    log = logging.getLogger("worker.test")
    with capturing(joblog), job_context(job_id):
        log.warning("mine")
        log.warning("another job's", extra={"job_id": "0" * 16})
        joblog.feed_output(b"x" * 5000 + b"\npartial")
        joblog.end_output()
    with stack.sessions()() as session:
        joblog.write(session)
        session.commit()
    texts = [line.text for line in Client.log_lines(kiln, job_id)]
    assert texts[0] == "WARNING mine"
    assert texts[1].startswith("x" * 4000 + "... [1000 more characters]")
    assert texts[2:] == ["partial"]
