"""Ending a job: its final status and attempt outcome, and the jobs waiting for it settled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from db.chains import settle_unit
from db.models import TERMINAL, Attempt, Checkpoint, Job, JobStatus, utcnow
from db.search import searchable_columns
from db.sweeps import settle_batch_members


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
    info: dict[str, Any] | None = None,
) -> list[Released]:
    """End this attempt with `status` (or put the job back to queued with requeue); commit.

    With `info`, the job's info is replaced by it in the same transaction (so a reader never
    sees the final status with the info of the last progress flush). Only the worker that
    holds the job changes its row. Jobs waiting for this one are released (or failed) in the
    same transaction; returns the released ones, which the caller sends.

    A job that is no longer running under this worker (reaped, or already finished by a
    commit whose reply was lost and is now retried as a requeue) is left as it is.
    """
    now = utcnow()
    job_values: dict[str, Any] = {"lease_expires_at": None}
    if requeue:
        job_values.update(status=JobStatus.QUEUED.value, worker=None, error=error, queued_at=now)
    else:
        job_values.update(status=status.value, finished_at=now, error=error)
    if info is not None:
        job_values["info"] = info
        job_values.update(searchable_columns(info=info))  # final_loss, for --where
    ours = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING.value)
        .values(**job_values)
        .execution_options(synchronize_session=False)
    )
    if ours.rowcount == 0:  # type: ignore[attr-defined]
        session.rollback()
        return []
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
    released = [] if requeue else settle_dependants(session, job_id)
    if not requeue:
        released += settled_unit(session, job_id)
    session.commit()
    return released


def settled_unit(session: Session, job_id: str) -> list[Released]:
    """If `job_id` is an MCMC job's unit of work: its job queued to gather (returned, to be
    sent) when all its units succeeded, or ended (its dependants settled) when this one
    did not. No commit."""
    settled = settle_unit(session, job_id)
    if settled.ended is not None:
        settle_dependants(session, settled.ended)
    return [Released(*settled.queued)] if settled.queued is not None else []


def release_dependants(session: Session, job_id: str) -> list[Released]:
    """If job `job_id` has ended, settle the jobs waiting for it; commit. Returns those released.

    Both the worker that finishes a fit and the submitter of a dependant call this, so a
    dependant submitted just as its fit ends is settled exactly once (conditional UPDATEs).
    """
    released = settle_dependants(session, job_id)
    session.commit()
    return released


def settle_dependants(session: Session, job_id: str) -> list[Released]:
    """If job `job_id` has ended, queue the jobs waiting for it (it succeeded) or fail them with
    its reason (it did not). No commit. Returns those queued, which the caller sends."""
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
        if (
            cast(CursorResult[Any], result).rowcount == 1
            and values["status"] == JobStatus.QUEUED.value
        ):
            released.append(Released(child.id, child.queue, child.priority))
    return released
