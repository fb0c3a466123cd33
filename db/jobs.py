"""Job rows: create, find, claim (conditional UPDATE), progress, finish, cancel; worker rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import (
    TERMINAL,
    Attempt,
    Checkpoint,
    Job,
    JobStatus,
    Loss,
    Metric,
    Worker,
    utcnow,
)
from db.sweeps import settle_batch_members
from kiln.errors import InfraError, NotFound


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every datetime Kiln writes is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def create_job(session: Session, *, status: JobStatus = JobStatus.QUEUED, **fields: Any) -> Job:
    """Add a job row, queued (or waiting for the job in `depends_on`). Does not commit."""
    queued_at = utcnow() if status == JobStatus.QUEUED else None
    job = Job(status=status.value, step=0, attempts=0, info={}, queued_at=queued_at, **fields)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> Job:
    """The job with this id, or with this unique id prefix (at least 4 characters)."""
    job = session.get(Job, job_id)
    if job is not None:
        return job
    if len(job_id) >= 4:
        matches = session.scalars(select(Job).where(Job.id.startswith(job_id)).limit(2)).all()
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(f"job id prefix {job_id!r} is ambiguous; give more characters")
    raise NotFound(f"job {job_id} not found")


def list_jobs(session: Session, status: str | None = None, limit: int = 20) -> Sequence[Job]:
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status:
        query = query.where(Job.status == status)
    return session.scalars(query).all()


def latest_prediction(session: Session, fit_id: str) -> str | None:
    """The id of the fit's most recent succeeded predict job for its own rows, if any."""
    return session.scalar(
        select(Job.id)
        .where(
            Job.depends_on == fit_id,
            Job.kind == "predict",
            Job.status == JobStatus.SUCCEEDED.value,
            Job.dataset_id.is_(None),
        )
        .order_by(Job.finished_at.desc())
        .limit(1)
    )


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
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    number = session.scalar(select(Job.attempts).where(Job.id == job_id))
    assert number is not None
    _close_open_attempts(session, job_id, now, "lost", "its worker stopped renewing the lease")
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


def _close_open_attempts(
    session: Session, job_id: str, now: datetime, outcome: str, error: str
) -> None:
    session.execute(
        update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.ended_at.is_(None))
        .values(ended_at=now, outcome=outcome, error=error)
        .execution_options(synchronize_session=False)
    )


def get_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
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
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise InfraError(f"job {job_id}: lease lost by {worker}")
    if losses:
        session.execute(
            Loss.__table__.insert(),
            [{"job_id": job_id, "step": step, "loss": loss} for step, loss in losses],
        )
    if metrics:
        session.execute(
            Metric.__table__.insert(),
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
    return result.rowcount == 1  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Released:
    """A job moved from waiting to queued: the caller must now send it to the broker."""

    id: str
    queue: str
    priority: int


def finish_job(
    session: Session,
    job_id: str,
    *,
    worker: str,
    attempt: int,
    status: JobStatus,
    error: str | None = None,
    requeue: bool = False,
) -> list[Released]:
    """End this attempt with `status` (or put the job back to queued with requeue); commit.

    Jobs waiting for this one are released (or failed) in the same transaction; returns the
    released ones, which the caller sends.
    """
    now = utcnow()
    job_values: dict[str, Any] = {"lease_expires_at": None}
    if requeue:
        job_values.update(status=JobStatus.QUEUED.value, worker=None, error=error, queued_at=now)
    else:
        job_values.update(status=status.value, finished_at=now, error=error)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker)
        .values(**job_values)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.number == attempt)
        .values(ended_at=now, outcome="requeued" if requeue else status.value, error=error)
        .execution_options(synchronize_session=False)
    )
    if status == JobStatus.SUCCEEDED:  # the fitted state is stored; the checkpoint is spent
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
    else:  # a sweep's batch job: members it did not store follow it
        settle_batch_members(session, job_id, status.value, error, requeue)
    released = [] if requeue else _settle_dependants(session, job_id)
    session.commit()
    return released


def release_dependants(session: Session, job_id: str) -> list[Released]:
    """If job `job_id` has ended, settle the jobs waiting for it; commit. Returns those released.

    Both the worker that finishes a fit and the submitter of a dependant call this, so a
    dependant submitted just as its fit ends is settled exactly once (conditional UPDATEs).
    """
    released = _settle_dependants(session, job_id)
    session.commit()
    return released


