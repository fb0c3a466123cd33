"""submit_job(): check a spec by its kind, write its rows in one commit, then send its id."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import store_dataset
from db.finish import release_dependants
from db.jobs import create_job
from db.labels import commit_labelled, label_job
from db.models import Dataset, Job, JobStatus, ModelSource
from db.sources import store_source
from db.workers import idle_gpu_workers, live_workers
from kiln.continuation import ContinueSpec
from kiln.errors import InfraError, SpecError
from kiln.jobinfo import PredictInfo
from kiln.labels import Labels
from kiln.specs import PREDICT_KIND, BaseSpec, UserMcmcFitSpec
from scheduler.chains import add_units
from scheduler.kinds import CHECKS, REQUESTS, CheckContext, Checked, Upload
from scheduler.limits import Limits, Owner
from scheduler.routing import broker_priority, route

log = logging.getLogger(__name__)

# send(job_id, queue, broker_priority): puts the job id on the broker, raising on failure.
Sender = Callable[[str, str, int], None]


def submit_job(
    sessions: sessionmaker[Session],
    spec: BaseSpec | ContinueSpec,
    upload: Upload | None = None,
    *,
    send: Sender,
    limits: Limits,
    then_predict: int | None = None,
    owner: Owner | None = None,
    labels: Labels | None = None,
) -> list[Job]:
    """Check `spec` by its kind, store its data, model source and job row (queued, or waiting
    for the fit it depends on) in one transaction, then send what is ready.

    With `then_predict`, a predict job of that many draws waiting for this fit is stored in
    the same transaction. With `owner` (the HTTP API's caller), the jobs record the user, and
    their cap on unfinished jobs is checked in that transaction. `labels`: the job's name
    (unique per owner) and tags; a `then_predict` job carries the tags too. Returns the jobs
    created.
    Bad input raises a UserError before anything is written; if the broker refuses a message,
    the rows are removed again and InfraError raised.
    """
    kind = str(getattr(spec, "kind", ""))
    if kind not in CHECKS and kind not in REQUESTS:
        raise SpecError(f"spec.kind: `{kind}` cannot be submitted (have: {', '.join(CHECKS)})")
    if getattr(spec, "continued", None) is not None:  # its parent is checked by --continue only
        raise SpecError("spec.continued: set by `--continue ID` (Client.continue_fit), not given")
    context = CheckContext(sessions, limits, owner.user if owner is not None else None)
    checked = (CHECKS.get(kind) or REQUESTS[kind])(spec, upload or Upload(), context)
    if then_predict is not None:
        if spec.family != "fit":
            raise SpecError("--then-predict: only a fit can be followed by a predict job")
        if then_predict <= 0:
            raise SpecError(f"--then-predict: must be > 0 (got {then_predict})", "num_samples")
        limits.check_predict_size(then_predict, checked.predict_rows or 1)
    spec = checked.spec
    if spec.seed is None:  # record the seed so every job can be reproduced later
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    queue = route(spec, lambda: gpu_free(sessions, limits))
    if isinstance(spec, UserMcmcFitSpec) and spec.chains_per_unit is None:
        spec = spec.model_copy(update={"chains_per_unit": _chains_per_unit(sessions, spec, queue,
                                                                           limits)})  # fmt: skip
    created: list[Job] = []
    with sessions() as session:
        if owner is not None:
            owner.check(session, 1 if then_predict is None else 2)
        job = _store(session, checked, spec, queue, limits)
        created.append(job)
        if isinstance(spec, UserMcmcFitSpec):  # its chains run as units of work
            created += add_units(session, job, spec, limits, new_job_id)
        if then_predict is not None:
            created.append(_then_predict(session, spec, job.id, then_predict, checked, limits))
        for row in created:
            row.owner = owner.user if owner is not None else None
        if labels is not None:
            for row in created:
                label_job(session, row, labels, with_name=row is job)
        commit_labelled(session, labels.name if labels is not None else None)
        ready = [(j.id, j.queue, j.priority) for j in created if j.status == JobStatus.QUEUED]
        if job.status == JobStatus.WAITING and checked.depends_on is not None:
            # The fit may have ended since it was checked: settle now (exactly once).
            released = release_dependants(session, checked.depends_on)
            ready += [(r.id, r.queue, r.priority) for r in released]
            session.refresh(job)
    send_or_forget(sessions, ready, created, send)
    log.info("job %s: %s of %s %s on %s", job.id, kind, job.model, job.status, job.queue)
    return [j for j in created if j.parent_id is None]  # an MCMC job's units are its own


def _store(session: Session, checked: Checked, spec: Any, queue: str, limits: Limits) -> Job:
    dataset_id = checked.dataset_id  # a continued fit's: its parent's
    if checked.dataset is not None:
        d = checked.dataset
        dataset_id = store_dataset(
            session, d.content, name=d.name, format=d.format, columns=d.columns,
            num_rows=d.num_rows,
        )  # fmt: skip
    source_id = checked.source_id
    if checked.source is not None:
        source_id = store_source(session, checked.source, filename=spec.model_file)
        spec = spec.model_copy(update={"model_source": source_id})
    job = create_job(
        session,
        status=JobStatus.WAITING if checked.waiting else JobStatus.QUEUED,
        id=new_job_id(),
        kind=spec.family,
        spec=spec.model_dump(mode="json"),
        model=checked.model,
        dataset_id=dataset_id,
        source_id=source_id,
        depends_on=checked.depends_on,
        queue=queue,
        priority=spec.priority,
        total_steps=checked.total_steps,
        max_attempts=limits.max_attempts,
        info=checked.info.dump(),
        continued_from=checked.continued_from,
    )
    job.step = checked.first_step  # progress of a continued fit reads from its parent's step
    return job


def _then_predict(
    session: Session, spec: Any, fit_id: str, num_samples: int, checked: Checked, limits: Limits
) -> Job:
    """The predict job of `--then-predict`: waiting for its fit, routed and ranked like it."""
    predict = PREDICT_KIND[spec.kind](
        from_job=fit_id, num_samples=num_samples, seed=secrets.randbelow(2**31),
        device=spec.device, queue=spec.queue, priority=spec.priority,
    )  # fmt: skip
    return create_job(
        session,
        status=JobStatus.WAITING,
        id=new_job_id(),
        kind=predict.family,
        spec=predict.model_dump(mode="json"),
        model=checked.model,
        depends_on=fit_id,
        queue=route(predict, lambda: idle_gpu_workers(session, limits.worker_alive_s) > 0),
        priority=predict.priority,
        total_steps=1,
        max_attempts=limits.max_attempts,
        info=PredictInfo(rows=checked.predict_rows, num_samples=num_samples).dump(),
    )


def _chains_per_unit(
    sessions: sessionmaker[Session], spec: UserMcmcFitSpec, queue: str, limits: Limits
) -> int:
    """An MCMC job's chains spread over the job slots of its queue's live workers (one unit
    each): a `--concurrency 2` worker on a 2-core host runs two units at once."""
    with sessions() as session:
        slots = sum(max(1, w.slots) for w in live_workers(session, queue, limits.worker_alive_s))
    return -(-spec.chains // max(1, min(slots, spec.chains)))


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def gpu_free(sessions: sessionmaker[Session], limits: Limits) -> bool:
    """Whether a live GPU worker is idle now (device=auto goes to the gpu queue then)."""
    with sessions() as session:
        return idle_gpu_workers(session, limits.worker_alive_s) > 0


def send_or_forget(
    sessions: sessionmaker[Session],
    messages: list[tuple[str, str, int]],
    created: list[Job],
    send: Sender,
) -> None:
    """Send each (job id, queue, priority); if the broker refuses, undo the submission."""
    try:
        for job_id, queue, priority in messages:
            send(job_id, queue, broker_priority(priority))
    except Exception as e:
        _forget(sessions, [j.id for j in created])
        raise InfraError(f"job not submitted: the broker refused it ({e})") from e


def _forget(sessions: sessionmaker[Session], job_ids: list[str]) -> None:
    """Undo a submission whose message could not be sent: its jobs, and datasets only they used."""
    with sessions() as session:
        rows = session.execute(
            select(Job.dataset_id, Job.source_id).where(Job.id.in_(job_ids))
        ).all()
        datasets = {r.dataset_id for r in rows} - {None}
        sources = {r.source_id for r in rows} - {None}
        # dependants first (they reference the fit)
        for job_id in reversed(job_ids):
            session.execute(delete(Job).where(Job.id == job_id))
        for dataset_id in datasets:
            if session.scalar(select(Job.id).where(Job.dataset_id == dataset_id).limit(1)) is None:
                session.execute(delete(Dataset).where(Dataset.id == dataset_id))
        for source_id in sources:
            if session.scalar(select(Job.id).where(Job.source_id == source_id).limit(1)) is None:
                session.execute(delete(ModelSource).where(ModelSource.id == source_id))
        session.commit()
