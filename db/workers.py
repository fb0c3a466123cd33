"""Worker rows: register, heartbeat and stop; who is alive, idle, and running what."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Job, JobStatus, Worker, as_utc, utcnow


def register_worker(
    session: Session, *, name: str, host: str, pid: int, queues: list[str], device: str,
    slots: int = 1,
) -> None:  # fmt: skip
    """Insert or refresh this worker's row (`slots`: the jobs it runs at once); commit."""
    row = session.get(Worker, name)
    now = utcnow()
    if row is None:
        session.add(
            Worker(name=name, host=host, pid=pid, queues=queues, device=device, slots=slots)
        )
    else:
        row.host, row.pid, row.queues, row.device, row.slots = host, pid, queues, device, slots
        row.started_at, row.last_heartbeat, row.stopped_at = now, now, None
    session.commit()


def heartbeat_worker(session: Session, name: str) -> None:
    """Mark this worker alive now; commit."""
    session.execute(
        update(Worker).where(Worker.name == name).values(last_heartbeat=utcnow(), stopped_at=None)
    )
    session.commit()


def stop_worker(session: Session, name: str) -> None:
    """Mark this worker stopped; commit."""
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
        alive = w.stopped_at is None and beat >= since
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
