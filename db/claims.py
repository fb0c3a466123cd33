"""A worker's hold on a job: the claim (conditional UPDATE), attempt rows, lease and progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from db.models import Attempt, Checkpoint, Job, JobStatus, Loss, Metric, utcnow
from db.results import insert_new_rows
from db.search import searchable_columns
from kiln.errors import InfraError


def claim_job(
    session: Session, job_id: str, *, worker: str, host: str, pid: int, device: str, lease_s: float
) -> int | None:
    """Take the job for `worker` if it is queued (or its lease expired); commit.

    The conditional UPDATE makes two claimers race safely: exactly one sees rowcount 1.
    A job taken over from a worker that died goes on from its checkpoint: the previous
    attempt is closed as `lost`, and loss rows after the checkpoint's step are deleted (the
    new attempt replays those steps). Returns the attempt number, or None when someone else
    holds it or it is finished.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(
                Job.status == JobStatus.QUEUED.value,
                and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.RUNNING.value,
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=Job.attempts + 1,
            started_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    # Session.execute is typed as returning Result; for an UPDATE it is a CursorResult.
    if cast(CursorResult[Any], result).rowcount != 1:
        session.rollback()
        return None
    number = session.scalar(select(Job.attempts).where(Job.id == job_id))
    assert number is not None
    close_open_attempts(session, job_id, now, "lost", "its worker stopped renewing the lease")
    if number > 1:
        resume_at = session.scalar(select(Checkpoint.step).where(Checkpoint.job_id == job_id)) or 0
        session.execute(delete(Loss).where(Loss.job_id == job_id, Loss.step >= resume_at))
        # A metric at step k was written with the checkpoint at k (its epoch ended there).
        session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step > resume_at))
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(step=resume_at)
            .execution_options(synchronize_session=False)
        )
    session.add(
        Attempt(job_id=job_id, number=number, worker=worker, host=host, pid=pid, device=device)
    )
    session.commit()
    return number


def close_open_attempts(
    session: Session, job_id: str, now: datetime, outcome: str, error: str
) -> None:
    """End the job's attempts that have not ended, with this outcome and reason. No commit."""
    session.execute(
        update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.ended_at.is_(None))
        .values(ended_at=now, outcome=outcome, error=error)
        .execution_options(synchronize_session=False)
    )


def attempts_of(session: Session, job_id: str) -> Sequence[Attempt]:
    """The job's attempts, first first."""
    return session.scalars(
        select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
    ).all()


def get_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    """The job's latest checkpoint, if it has one."""
    return session.get(Checkpoint, job_id)


def record_progress(
    session: Session,
    job_id: str,
    *,
    worker: str,
    losses: Sequence[tuple[int, float]],
    lease_s: float,
    info: dict[str, Any] | None = None,
    step: int | None = None,
    checkpoint: tuple[int, str, bytes] | None = None,
    metrics: Sequence[tuple[str, int, int, float]] = (),
) -> bool:
    """Store a batch of loss rows (and metrics: name, step, epoch, value), move progress on
    and renew the lease, in one transaction,
    with the checkpoint (step, format, bytes) taken after the last of those losses, if any.
    Idempotent: the same call again (a retry after a lost commit reply) stores nothing twice.

    Returns True when the user asked to cancel. Raises InfraError if this worker no longer
    holds the job (its lease expired and another worker took it).
    """
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_s)}
    if losses:
        values["step"] = losses[-1][0] + 1
        values["last_loss"] = losses[-1][1]
    if step is not None:
        values["step"] = step
    if info is not None:
        values["info"] = info
        values.update(searchable_columns(info=info))  # final_loss, for --where
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        session.rollback()
        raise InfraError(f"job {job_id}: lease lost by {worker}")
    # A flush whose commit went through but whose reply was lost is sent again: the rows it
    # already stored are skipped, the checkpoint replaced and the progress set again.
    insert_new_rows(
        session, Loss, [{"job_id": job_id, "step": step, "loss": loss} for step, loss in losses]
    )
    insert_new_rows(
        session, Metric,
        [{"job_id": job_id, "name": name, "step": at, "epoch": epoch, "value": value}
         for name, at, epoch, value in metrics],
    )  # fmt: skip
    if checkpoint is not None:
        at, fmt, content = checkpoint
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        session.add(Checkpoint(job_id=job_id, step=at, format=fmt, content=content))
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    session.commit()
    return bool(cancel)


def renew_lease(session: Session, job_id: str, *, worker: str, lease_s: float) -> bool:
    """Push the lease of a job this worker runs forward; commit. False if it no longer holds it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return cast(CursorResult[Any], result).rowcount == 1
