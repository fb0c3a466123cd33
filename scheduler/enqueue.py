"""submit_fit() / submit_predict(): validate everything, write the rows in one commit, then send."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import load_dataset, store_dataset
from db.jobs import create_job, get_job, idle_gpu_workers, release_dependants
from db.models import Dataset, Job, JobStatus, ModelSource
from db.sources import store_source
from kiln.catalog import LINREG_RESERVED_SITES
from kiln.errors import DataError, InfraError, SpecError
from kiln.library import DataRef, get_card, parse_options
from kiln.tables import build_design, read_csv_bytes
from kiln.userdata import describe, parse_user_data
from scheduler.routing import broker_priority, route
from scheduler.spec import (
    FitSpec,
    LibraryFitSpec,
    PredictSpec,
    UserFitSpec,
    is_library_spec,
    is_user_spec,
)
from scheduler.usermodel import check_data_names, check_source

log = logging.getLogger(__name__)

# send(job_id, queue, broker_priority): puts the job id on the broker, raising on failure.
Sender = Callable[[str, str, int], None]


def read_data_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a data file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"data file {path} is {size} bytes; the limit is {max_bytes}")
    return path.read_bytes()


def check_fit(spec: FitSpec, content: bytes, data_name: str, max_steps: int) -> dict[str, object]:
    """Everything about a fit that can be checked before anything is written.

    Returns what the job records about its data (rows used and dropped, terms).
    """
    if spec.steps > max_steps:
        raise SpecError(f"spec.steps: at most {max_steps} (got {spec.steps})", field="steps")
    if spec.device == "cuda" and spec.queue == "cpu":
        raise SpecError("device cuda needs the gpu queue (got --queue cpu)", field="queue")
    frame = read_csv_bytes(content, data_name)
    design = build_design(frame, spec.formula)
    sites = (*design.terms, "sigma")
    clash = sorted(set(design.terms) & set(LINREG_RESERVED_SITES))
    if clash:
        raise SpecError(f"formula term `{clash[0]}` clashes with a model site; rename the column")
    unknown = sorted(set(spec.priors) - set(sites))
    if unknown:
        raise SpecError(
            f"prior for `{unknown[0]}`: no such site (sites: {', '.join(sites)})", field="priors"
        )
    return {
        "rows_used": design.rows_used,
        "rows_dropped": design.rows_dropped,
        "terms": list(design.terms),
        "response": design.response,
        "columns": [str(c) for c in frame.columns],
        "num_rows": len(frame),
    }


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps from the settings that a submission is checked against."""

    max_steps: int
    max_attempts: int
    max_predict_samples: int
    max_predict_values: int
    worker_alive_s: float = 20.0  # for routing device=auto to a GPU worker that is free
    max_sweep_members: int = 20_000
    sweep_max_batch: int = 1024
    sweep_memory_mb: float = 512.0

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_steps=settings.max_steps,
            max_attempts=settings.max_attempts,
            max_predict_samples=settings.max_predict_samples,
            max_predict_values=settings.max_predict_values,
            worker_alive_s=settings.worker_alive_s,
            max_sweep_members=settings.max_sweep_members,
            sweep_max_batch=settings.sweep_max_batch,
            sweep_memory_mb=settings.sweep_memory_mb,
        )


def check_predict_size(num_samples: int, rows: int, limits: Limits) -> None:
    """A predict job's draws must fit the configured caps (KILN_MAX_PREDICT_*)."""
    if num_samples > limits.max_predict_samples:
        raise SpecError(
            f"spec.num_samples: at most {limits.max_predict_samples} (got {num_samples};"
            " KILN_MAX_PREDICT_SAMPLES sets the cap)",
            field="num_samples",
        )
    if num_samples * rows > limits.max_predict_values:
        raise SpecError(
            f"spec.num_samples: {num_samples} draws x {rows} rows is {num_samples * rows} values"
            f" per site, above the cap of {limits.max_predict_values}"
            " (KILN_MAX_PREDICT_VALUES); draw fewer samples or predict fewer rows",
            field="num_samples",
        )


