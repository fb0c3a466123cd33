"""A job that waits for another: released exactly once when it succeeds, failed when it does not."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.claims import claim_job
from db.finish import Released, finish_job, release_dependants
from db.jobs import create_job, get_job, request_cancel
from db.models import Job, JobStatus
from tests.params import EACH_DATABASE

pytestmark = EACH_DATABASE


def make_pair(sessions: sessionmaker[Session], fit_status: str = "queued") -> tuple[str, str]:
    with sessions() as session:
        create_job(session, id="fit00001", kind="fit", spec={}, model="linreg", queue="cpu",
                   total_steps=10)  # fmt: skip
        create_job(session, status=JobStatus.WAITING, id="pred0001", kind="predict", spec={},
                   model="linreg", queue="cpu", total_steps=1, depends_on="fit00001")  # fmt: skip
        session.commit()
    return "fit00001", "pred0001"


def run_to_end(
    sessions: sessionmaker[Session], job_id: str, status: JobStatus, error: str | None = None
) -> list[Released]:
    with sessions() as session:
        attempt = claim_job(session, job_id, worker="w", host="h", pid=1, device="cpu", lease_s=60)
        assert attempt == 1
        return finish_job(session, job_id, worker="w", attempt=1, status=status, error=error)


def test_success_releases_the_waiting_job_once(stack) -> None:
    sessions = stack.sessions()
    fit, predict = make_pair(sessions)
    with sessions() as session:  # a waiting job cannot be claimed
        assert (
            claim_job(session, predict, worker="w", host="h", pid=1, device="cpu", lease_s=60)
            is None
        )
    released = run_to_end(sessions, fit, JobStatus.SUCCEEDED)
    assert [r.id for r in released] == [predict]
    with sessions() as session:
        assert get_job(session, predict).status == "queued"
        assert release_dependants(session, fit) == []  # the submitter's late check: no resend


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_fit_that_ends_badly_fails_its_dependants_with_the_reason(stack, status) -> None:
    sessions = stack.sessions()
    fit, predict = make_pair(sessions)
    released = run_to_end(sessions, fit, status, "Traceback...\nModelError: loss is NaN at step 3")
    assert released == []
    with sessions() as session:
        job = get_job(session, predict)
        assert job.status == "failed"
        assert job.error == f"its fit {fit} {status}: ModelError: loss is NaN at step 3"


def test_cancelling_a_queued_fit_fails_its_dependants(stack) -> None:
    sessions = stack.sessions()
    fit, predict = make_pair(sessions)
    with sessions() as session:
        assert request_cancel(session, fit) == "cancelled"
        assert get_job(session, predict).status == "failed"
        assert "cancelled" in (get_job(session, predict).error or "")


def test_a_waiting_job_can_be_cancelled(stack) -> None:
    sessions = stack.sessions()
    fit, predict = make_pair(sessions)
    with sessions() as session:
        assert request_cancel(session, predict) == "cancelled"
    assert run_to_end(sessions, fit, JobStatus.SUCCEEDED) == []


def test_release_after_the_fact_settles_a_late_dependant(stack) -> None:
    sessions = stack.sessions()
    fit, predict = make_pair(sessions)
    with sessions() as session:  # the fit ended before the dependant was looked at
        session.execute(update(Job).where(Job.id == fit).values(status="succeeded"))
        session.commit()
        assert [r.id for r in release_dependants(session, fit)] == [predict]
        assert release_dependants(session, fit) == []
