"""Sweeps: a parent of member jobs, some of them fitted together by a vectorised batch job.

A member in a batch (`jobs.batch_id`) is never sent on its own: its batch is claimed, leased
and reaped like any job, and its members follow it (running when it starts, back to queued
when it is requeued, failed with its reason when it fails). The worker stores every member's
results and final status in one transaction (worker/sweep.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from db.labels import sweep_by_name
from db.models import (
    TERMINAL,
    Dataset,
    Job,
    JobStatus,
    Param,
    Sweep,
    plausible_id,
    plausible_name,
    shown_id,
    utcnow,
)  # fmt: skip
from db.search import searchable_columns
from kiln.errors import NotFound
from kiln.jobinfo import BatchInfo, SviInfo


def get_sweep(session: Session, sweep_id: str, owner: str | None = None) -> Sweep:
    """The sweep with this id, name or unique id prefix (at least 4 characters); with `owner`, among
    that user's sweeps only (as db.jobs.get_job)."""
    if not plausible_id(sweep_id) and not plausible_name(sweep_id):
        raise NotFound(f"sweep {shown_id(sweep_id)} not found")
    sweep = session.get(Sweep, sweep_id) if plausible_id(sweep_id) else None
    if sweep is not None and (owner is None or sweep.owner == owner):
        return sweep
    named = sweep_by_name(session, sweep_id, owner)
    if named is not None:
        return named
    if not plausible_id(sweep_id):
        raise NotFound(f"sweep {shown_id(sweep_id)} not found")
    if len(sweep_id) >= 4:
        query = select(Sweep).where(Sweep.id.startswith(sweep_id, autoescape=True))
        if owner is not None:
            query = query.where(Sweep.owner == owner)
        matches = session.scalars(query.limit(2)).all()
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(f"sweep id prefix {sweep_id!r} is ambiguous; give more characters")
    raise NotFound(f"sweep {sweep_id} not found")


def sweep_status(counts: Counter[str]) -> str:
    """succeeded only if every member did; failed/cancelled once all ended and one did not."""
    total = sum(counts.values())
    ended = sum(counts[s] for s in TERMINAL)
    if ended < total:
        return JobStatus.RUNNING.value if counts[JobStatus.RUNNING.value] else "queued"
    if counts[JobStatus.SUCCEEDED.value] == total:
        return JobStatus.SUCCEEDED.value
    return JobStatus.FAILED.value if counts[JobStatus.FAILED.value] else "cancelled"


@dataclass
class MemberRow:
    index: int
    job_id: str
    batch_id: str | None
    settings: dict[str, Any]
    status: str
    step: int
    total_steps: int
    final_loss: float | None
    error: str | None
    params: dict[str, float] = field(default_factory=dict)  # site -> posterior mean


@dataclass
class SweepView:
    id: str
    model: str
    spec: dict[str, Any]
    info: dict[str, Any]
    created_at: Any
    status: str
    counts: dict[str, int]
    batches: list[dict[str, Any]]
    members: list[MemberRow]


def sweep_counts(session: Session, sweep_id: str) -> Counter[str]:
    rows = session.execute(
        select(Job.status, func.count())
        .where(Job.sweep_id == sweep_id, Job.kind != "batch")
        .group_by(Job.status)
    ).all()
    return Counter({status: int(n) for status, n in rows})


def view_sweep(session: Session, sweep_id: str, with_members: bool = True,
               owner: str | None = None) -> SweepView:  # fmt: skip
    """The sweep, its status (from its members), its batches and one row per member."""
    sweep = get_sweep(session, sweep_id, owner)
    counts = sweep_counts(session, sweep.id)
    batches = [
        {"id": b.id, "status": b.status, "members": BatchInfo.model_validate(b.info or {}).members,
         "step": b.step, "total_steps": b.total_steps, "worker": b.worker,
         "seconds": BatchInfo.model_validate(b.info or {}).fit_seconds, "error": b.error}
        for b in session.scalars(
            select(Job).where(Job.sweep_id == sweep.id, Job.kind == "batch").order_by(Job.id)
        )
    ]  # fmt: skip
    members: list[MemberRow] = []
    if with_members:
        jobs = session.scalars(
            select(Job).where(Job.sweep_id == sweep.id, Job.kind != "batch").order_by(Job.member)
        ).all()
        means: dict[str, dict[str, float]] = {}
        for job_id, site, mean in session.execute(
            select(Param.job_id, Param.site, Param.mean)
            .join(Job, Job.id == Param.job_id)
            .where(Job.sweep_id == sweep.id)
            .order_by(Param.job_id, Param.position)
        ):
            if mean is not None:
                means.setdefault(job_id, {})[site] = mean
        for job in jobs:
            info = SviInfo.model_validate(job.info or {})  # members are linreg fits
            members.append(
                MemberRow(
                    index=job.member if job.member is not None else -1,
                    job_id=job.id,
                    batch_id=job.batch_id,
                    settings=info.sweep.settings if info.sweep else {},
                    status=job.status,
                    step=job.step,
                    total_steps=job.total_steps,
                    final_loss=info.final_loss,
                    error=job.error,
                    params=means.get(job.id, {}),
                )  # fmt: skip
            )
    return SweepView(
        id=sweep.id, model=sweep.model, spec=sweep.spec, info=sweep.info or {},
        created_at=sweep.created_at, status=sweep_status(counts), counts=dict(counts),
        batches=batches, members=members,
    )  # fmt: skip