def submit_fit(
    sessions: sessionmaker[Session],
    spec: FitSpec,
    content: bytes,
    *,
    data_name: str,
    send: Sender,
    limits: Limits,
    then_predict: int | None = None,
) -> list[Job]:
    """Check the fit, store dataset + queued job in one transaction, then send its id.

    With `then_predict`, a predict job of that many samples waiting for the fit is stored in
    the same transaction (it is sent when the fit succeeds). Returns the jobs created.

    Bad input raises a UserError before anything is written. If the broker refuses the
    message, the job rows (and a dataset only they used) are removed again and InfraError raised.
    """
    facts = check_fit(spec, content, data_name, limits.max_steps)
    if then_predict is not None:
        if then_predict <= 0:
            raise SpecError(f"--then-predict: must be > 0 (got {then_predict})", "num_samples")
        check_predict_size(then_predict, int(facts["rows_used"]), limits)  # type: ignore[call-overload]
    if spec.seed is None:  # record the seed so every fit can be reproduced later
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    queue = route(spec, lambda: _gpu_free(sessions, limits))
    job_id = new_job_id()
    created: list[Job] = []
    with sessions() as session:
        dataset_id = store_dataset(
            session,
            content,
            name=Path(data_name).name,
            format="csv",
            columns=list(facts.pop("columns")),  # type: ignore[call-overload]
            num_rows=int(facts.pop("num_rows")),  # type: ignore[call-overload]
        )
        job = create_job(
            session,
            id=job_id,
            kind=spec.kind,
            spec=spec.model_dump(mode="json"),
            model=spec.model,
            dataset_id=dataset_id,
            queue=queue,
            priority=spec.priority,
            total_steps=spec.steps,
            max_attempts=limits.max_attempts,
        )
        job.info = {"data": facts}
        created.append(job)
        if then_predict is not None:
            created.append(_then_predict(session, spec, job_id, then_predict, limits,
                                         rows=facts["rows_used"]))  # fmt: skip
        session.commit()
    _send_or_forget(sessions, [(job_id, queue, spec.priority)], created, send)
    log.info("job %s: queued on %s (priority %d)", job_id, queue, spec.priority)
    return created


def submit_user_fit(
    sessions: sessionmaker[Session],
    spec: UserFitSpec,
    source: str,
    content: bytes,
    *,
    data_name: str,
    send: Sender,
    limits: Limits,
) -> Job:
    """Check a user's model file against its data, store source + data + job, then send.

    The file is parsed, not run (scheduler.usermodel): a syntax error, a missing function and
    data names the model does not take are refused here, before anything is written.
    """
    if spec.total_steps > limits.max_steps:
        raise SpecError(
            f"spec: {spec.total_steps} steps (chains x (warmup + samples) for MCMC); at most"
            f" {limits.max_steps}",
            field="steps",
        )
    if spec.device == "cuda" and spec.queue == "cpu":
        raise SpecError("device cuda needs the gpu queue (got --queue cpu)", field="queue")
    if spec.is_mcmc and spec.guide_function:
        raise SpecError(f"--guide is for SVI; method {spec.method} needs no guide", "guide")
    functions = [spec.model_function, *([spec.guide_function] if spec.guide_function else [])]
    signatures = check_source(source, spec.model_file, functions)
    data_format, data = parse_user_data(content, Path(data_name).name)
    for signature in signatures.values():
        check_data_names(signature, data, Path(data_name).name)
    updates: dict[str, object] = {}
    if spec.seed is None:
        updates["seed"] = secrets.randbelow(2**31)
    queue = route(spec, lambda: _gpu_free(sessions, limits))
    job_id = new_job_id()
    with sessions() as session:
        updates["model_source"] = store_source(session, source, filename=spec.model_file)
        spec = spec.model_copy(update=updates)
        dataset_id = store_dataset(
            session, content, name=Path(data_name).name, format=data_format,
            columns=list(data), num_rows=_rows(data),
        )  # fmt: skip
        job = create_job(
            session, id=job_id, kind=spec.kind, spec=spec.model_dump(mode="json"),
            model=spec.model, dataset_id=dataset_id, source_id=spec.model_source, queue=queue,
            priority=spec.priority, total_steps=spec.total_steps,
            max_attempts=limits.max_attempts,
        )  # fmt: skip
        job.info = {"data": {"format": data_format, "shapes": describe(data)}}
        session.commit()
    _send_or_forget(sessions, [(job_id, queue, spec.priority)], [job], send)
    log.info("job %s: %s of %s queued on %s", job_id, spec.method, spec.model, queue)
    return job


