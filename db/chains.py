"""An MCMC job's units of work (jobs of kind `chain`, `parent_id` = the job): the job runs
while they do, is queued to gather them when all succeeded, ends with the first that fails;
cancelling the job cancels them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session, aliased

from db.models import TERMINAL, Job, JobStatus, utcnow


@dataclass(frozen=True, slots=True)
class Settled:
    """What a unit's end did to its job: the job queued to gather (to be sent), or ended."""

    queued: tuple[str, str, int] | None = None  # (id, queue, priority)
    ended: str | None = None  # the job's id, when this unit's failure ended it


def units_of(session: Session, job_id: str) -> list[Job]:
    """A job's units, by their first chain."""
    rows = session.scalars(select(Job).where(Job.parent_id == job_id)).all()
    return sorted(rows, key=lambda j: int(j.spec.get("first", 0)))


def mark_running(session: Session, job_id: str) -> None:
    """The job runs once its first unit does (it has no worker of its own then). No commit."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.WAITING.value)
        .values(status=JobStatus.RUNNING.value, started_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def merge_progress(
    session: Session, job_id: str, chains: dict[str, Any], metrics: dict[str, float]
) -> None:
    """A unit's chains' progress and latest metrics (--until's R-hat and ESS) into its job's
    info, under a lock on the job's row (units flush concurrently). No commit."""
    row = session.execute(
        select(Job.info, Job.status).where(Job.id == job_id).with_for_update()
    ).one_or_none()
    if row is None or row.status not in (JobStatus.WAITING.value, JobStatus.RUNNING.value):
        return
    info = dict(row.info or {})
    info["chain_progress"] = {**dict(info.get("chain_progress") or {}), **chains}
    if metrics:
        info["metrics"] = {**dict(info.get("metrics") or {}), **metrics}
    session.execute(
        update(Job).where(Job.id == job_id).values(info=info)
        .execution_options(synchronize_session=False)
    )  # fmt: skip


def gather_progress(session: Session, job_id: str) -> None:
    """The job's progress: the sum of its units'. No commit."""
    unit = aliased(Job)
    total = select(func.coalesce(func.sum(unit.step), 0)).where(unit.parent_id == job_id)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker.is_(None))
        .values(step=total.scalar_subquery())
        .execution_options(synchronize_session=False)
    )


def settle_unit(session: Session, unit_id: str) -> Settled:
    """After unit `unit_id` ended (in this transaction): queue its job when every unit has
    succeeded, or end the job (and cancel the other units) when this one failed or was
    cancelled. No commit. The job's row is locked first (FOR UPDATE where the database has
    it), so of two units ending at once exactly one queues the job."""
    unit = session.execute(
        select(Job.parent_id, Job.status, Job.error, Job.spec).where(Job.id == unit_id)
    ).one_or_none()
    if unit is None or unit.parent_id is None or unit.status not in TERMINAL:
        return Settled()
    parent = session.execute(
        select(Job.id, Job.queue, Job.priority, Job.status)
        .where(Job.id == unit.parent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if parent is None or parent.status not in (JobStatus.WAITING.value, JobStatus.RUNNING.value):
        return Settled()
    if unit.status == JobStatus.SUCCEEDED.value:
        left = session.scalar(
            select(func.count()).where(
                Job.parent_id == parent.id, Job.status != JobStatus.SUCCEEDED.value
            )
        )
        if left:
            return Settled()
        queued = session.execute(
            update(Job)
            .where(Job.id == parent.id, Job.status.in_([JobStatus.WAITING.value,
                                                        JobStatus.RUNNING.value]))
            .values(status=JobStatus.QUEUED.value, queued_at=utcnow(), worker=None)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if cast(CursorResult[Any], queued).rowcount == 1:
            return Settled(queued=(parent.id, parent.queue, parent.priority))
        return Settled()
    first, count = int(unit.spec.get("first", 0)), int(unit.spec.get("count", 1))
    chains = f"chain {first}" if count == 1 else f"chains {first}-{first + count - 1}"
    reason = (unit.error or "").strip()
    status = JobStatus.CANCELLED if unit.status == JobStatus.CANCELLED.value else JobStatus.FAILED
    error = f"{chains} (unit {unit_id}) {unit.status}" + (f": {reason}" if reason else "")
    session.execute(
        update(Job)
        .where(Job.id == parent.id)
        .values(status=status.value, finished_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    )
    cancel_units(session, parent.id)
    return Settled(ended=parent.id)


def cancel_units(session: Session, job_id: str) -> None:
    """Cancel a job's unfinished units: queued ones at once, running ones at their next
    flush. No commit."""
    session.execute(
        update(Job)
        .where(Job.parent_id == job_id,
               Job.status.in_([JobStatus.QUEUED.value, JobStatus.WAITING.value]))
        .values(status=JobStatus.CANCELLED.value, finished_at=utcnow(), cancel_requested=True)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    session.execute(
        update(Job)
        .where(Job.parent_id == job_id, Job.status.not_in(TERMINAL))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )


def cancel_unit_job(session: Session, job_id: str) -> bool:
    """Cancel a job that is running through its units (no worker of its own): at once, and
    its units with it. No commit. False when the job is not such a job."""
    unit = aliased(Job)
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker.is_(None),
               select(unit.id).where(unit.parent_id == job_id).exists())
        .values(status=JobStatus.CANCELLED.value, finished_at=utcnow(), cancel_requested=True,
                error="cancelled by the user")
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    if cast(CursorResult[Any], done).rowcount == 0:
        return False
    cancel_units(session, job_id)
    return True
