"""finish_job: the final status, the attempt's outcome and the job's info in one transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from db.claims import attempts_of, claim_job, record_progress
from db.finish import finish_job
from db.jobs import create_job, get_job
from db.models import Job, JobStatus, utcnow
from tests.params import EACH_DATABASE

pytestmark = EACH_DATABASE

FINAL_INFO = {"final_loss": 1.25, "device": "cpu", "timings": {"fit_s": 3.5}}


def running_job(
    sessions: sessionmaker[Session], job_id: str = "job00001", worker: str = "w1"
) -> None:
    with sessions() as session:
        create_job(session, id=job_id, kind="fit", spec={}, model="linreg", queue="cpu",
                   total_steps=10)  # fmt: skip
        session.commit()
        assert claim_job(session, job_id, worker=worker, host="h", pid=1, device="cpu",
                         lease_s=60) == 1  # fmt: skip
        record_progress(session, job_id, worker=worker, losses=[(0, 2.0)], lease_s=60,
                        info={"stage": "fitting"})  # fmt: skip


@pytest.mark.parametrize(
    ("status", "requeue", "outcome"),
    [
        (JobStatus.SUCCEEDED, False, "succeeded"),
        (JobStatus.FAILED, False, "failed"),
        (JobStatus.FAILED, True, "requeued"),
    ],
)
def test_finish_with_info_writes_it_in_the_commit_that_ends_the_job(
    stack, status, requeue, outcome
) -> None:
    sessions = stack.sessions()
    running_job(sessions)
    with sessions() as session:
        commits: list[None] = []
        event.listen(session, "after_commit", lambda _session: commits.append(None))
        finish_job(session, "job00001", worker="w1", attempt=1, status=status,
                   requeue=requeue, info=FINAL_INFO)  # fmt: skip
        assert len(commits) == 1
    with sessions() as session:
        job = get_job(session, "job00001")
        assert job.status == ("queued" if requeue else status.value)
        assert job.info == FINAL_INFO
        assert [a.outcome for a in attempts_of(session, job.id)] == [outcome]


def test_finish_without_info_keeps_the_info_of_the_last_progress(stack) -> None:
    sessions = stack.sessions()
    running_job(sessions)
    with sessions() as session:
        finish_job(session, "job00001", worker="w1", attempt=1, status=JobStatus.SUCCEEDED)
    with sessions() as session:
        job = get_job(session, "job00001")
        assert (job.status, job.info) == ("succeeded", {"stage": "fitting"})


def test_a_worker_that_lost_the_job_writes_neither_status_nor_info(stack) -> None:
    sessions = stack.sessions()
    running_job(sessions)
    with sessions() as session:
        session.execute(update(Job).where(Job.id == "job00001")
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))  # fmt: skip
        session.commit()
        assert claim_job(session, "job00001", worker="w2", host="h", pid=2, device="cpu",
                         lease_s=60) == 2  # fmt: skip
        finish_job(session, "job00001", worker="w1", attempt=1, status=JobStatus.FAILED,
                   error="late", info=FINAL_INFO)  # fmt: skip
    with sessions() as session:
        job = get_job(session, "job00001")
        assert (job.status, job.worker, job.info) == ("running", "w2", {"stage": "fitting"})