def submit_library_fit(
    sessions: sessionmaker[Session],
    spec: LibraryFitSpec,
    data: DataRef,
    *,
    send: Sender,
    limits: Limits,
    then_predict: int | None = None,
) -> list[Job]:
    """Check a library model's options and data (its card), store dataset + job, then send.

    `data.content` (a CSV file, or an MNIST folder packed as .npz) is stored content-addressed;
    a built-in data set (`digits`) is stored by name only. With `then_predict`, a predict job of
    that many draws waits for the fit.
    """
    card = get_card(spec.model)
    options = parse_options(card, spec.options)
    facts = card.check(options, data)
    if spec.device == "cuda" and spec.queue == "cpu":
        raise SpecError("device cuda needs the gpu queue (got --queue cpu)", field="queue")
    if then_predict is not None and not 0 < then_predict <= limits.max_predict_samples:
        raise SpecError(
            f"--then-predict: between 1 and {limits.max_predict_samples} (got {then_predict})",
            field="num_samples",
        )
    updates: dict[str, object] = {"options": options}
    if spec.seed is None:
        updates["seed"] = secrets.randbelow(2**31)
    spec = spec.model_copy(update=updates)
    queue = route(spec, lambda: _gpu_free(sessions, limits))
    job_id = new_job_id()
    created: list[Job] = []
    with sessions() as session:
        dataset_id = None
        if data.content is not None:
            dataset_id = store_dataset(
                session, data.content, name=data.name, format=data.kind,
                columns=[str(c) for c in facts.get("columns", [])],
                num_rows=int(facts.get("rows", 0) or 0),
            )  # fmt: skip
        job = create_job(
            session, id=job_id, kind=spec.kind, spec=spec.model_dump(mode="json"),
            model=spec.model, dataset_id=dataset_id, queue=queue, priority=spec.priority,
            total_steps=int(facts.get("steps", 0) or 0), max_attempts=limits.max_attempts,
        )  # fmt: skip
        job.info = {"data": _plain(facts)}
        created.append(job)
        if then_predict is not None:
            created.append(_then_predict(session, spec, job_id, then_predict, limits, rows=None))
        session.commit()
    _send_or_forget(sessions, [(job_id, queue, spec.priority)], created, send)
    log.info("job %s: %s on %s queued on %s", job_id, spec.model, data.name, queue)
    return created


