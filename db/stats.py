"""Read-only fleet statistics for monitoring: durations, step rates, and one snapshot of it all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import TERMINAL, Job, JobStatus, as_utc, utcnow
from db.workers import worker_views


def finished_durations(
    session: Session, since: datetime | None = None
) -> list[tuple[str, str, float]]:
    """(kind, status, seconds) of every ended job that ran (has started_at and finished_at).

    With `since`, only jobs that finished at or after it. A retried job counts from the start
    of its last attempt (claim_job resets started_at).
    """
    query = select(Job.kind, Job.status, Job.started_at, Job.finished_at).where(
        Job.status.in_(TERMINAL), Job.started_at.is_not(None), Job.finished_at.is_not(None)
    )
    if since is not None:
        query = query.where(Job.finished_at >= since)
    out = []
    for kind, status, started, finished in session.execute(query).all():
        if started is None or finished is None:  # excluded by the query; narrows the type
            continue
        seconds = (as_utc(finished) - as_utc(started)).total_seconds()
        out.append((kind, status, max(seconds, 0.0)))  # max: hosts' clocks may disagree
    return out


def running_step_rates(
    session: Session, now: datetime | None = None
) -> list[tuple[str, str, float]]:
    """(job_id, queue, steps per second since it started) of every running job.

    A job resumed from a checkpoint keeps its step but restarts its clock, so its rate reads
    high until it settles.
    """
    now = now or utcnow()
    rows = session.execute(
        select(Job.id, Job.queue, Job.step, Job.started_at).where(
            Job.status == JobStatus.RUNNING.value, Job.started_at.is_not(None)
        )
    ).all()
    out = []
    for job_id, queue, step, started in rows:
        if started is None:  # excluded by the query; narrows the type
            continue
        elapsed = (now - as_utc(started)).total_seconds()
        out.append((job_id, queue, step / elapsed if elapsed > 0 else 0.0))
    return out


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


def total_steps(session: Session) -> int:
    """Sum of `step` over every job: the steps the fleet has run, for a Prometheus counter."""
    return int(session.scalar(select(func.coalesce(func.sum(Job.step), 0))) or 0)


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Everything the metrics endpoint shows, read in one session."""

    queues: list[str]  # every queue that has jobs or a worker (alive or not), sorted
    counts: dict[str, dict[str, int]]  # {queue: {status: count}}, every status, zeros included
    oldest_queued: dict[str, datetime]  # {queue: creation time of its oldest queued job}
    workers_alive: dict[str, int]  # {queue: live workers serving it}
    step_rates: dict[str, float]  # {queue: summed steps per second of its running jobs}
    total_steps: int
    durations: list[tuple[str, str, float]]  # (kind, status, seconds), see finished_durations


def fleet_stats(session: Session, *, alive_s: float, now: datetime | None = None) -> FleetStats:
    """Read a FleetStats snapshot; workers count as alive with a heartbeat in `alive_s`."""
    now = now or utcnow()
    counts = job_counts(session)
    # include_dead: a queue whose last worker died must still show 0 live workers.
    views = worker_views(session, alive_s, include_dead=True)
    queues = sorted({*counts, *(q for v in views for q in v.queues)})
    rates = dict.fromkeys(queues, 0.0)
    for _job_id, queue, rate in running_step_rates(session, now):
        rates[queue] = rates.get(queue, 0.0) + rate
    return FleetStats(
        queues=queues,
        counts={q: {s.value: counts.get(q, {}).get(s.value, 0) for s in JobStatus} for q in queues},
        oldest_queued=oldest_queued(session),
        workers_alive={q: sum(v.alive and q in v.queues for v in views) for q in queues},
        step_rates=rates,
        total_steps=total_steps(session),
        durations=finished_durations(session),
    )
