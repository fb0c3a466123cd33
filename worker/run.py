"""execute_job(): claim a job, parse its spec once, run its kind's runner, finish it one way."""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.claims import claim_job
from db.datasets import load_dataset
from db.finish import Released, finish_job
from db.joblogs import log_state
from db.jobs import get_job
from db.models import JobStatus
from kiln.errors import Cancelled, InfraError, UserError
from kiln.jobinfo import info_for
from kiln.logs import job_context
from kiln.redact import redact, secret_values
from kiln.specs import BaseSpec, parse_job_spec
from worker.context import DataBlob, JobContext
from worker.joblog import JobLog, capturing, write_rest
from worker.lease import LeaseKeeper
from worker.runners import RUNNERS
from worker.runtime import Runtime
from worker.sink import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended (or `skipped`), and the jobs waiting for it that are now to be sent."""

    status: str
    released: list[Released] = field(default_factory=list)


def execute_job(rt: Runtime, job_id: str) -> Outcome:
    """Run one job to its end.

    User errors fail the job for good; infrastructure errors put it back to queued (the caller
    re-sends it) until it has used its attempts.
    """
    with rt.sessions() as session:
        attempt = claim_job(
            session, job_id, worker=rt.name, host=rt.host, pid=os.getpid(),
            device=rt.device, lease_s=rt.settings.lease_s,
        )  # fmt: skip
        if attempt is None:
            log.info("job %s: not claimable by %s (taken, finished or cancelled)", job_id, rt.name)
            return Outcome("skipped")
        job = get_job(session, job_id)
        raw_spec, raw_info, max_attempts = dict(job.spec), job.info, job.max_attempts
        source_id, dataset_id = job.source_id, job.dataset_id
        d = load_dataset(session, dataset_id) if dataset_id else None
        data = DataBlob(d.name, d.format, bytes(d.content)) if d is not None else None
        cap = rt.settings.job_log_bytes
        joblog = JobLog(job_id, cap, _secrets(rt), log_state(session, job_id, cap))
    # The job's own log (`kiln logs`) takes this job's lines and warnings from here on.
    with job_context(job_id), capturing(joblog):
        log.info("job %s: claimed by %s (attempt %d)", job_id, rt.name, attempt)
        return _claimed(rt, job_id, attempt, raw_spec, raw_info, max_attempts, source_id, data)


def _claimed(
    rt: Runtime, job_id: str, attempt: int, raw_spec: dict[str, Any], raw_info: Any,
    max_attempts: int, source_id: str | None, data: DataBlob | None,
) -> Outcome:  # fmt: skip
    try:
        spec: BaseSpec = parse_job_spec(raw_spec)
    except UserError as e:
        log.info("job %s: failed: its stored spec is invalid: %s", job_id, e)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, f"its stored spec is invalid: {e}")
    info = info_for(str(getattr(spec, "kind", "")), raw_info)
    ctx = JobContext(job_id, spec, attempt, rt, info, data, source_id)
    keeper = LeaseKeeper(rt.sessions, job_id, worker=rt.name, lease_s=rt.settings.lease_s)
    try:
        with keeper:
            return _run(ctx)
    except Cancelled:
        log.info("job %s: cancelled", job_id)
        return _finish(rt, job_id, attempt, JobStatus.CANCELLED, "cancelled by the user", ctx)
    except UserError as e:
        log.info("job %s: failed: %s", job_id, e)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, str(e), ctx)
    except (InfraError, OperationalError) as e:
        if attempt < max_attempts:
            log.warning("job %s: attempt %d hit %s; back to the queue", job_id, attempt, e)
            return _finish(rt, job_id, attempt, JobStatus.QUEUED, str(e), ctx, requeue=True)
        log.warning("job %s: failed: gave up after attempt %d: %s", job_id, attempt, e)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, f"gave up after {attempt}: {e}", ctx)
    except Exception:
        # A bug, not the user's input and not the infrastructure: retrying would not help.
        log.exception("job %s: crashed", job_id)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, traceback.format_exc(limit=8), ctx)


def _run(ctx: JobContext[BaseSpec]) -> Outcome:
    """The kind's runner: prepare, run (its events through the Sink), then store the results
    and the final status in one transaction."""
    runner = RUNNERS[str(getattr(ctx.spec, "kind", ""))]
    prepared = runner.prepare(ctx)
    sink = Sink.for_job(ctx, lambda session, step: runner.on_flush(ctx, session, step))
    events = runner.run(ctx, prepared)
    try:
        for event in events:
            sink.add(event)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a cancel or a lost lease ends the run (and any processes it started)
    with ctx.sessions() as session:
        runner.store(ctx, prepared, session)
        _complete_progress(session, ctx.job_id)
        log.info("job %s: succeeded in %.1f s", ctx.job_id, ctx.seconds())
        write_rest(session)
        released = finish_job(
            session, ctx.job_id, worker=ctx.worker, attempt=ctx.attempt,
            status=JobStatus.SUCCEEDED, info=_redacted(ctx.info.dump(), _secrets(ctx.rt)),
        )  # fmt: skip
    return Outcome(JobStatus.SUCCEEDED.value, released)


def _complete_progress(session: Session, job_id: str) -> None:
    job = get_job(session, job_id)
    job.step = job.total_steps


def _finish(
    rt: Runtime, job_id: str, attempt: int, status: JobStatus, error: str | None = None,
    ctx: JobContext[BaseSpec] | None = None, requeue: bool = False,
) -> Outcome:  # fmt: skip
    """End the attempt. What is stored is redacted first: a model's error text (or a note) that
    quotes a URL with a password, the worker's own database URL say, keeps only `***`."""
    secrets = _secrets(rt)
    info = _redacted(ctx.info.dump(), secrets) if ctx is not None else None
    with rt.sessions() as session:
        write_rest(session)
        released = finish_job(
            session, job_id, worker=rt.name, attempt=attempt, status=status,
            error=redact(error, secrets) if error is not None else None, requeue=requeue,
            info=info,
        )  # fmt: skip
    return Outcome(status.value, released)


def _redacted(info: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, secrets)
        if isinstance(value, dict):
            return {walk(k): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    cleaned: dict[str, Any] = walk(info)
    return cleaned


def _secrets(rt: Runtime) -> list[str]:
    """What this worker holds that a job's stored text must not: secret-named variables and
    the passwords of its database and broker URLs."""
    return secret_values(os.environ, [rt.settings.database_url, rt.settings.broker_url])
