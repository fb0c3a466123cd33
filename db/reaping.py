"""The reaper's database half: expired leases requeued or failed, stale queued jobs to resend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from db.claims import close_open_attempts
from db.finish import Released, settle_dependants, settled_unit
from db.models import Job, JobStatus, utcnow
from db.sweeps import settle_batch_members


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one reaper pass did: jobs put back to queued (to send) and jobs failed for good."""

    requeued: list[Released]
    failed: list[str]


def reap_expired(session: Session) -> Reaped:
    """Running jobs whose lease expired (their worker died or hangs): back to queued, their
    attempt closed as `lost`; a job that used all its attempts fails with that reason. Commit.

    Each change is a conditional UPDATE on the expired lease, so reapers on several workers,
    and a worker renewing at the same moment, never both win.
    """
    now = utcnow()
    expired = session.execute(
        select(Job.id, Job.queue, Job.priority, Job.attempts, Job.max_attempts, Job.worker).where(
            Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now
        )
    ).all()
    requeued: list[Released] = []
    failed: list[str] = []
    for job in expired:
        why = f"worker {job.worker} stopped renewing its lease (killed, out of memory or lost)"
        give_up = job.attempts >= job.max_attempts
        values: dict[str, Any] = {"lease_expires_at": None}
        if give_up:
            values.update(status=JobStatus.FAILED.value, finished_at=now,
                          error=f"gave up after {job.attempts} attempts: {why}")  # fmt: skip
        else:
            values.update(status=JobStatus.QUEUED.value, worker=None, queued_at=now, error=why)
        result = session.execute(
            update(Job)
            .where(
                Job.id == job.id,
                Job.status == JobStatus.RUNNING.value,
                Job.worker == job.worker,
                Job.lease_expires_at < now,
            )  # fmt: skip
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], result).rowcount != 1:
            continue
        close_open_attempts(session, job.id, now, "lost", why)
        status = JobStatus.FAILED.value if give_up else JobStatus.QUEUED.value
        settle_batch_members(session, job.id, status, values.get("error"), not give_up)
        if give_up:
            failed.append(job.id)
            settle_dependants(session, job.id)
            requeued += settled_unit(session, job.id)  # an MCMC unit's job: ends with it
        else:
            requeued.append(Released(job.id, job.queue, job.priority))
    session.commit()
    return Reaped(requeued, failed)


def queued_since(session: Session, older_than_s: float) -> list[Released]:
    """Queued jobs that became queued more than `older_than_s` seconds ago."""
    since = utcnow() - timedelta(seconds=older_than_s)
    rows = session.execute(
        select(Job.id, Job.queue, Job.priority).where(
            Job.status == JobStatus.QUEUED.value,
            Job.batch_id.is_(None),  # a batch's members travel with their batch's message
            or_(Job.queued_at.is_(None), Job.queued_at < since),
        )
    ).all()
    return [Released(r.id, r.queue, r.priority) for r in rows]


def mark_resent(session: Session, job_ids: Sequence[str]) -> None:
    """Restart the clock of queued jobs just sent again; commit."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.QUEUED.value)
            .values(queued_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    session.commit()
