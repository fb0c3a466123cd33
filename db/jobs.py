"""Job rows: create, find and list them, the latest prediction of a fit, and cancel requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.chains import cancel_unit_job, cancel_units
from db.finish import settle_dependants
from db.labels import job_by_name
from db.models import TERMINAL, Job, JobStatus, plausible_id, plausible_name, shown_id, utcnow
from db.search import searchable_columns
from kiln.errors import NotFound


def create_job(session: Session, *, status: JobStatus = JobStatus.QUEUED, **fields: Any) -> Job:
    """Add a job row, queued (or waiting for the job in `depends_on`). Does not commit."""
    queued_at = utcnow() if status == JobStatus.QUEUED else None
    fields.setdefault("info", {})
    fields = {**searchable_columns(fields.get("spec"), fields["info"]), **fields}
    job = Job(status=status.value, step=0, attempts=0, queued_at=queued_at, **fields)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job:
    """The job with this id, name (`--name`), or unique id prefix (at least 4 characters),
    tried in that order (a name never looks like an id: kiln.labels.check_name).

    With `owner`, only that user's jobs count: another's is not found, and a prefix is
    ambiguous only among the owner's own (the HTTP API tells no one whose job exists).
    """
    if not plausible_id(job_id) and not plausible_name(job_id):
        raise NotFound(f"job {shown_id(job_id)} not found")
    job = session.get(Job, job_id) if plausible_id(job_id) else None
    if job is not None and (owner is None or job.owner == owner):
        return job
    named = job_by_name(session, job_id, owner)
    if named is not None:
        return named
    if not plausible_id(job_id):
        raise NotFound(f"job {shown_id(job_id)} not found")
    if len(job_id) >= 4:
        query = select(Job).where(Job.id.startswith(job_id, autoescape=True))
        if owner is not None:
            query = query.where(Job.owner == owner)
        matches = session.scalars(query.limit(2)).all()
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(f"job id prefix {job_id!r} is ambiguous; give more characters")
    raise NotFound(f"job {job_id} not found")


def list_jobs(
    session: Session, status: str | None = None, limit: int = 20, offset: int = 0,
    owner: str | None = None, *, kind: str | None = None, model: str | None = None,
    sweep_id: str | None = None,
) -> Sequence[Job]:  # fmt: skip
    """The newest `limit` jobs after skipping `offset` (with this status, of this owner, kind,
    model or sweep, if given), newest first. An MCMC job's units of work are listed only when
    asked for by kind (`chain`); its record lists them."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    if kind != "chain":
        query = query.where(Job.parent_id.is_(None))
    for column, value in ((Job.status, status), (Job.kind, kind), (Job.model, model),
                          (Job.sweep_id, sweep_id)):  # fmt: skip
        if value:
            query = query.where(column == value)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return session.scalars(query).all()


def unfinished_count(session: Session, owner: str) -> int:
    """How many of `owner`'s jobs are waiting, queued or running (sweep batches not counted:
    their members are)."""
    unfinished = (JobStatus.WAITING.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    query = select(func.count()).select_from(Job).where(
        Job.owner == owner, Job.status.in_(unfinished), Job.kind != "batch"
    )  # fmt: skip
    return int(session.scalar(query) or 0)


def latest_prediction(session: Session, fit_id: str, owner: str | None = None) -> str | None:
    """The id of the fit's most recent succeeded predict job for its own rows, if any (of
    `owner`'s predict jobs, when given)."""
    query = select(Job.id).where(
        Job.depends_on == fit_id,
        Job.kind == "predict",
        Job.status == JobStatus.SUCCEEDED.value,
        Job.dataset_id.is_(None),
    )
    if owner is not None:
        query = query.where(Job.owner == owner)
    return session.scalar(query.order_by(Job.finished_at.desc()).limit(1))


def request_cancel(session: Session, job_id: str) -> str:
    """Cancel a job: a queued or waiting one at once, a running one at its next step boundary;
    commit. Jobs waiting for a job cancelled here fail with that reason.

    Returns the job's status after the request.
    """
    job = get_job(session, job_id)
    cancel_unit_job(session, job.id)  # an MCMC job running through its units: at once
    cancel_units(session, job.id)
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
    settle_dependants(session, job.id)
    session.commit()
    session.refresh(job)
    return job.status


def cancel_requested(session: Session, job_id: str) -> bool:
    """Whether the user asked to cancel the job (a sandbox polls it while its model runs)."""
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