def _plain(value: Any) -> Any:
    """Facts made JSON-safe (numpy numbers and tuples to Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


def _rows(data: dict[str, object]) -> int:
    """The length of the longest list in the data (a CSV's row count)."""
    return max((len(v) for v in data.values() if isinstance(v, list)), default=1)


def submit_predict(
    sessions: sessionmaker[Session],
    spec: PredictSpec,
    content: bytes | None,
    *,
    data_name: str | None,
    send: Sender,
    limits: Limits,
) -> Job:
    """Check and store a predict job; send it now if its fit has succeeded, else it waits.

    `content` is a CSV of new rows (None: the fit's own rows). Raises NotFound for an unknown
    fit, SpecError for a job that is not a fit or a fit that failed, DataError for new data
    that lacks a column the formula needs; nothing is written then.
    """
    with sessions() as session:
        fit = get_job(session, spec.from_job)
        if fit.kind != "fit":
            raise SpecError(
                f"--from {fit.id}: that is a {fit.kind} job; predict needs a fit job", "from_job"
            )
        if is_user_spec(fit.spec):
            raise SpecError(
                f"--from {fit.id}: a fit of a user model ({fit.model}); predict jobs support"
                " built-in models so far (an MCMC or SVI fit's draws are in `jobs samples`)",
                field="from_job",
            )
        if fit.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise SpecError(
                f"--from {fit.id}: that fit {fit.status}; there is nothing to predict from",
                field="from_job",
            )
        fit_content = load_dataset(session, fit.dataset_id or "").content if content else b""
    if is_library_spec(fit.spec):
        if content is not None:
            raise SpecError(
                f"--data: a {fit.model} fit predicts for its own held-out data; new data is"
                " not supported for library models yet",
                field="data",
            )
        rows: int | None = None
        check_predict_size(spec.num_samples, 1, limits)
    elif content is None:
        rows = int((fit.info or {}).get("data", {}).get("rows_used") or 0)
        check_predict_size(spec.num_samples, rows, limits)
    else:
        fit_frame = read_csv_bytes(fit_content)
        frame = read_csv_bytes(content, data_name or "data")
        design = build_design(frame, fit.spec["formula"], reference=fit_frame,
                              require_response=False)  # fmt: skip
        rows = design.rows_used
        check_predict_size(spec.num_samples, rows, limits)
    if spec.seed is None:
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    spec = spec.model_copy(update={"from_job": fit.id})
    with sessions() as session:
        dataset_id = None
        if content is not None:
            dataset_id = store_dataset(
                session, content, name=Path(data_name or "data.csv").name, format="csv",
                columns=[str(c) for c in frame.columns], num_rows=len(frame),
            )  # fmt: skip
        job = _create_predict(
            session, spec, fit_model=fit.model, dataset_id=dataset_id,
            waiting=fit.status != JobStatus.SUCCEEDED, limits=limits, rows=rows,
        )  # fmt: skip
        session.commit()
        if job.status == JobStatus.WAITING:
            # The fit may have ended since we looked: settle now (exactly once, see db.jobs).
            ready = [(r.id, r.queue, r.priority) for r in release_dependants(session, fit.id)]
            session.refresh(job)
        else:
            ready = [(job.id, job.queue, job.priority)]
    _send_or_forget(sessions, ready, [job], send)
    log.info("job %s: predict from %s, %s", job.id, fit.id, job.status)
    return job


def _create_predict(
    session: Session, spec: PredictSpec, *, fit_model: str, dataset_id: str | None,
    waiting: bool, limits: Limits, rows: object,
) -> Job:  # fmt: skip
    job = create_job(
        session,
        status=JobStatus.WAITING if waiting else JobStatus.QUEUED,
        id=new_job_id(),
        kind=spec.kind,
        spec=spec.model_dump(mode="json"),
        model=fit_model,
        dataset_id=dataset_id,
        depends_on=spec.from_job,
        queue=route(spec, lambda: idle_gpu_workers(session, limits.worker_alive_s) > 0),
        priority=spec.priority,
        total_steps=1,
        max_attempts=limits.max_attempts,
    )
    job.info = {"rows": rows, "new_data": dataset_id is not None}
    return job


def _then_predict(
    session: Session, spec: FitSpec | LibraryFitSpec, fit_id: str, num_samples: int,
    limits: Limits, rows: object,
) -> Job:  # fmt: skip
    """The predict job of `--then-predict`: waiting for its fit, routed and ranked like it."""
    predict = PredictSpec(
        from_job=fit_id, num_samples=num_samples, seed=secrets.randbelow(2**31),
        device=spec.device, queue=spec.queue, priority=spec.priority,
    )  # fmt: skip
    return _create_predict(session, predict, fit_model=spec.model, dataset_id=None,
                           waiting=True, limits=limits, rows=rows)  # fmt: skip


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def _gpu_free(sessions: sessionmaker[Session], limits: Limits) -> bool:
    with sessions() as session:
        return idle_gpu_workers(session, limits.worker_alive_s) > 0


def _send_or_forget(
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
