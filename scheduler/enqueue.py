"""submit_fit(): validate everything, write the dataset and the job row in one commit, then send."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import store_dataset
from db.jobs import create_job
from db.models import Dataset, Job
from kiln.catalog import LINREG_RESERVED_SITES
from kiln.errors import DataError, InfraError, SpecError
from kiln.tables import build_design, read_csv_bytes
from scheduler.routing import broker_priority, route
from scheduler.spec import FitSpec

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


def submit_fit(
    sessions: sessionmaker[Session],
    spec: FitSpec,
    content: bytes,
    *,
    data_name: str,
    send: Sender,
    max_steps: int,
    max_attempts: int,
) -> Job:
    """Check the fit, store dataset + queued job in one transaction, then send its id.

    Bad input raises a UserError before anything is written. If the broker refuses the
    message, the job row (and a dataset only it used) is removed again and InfraError raised.
    """
    facts = check_fit(spec, content, data_name, max_steps)
    if spec.seed is None:  # record the seed so every fit can be reproduced later
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    queue = route(spec)
    job_id = uuid.uuid4().hex[:16]
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
            max_attempts=max_attempts,
        )
        job.info = {"data": facts}
        session.commit()
    try:
        send(job_id, queue, broker_priority(spec.priority))
    except Exception as e:
        _forget(sessions, job_id, dataset_id)
        raise InfraError(f"job not submitted: the broker refused it ({e})") from e
    log.info("job %s: queued on %s (priority %d)", job_id, queue, spec.priority)
    return job


def _forget(sessions: sessionmaker[Session], job_id: str, dataset_id: str) -> None:
    """Undo a submission whose message could not be sent."""
    with sessions() as session:
        session.execute(delete(Job).where(Job.id == job_id))
        if session.scalar(select(Job.id).where(Job.dataset_id == dataset_id).limit(1)) is None:
            session.execute(delete(Dataset).where(Dataset.id == dataset_id))
        session.commit()
