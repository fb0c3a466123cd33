"""An MCMC job's units of work, made with it: each a job of kind `chain` (spec
user_mcmc_chain) for some of its chains, routed as it is, which any worker of its queue
claims; the job itself waits for them (db/chains.py)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from db.jobs import create_job
from db.models import Job, JobStatus
from kiln.jobinfo import McmcInfo
from kiln.specs import UserMcmcChainSpec, UserMcmcFitSpec
from scheduler.limits import Limits


def add_units(
    session: Session, job: Job, spec: UserMcmcFitSpec, limits: Limits, new_id: Callable[[], str]
) -> list[Job]:
    """The job's units (queued; the job waits); `new_id()` names each. No commit."""
    job.status = JobStatus.WAITING
    units = []
    per_chain = spec.warmup + spec.draws_cap
    for first, count in spec.units:
        unit = UserMcmcChainSpec(
            parent=job.id, first=first, count=count, steps=count * per_chain, seed=spec.seed,
            device=spec.device, queue=spec.queue, priority=spec.priority,
        )  # fmt: skip
        units.append(
            create_job(
                session,
                status=JobStatus.QUEUED,
                id=new_id(),
                kind=unit.family,
                spec=unit.model_dump(mode="json"),
                model=job.model,
                dataset_id=job.dataset_id,
                source_id=job.source_id,
                parent_id=job.id,
                queue=job.queue,
                priority=job.priority,
                total_steps=unit.total_steps,
                max_attempts=limits.max_attempts,
                info=McmcInfo(
                    method=spec.method, chains=count, warmup=spec.warmup, samples=spec.draws_cap
                ).dump(),
            )  # fmt: skip
        )
    return units