def list_sweeps(
    session: Session, limit: int = 20, owner: str | None = None, offset: int = 0
) -> list[tuple[Sweep, str, dict[str, int]]]:
    """The newest sweeps (of `owner`, if given) with their status and counts."""
    query = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id)
    if owner is not None:
        query = query.where(Sweep.owner == owner)
    sweeps = session.scalars(query.offset(offset).limit(limit)).all()
    out = []
    for sweep in sweeps:
        counts = sweep_counts(session, sweep.id)
        out.append((sweep, sweep_status(counts), dict(counts)))
    return out


def cancel_sweep(session: Session, sweep_id: str, owner: str | None = None) -> int:
    """Cancel every member and batch not yet ended: queued ones at once, running ones at their
    next flush. Commit. Returns how many jobs were asked to stop."""
    sweep = get_sweep(session, sweep_id, owner)
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.sweep_id == sweep.id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.CANCELLED.value,
            finished_at=now,
            cancel_requested=True,
            error="cancelled by the user",
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        update(Job)
        .where(Job.sweep_id == sweep.id, Job.status.not_in(TERMINAL))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return cast(CursorResult[Any], result).rowcount


def delete_sweep(session: Session, sweep_id: str) -> None:
    """Remove a sweep, its jobs and its dataset if nothing else uses it; commit (used to undo a
    submission the broker refused)."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return
    dataset_id = sweep.dataset_id
    session.execute(delete(Job).where(Job.sweep_id == sweep_id, Job.kind != "batch"))
    session.execute(delete(Job).where(Job.sweep_id == sweep_id))
    session.execute(delete(Sweep).where(Sweep.id == sweep_id))
    used = session.scalar(select(Job.id).where(Job.dataset_id == dataset_id).limit(1))
    if dataset_id and used is None:
        session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    session.commit()


def start_batch_members(session: Session, batch_id: str, worker: str) -> list[Job]:
    """Mark the batch's members that have not ended running (those cancelled meanwhile stay
    cancelled); commit. Returns them in member order, with their specs."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status.not_in(TERMINAL))
        .values(
            status=JobStatus.RUNNING.value,
            worker=worker,
            started_at=now,
            step=0,
            attempts=Job.attempts + 1,
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return list(
        session.scalars(
            select(Job)
            .where(Job.batch_id == batch_id, Job.status == JobStatus.RUNNING.value)
            .order_by(Job.member)
        ).all()
    )


def batch_progress(session: Session, batch_id: str, step: int) -> None:
    """Move the running members of a batch to `step` (no commit: the caller's flush commits)."""
    session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.RUNNING.value)
        .values(step=step)
        .execution_options(synchronize_session=False)
    )


def settle_batch_members(
    session: Session, batch_id: str, status: str, error: str | None, requeue: bool
) -> None:
    """A batch ended without storing its members (no commit): its members that have not ended
    go back to queued with it (requeue), or end with its status and reason."""
    now = utcnow()
    if requeue:
        values: dict[str, Any] = {"status": JobStatus.QUEUED.value, "worker": None, "step": 0,
                                  "queued_at": now}  # fmt: skip
    else:
        reason = (error or "").strip().splitlines()
        why = f"its batch {batch_id} {status}" + (f": {reason[-1]}" if reason else "")
        values = {"status": status, "finished_at": now, "error": why}
    session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status.not_in(TERMINAL))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def cancelled_members(session: Session, batch_id: str) -> set[str]:
    """Members of the batch whose cancel the user asked for."""
    return set(
        session.scalars(
            select(Job.id).where(Job.batch_id == batch_id, Job.cancel_requested.is_(True))
        )
    )


@dataclass(frozen=True, slots=True)
class MemberEnd:
    """How a member of a batch ended, for end_members."""

    job_id: str
    status: str
    step: int
    last_loss: float | None
    error: str | None
    info: dict[str, Any]


def end_members(session: Session, batch_id: str, ends: Sequence[MemberEnd]) -> None:
    """Give a batch's members their final status, in one bulk update (no commit). A member the
    user cancelled while its batch ran ends cancelled, whatever the batch found."""
    stopped = cancelled_members(session, batch_id)
    now = utcnow()
    rows = []
    for e in ends:
        status, error = e.status, e.error
        if e.job_id in stopped:
            status, error = JobStatus.CANCELLED.value, "cancelled by the user"
        rows.append({"id": e.job_id, "status": status, "step": e.step, "last_loss": e.last_loss,
                     "error": error, "info": e.info, "finished_at": now,
                     **searchable_columns(info=e.info),
                     "lease_expires_at": None})  # fmt: skip
    if rows:
        session.execute(update(Job), rows)  # an ORM bulk update by primary key