def _settle_dependants(session: Session, job_id: str) -> list[Released]:
    parent = session.execute(
        select(Job.status, Job.error)
        .where(Job.id == job_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if parent is None or parent.status not in TERMINAL:
        return []
    waiting = session.execute(
        select(Job.id, Job.queue, Job.priority).where(
            Job.depends_on == job_id, Job.status == JobStatus.WAITING.value
        )
    ).all()
    released = []
    for child in waiting:
        if parent.status == JobStatus.SUCCEEDED.value:
            values: dict[str, Any] = {"status": JobStatus.QUEUED.value, "queued_at": utcnow()}
        else:
            reason = (parent.error or "").strip().splitlines()
            values = {
                "status": JobStatus.FAILED.value,
                "finished_at": utcnow(),
                "error": f"its fit {job_id} {parent.status}"
                + (f": {reason[-1]}" if reason else ""),
            }
        result = session.execute(
            update(Job)
            .where(Job.id == child.id, Job.status == JobStatus.WAITING.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1 and values["status"] == JobStatus.QUEUED.value:
            released.append(Released(child.id, child.queue, child.priority))
    return released


def request_cancel(session: Session, job_id: str) -> str:
    """Cancel a job: a queued or waiting one at once, a running one at its next step boundary;
    commit. Jobs waiting for a job cancelled here fail with that reason.

    Returns the job's status after the request.
    """
    job = get_job(session, job_id)
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.WAITING.value]))
        .values(status=JobStatus.CANCELLED.value, finished_at=utcnow(), cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.not_in(TERMINAL))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    _settle_dependants(session, job.id)
    session.commit()
    session.refresh(job)
    return job.status


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
    requeued, failed = [], []
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
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        _close_open_attempts(session, job.id, now, "lost", why)
        status = JobStatus.FAILED.value if give_up else JobStatus.QUEUED.value
        settle_batch_members(session, job.id, status, values.get("error"), not give_up)
        if give_up:
            failed.append(job.id)
            _settle_dependants(session, job.id)
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


def attempts_of(session: Session, job_id: str) -> Sequence[Attempt]:
    return session.scalars(
        select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
    ).all()


def register_worker(
    session: Session, *, name: str, host: str, pid: int, queues: list[str], device: str
) -> None:
    """Insert or refresh this worker's row; commit."""
    row = session.get(Worker, name)
    now = utcnow()
    if row is None:
        session.add(Worker(name=name, host=host, pid=pid, queues=queues, device=device))
    else:
        row.host, row.pid, row.queues, row.device = host, pid, queues, device
        row.started_at, row.last_heartbeat, row.stopped_at = now, now, None
    session.commit()


def heartbeat_worker(session: Session, name: str) -> None:
    session.execute(
        update(Worker).where(Worker.name == name).values(last_heartbeat=utcnow(), stopped_at=None)
    )
    session.commit()


def stop_worker(session: Session, name: str) -> None:
    session.execute(update(Worker).where(Worker.name == name).values(stopped_at=utcnow()))
    session.commit()


def live_workers(session: Session, queue: str | None, alive_s: float) -> list[Worker]:
    """Workers with a heartbeat in the last `alive_s` seconds (serving `queue`, if given)."""
    since = utcnow() - timedelta(seconds=alive_s)
    rows = session.scalars(
        select(Worker).where(Worker.last_heartbeat >= since, Worker.stopped_at.is_(None))
    ).all()
    return [w for w in rows if queue is None or queue in w.queues]


def idle_gpu_workers(session: Session, alive_s: float) -> int:
    """Live workers that serve the gpu queue and run no job now."""
    busy = set(session.scalars(select(Job.worker).where(Job.status == JobStatus.RUNNING.value)))
    return sum(w.name not in busy for w in live_workers(session, "gpu", alive_s))


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker row, whether it is alive, and the job it is running (if any)."""

    name: str
    host: str
    pid: int
    queues: list[str]
    device: str
    started_at: datetime
    last_heartbeat: datetime
    alive: bool
    running: str | None
    progress: str | None


def worker_views(session: Session, alive_s: float, include_dead: bool = False) -> list[WorkerView]:
    """Workers (alive ones, or all) with the job each is running, newest heartbeat first."""
    since = utcnow() - timedelta(seconds=alive_s)
    running = {
        row.worker: row
        for row in session.execute(
            select(Job.worker, Job.id, Job.step, Job.total_steps).where(
                Job.status == JobStatus.RUNNING.value
            )
        ).all()
    }
    views = []
    for w in session.scalars(select(Worker).order_by(Worker.last_heartbeat.desc())).all():
        beat = as_utc(w.last_heartbeat)
        alive = w.stopped_at is None and beat is not None and beat >= since
        if not alive and not include_dead:
            continue
        job = running.get(w.name) if alive else None
        views.append(
            WorkerView(
                name=w.name,
                host=w.host,
                pid=w.pid,
                queues=list(w.queues),
                device=w.device,
                started_at=as_utc(w.started_at),
                last_heartbeat=beat,
                alive=alive,
                running=job.id if job else None,
                progress=f"{job.step}/{job.total_steps}" if job else None,
            )  # fmt: skip
        )
    return views


def job_counts(session: Session) -> dict[str, dict[str, int]]:
    """{queue: {status: count}} over every job."""
    counts: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(Job.queue, Job.status, func.count()).group_by(Job.queue, Job.status)
    ).all()
    for queue, status, count in rows:
        counts.setdefault(queue, {})[status] = int(count)
    return counts


def oldest_queued(session: Session) -> dict[str, datetime]:
    """{queue: creation time of its oldest queued job}."""
    rows = session.execute(
        select(Job.queue, func.min(Job.created_at))
        .where(Job.status == JobStatus.QUEUED.value)
        .group_by(Job.queue)
    ).all()
    return {queue: as_utc(moment) for queue, moment in rows if moment is not None}
