"""execute_job(): claim a job, run its fit or prediction through inference, store the results."""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import OperationalError

from db.datasets import load_dataset
from db.jobs import Released, claim_job, finish_job, get_checkpoint, get_job, record_progress
from db.models import Dataset, JobStatus
from db.results import get_fitted_state, store_fit_results, store_predict_results
from kiln.errors import Cancelled, InfraError, UserError
from kiln.tables import group_rows, read_csv_bytes
from scheduler.spec import is_library_spec, is_user_spec
from worker.lease import LeaseKeeper
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
        dataset = load_dataset(session, job.dataset_id) if job.dataset_id else None
    log.info("job %s: claimed by %s (attempt %d)", job_id, rt.name, attempt)
    started = time.monotonic()
    info: dict[str, Any] = dict(job.info or {})
    keeper = LeaseKeeper(rt.sessions, job_id, worker=rt.name, lease_s=rt.settings.lease_s)
    try:
        with keeper:
            if job.kind == "predict":
                _run_predict(rt, job_id, job.spec, dataset, info, started)
            elif is_library_spec(job.spec):
                from worker.library import run_library_fit

                run_library_fit(rt, job_id, job.spec, dataset, info, started)
            elif is_user_spec(job.spec):
                from worker.userjobs import run_user_job

                run_user_job(rt, job_id, job.spec, job.source_id, dataset, info, started)
            elif job.kind == "batch":
                from worker.sweep import run_batch

                run_batch(rt, job_id, dataset, info, started)
            elif dataset is None:
                raise UserError(f"job {job_id} has no dataset")
            else:
                _run_fit(rt, job_id, job.spec, dataset.content, dataset.name, info, started)
        return _finish(rt, job_id, attempt, JobStatus.SUCCEEDED)
    except Cancelled:
        log.info("job %s: cancelled", job_id)
        return _finish(rt, job_id, attempt, JobStatus.CANCELLED, "cancelled by the user")
    except UserError as e:
        log.info("job %s: failed: %s", job_id, e)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, str(e))
    except (InfraError, OperationalError) as e:
        if attempt < job.max_attempts:
            log.warning("job %s: attempt %d hit %s; back to the queue", job_id, attempt, e)
            return _finish(rt, job_id, attempt, JobStatus.QUEUED, str(e), requeue=True)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, f"gave up after {attempt}: {e}")
    except Exception:
        # A bug, not the user's input and not the infrastructure: retrying would not help.
        log.exception("job %s: crashed", job_id)
        return _finish(rt, job_id, attempt, JobStatus.FAILED, traceback.format_exc(limit=8))


def _finish(
    rt: Runtime, job_id: str, attempt: int, status: JobStatus, error: str | None = None,
    requeue: bool = False,
) -> Outcome:  # fmt: skip
    with rt.sessions() as session:
        released = finish_job(
            session, job_id, worker=rt.name, attempt=attempt, status=status, error=error,
            requeue=requeue,
        )  # fmt: skip
    return Outcome(status.value, released)


def _run_fit(
    rt: Runtime,
    job_id: str,
    spec: dict[str, Any],
    content: bytes,
    data_name: str,
    info: dict[str, Any],
    started: float,
) -> None:
    from inference.fit import prepare_fit
    from inference.posterior import summarize_posterior

    frame = read_csv_bytes(content, data_name)
    problem = prepare_fit(
        spec["model"], frame, formula=spec["formula"], guide=spec["guide"], seed=spec["seed"],
        priors={k: v for k, v in spec.get("priors", {}).items()}, device=spec["device"],
        init=spec.get("init", "auto"), rows=member_rows(spec),
    )  # fmt: skip

    def summarize() -> tuple[list[Any], dict[str, Any]]:
        return summarize_posterior(
            problem.model, problem.guide, problem.args, problem.kwargs, problem.latent_sites,
            num_samples=spec["num_samples"],
        )  # fmt: skip

    run_svi_job(rt, job_id, spec, problem, info, started, summarize)


def member_rows(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A sweep member's row selection from its spec (None: all rows, once each)."""
    rows = {k: spec.get(k) for k in ("group_by", "group", "bootstrap", "bootstrap_seed")}
    return rows if any(v is not None for v in rows.values()) else None


def run_svi_job(
    rt: Runtime,
    job_id: str,
    spec: dict[str, Any],
    problem: Any,
    info: dict[str, Any],
    started: float,
    summarize: Callable[[], tuple[list[Any], dict[str, Any]]],
    *,
    elbo: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    **svi_options: Any,
) -> None:
    """SVI steps (resuming from a checkpoint if there is one), then the fitted state, guide
    parameters and posterior summaries; `summarize` draws from the fitted guide."""
    from inference.checkpoint import CHECKPOINT_FORMAT
    from inference.state import STATE_FORMAT, dump_state, param_values
    from inference.svi import resolve_elbo, run_svi

    elbo = elbo or resolve_elbo(spec["elbo"], problem.jit_safe)
    with rt.sessions() as session:
        saved = get_checkpoint(session, job_id)
        resume = saved.content if saved is not None else None
        if saved is not None and saved.format != CHECKPOINT_FORMAT:
            log.warning("job %s: checkpoint format %s unknown; starting over", job_id, saved.format)
            resume = None
    if resume is not None:
        log.info("job %s: resuming from its checkpoint at step %d", job_id, saved.step)
    sink = Sink(
        rt.sessions, job_id, worker=rt.name, lease_s=rt.settings.lease_s,
        flush_every_s=rt.settings.flush_every_s, info=info, db_retry_s=rt.settings.db_retry_s,
    )  # fmt: skip
    every = spec.get("checkpoint_every")
    every_s = spec.get("checkpoint_every_s")
    events = run_svi(
        problem.model, problem.guide, getattr(problem, "args", ()),
        getattr(problem, "kwargs", None), steps=steps or spec["steps"], lr=lr or spec["lr"],
        optim=spec["optim"], elbo=elbo, device=problem.device, resume=resume,
        checkpoint_every_steps=rt.settings.checkpoint_every if every is None else every,
        checkpoint_every_s=rt.settings.checkpoint_every_s if every_s is None else every_s,
        **svi_options,
    )  # fmt: skip
    for event in events:
        sink.add(event)
    state = dump_state()  # right away: saving after the guide ran again can fail
    guide_params = param_values()
    sites, draws = summarize()
    info.update(final_loss=sink.final_loss, fit_seconds=round(time.monotonic() - started, 3))
    with rt.sessions() as session:
        store_fit_results(
            session, job_id, sites=sites, draws=draws, guide_params=guide_params, state=state,
            state_format=STATE_FORMAT,
            guide=spec.get("guide_function") or spec.get("guide") or "library",
        )  # fmt: skip
        job = get_job(session, job_id)
        job.info = info
        session.commit()


def _run_predict(
    rt: Runtime,
    job_id: str,
    spec: dict[str, Any],
    new_data: Dataset | None,
    info: dict[str, Any],
    started: float,
) -> None:
    """Rebuild the fit's guide from its stored state and store predictive draws by site."""
    from inference.posterior import summarize_draws
    from inference.predict import predict
    from inference.state import STATE_FORMAT

    fit_id = spec["from_job"]
    with rt.sessions() as session:
        fit = get_job(session, fit_id)
        if fit.status != JobStatus.SUCCEEDED:
            raise UserError(f"its fit {fit_id} is {fit.status}, not succeeded")
        state = get_fitted_state(session, fit_id)
        if state is None:
            raise UserError(f"fit {fit_id} stored no fitted state to predict from")
        fit_data = load_dataset(session, fit.dataset_id) if fit.dataset_id else None
        fit_spec, state_bytes = dict(fit.spec), state.content
    if is_library_spec(fit_spec):
        from worker.library import run_library_predict

        run_library_predict(rt, job_id, spec, fit_spec, fit_data, state, info, started)
        return
    if fit_data is None:
        raise UserError(f"fit {fit_id} has no stored data")
    content = fit_data.content
    if state.format != STATE_FORMAT:
        raise UserError(f"fit {fit_id}: fitted state format {state.format!r} is not supported")
    fit_frame = read_csv_bytes(content, fit_data.name)
    if fit_spec.get("group_by"):  # a sweep member fitted on one group: predict for its rows
        fit_frame = group_rows(fit_frame, fit_spec["group_by"], fit_spec["group"])
    prediction = predict(
        fit_spec["model"], fit_frame,
        formula=fit_spec["formula"], guide=fit_spec["guide"], state=state_bytes,
        num_samples=spec["num_samples"], seed=spec["seed"],
        priors=fit_spec.get("priors") or {},
        new_frame=read_csv_bytes(new_data.content, new_data.name) if new_data else None,
        device=spec["device"],
    )  # fmt: skip
    info.update(prediction.info)
    info.update(from_job=fit_id, num_samples=spec["num_samples"],
                predict_seconds=round(time.monotonic() - started, 3))  # fmt: skip
    params = [
        summarize_draws(site, values)
        for site, (kind, values) in prediction.sites.items()
        if kind == "posterior"
    ]
    with rt.sessions() as session:
        store_predict_results(session, job_id, prediction.sites, params)
        session.flush()
        record_progress(session, job_id, worker=rt.name, losses=[], lease_s=rt.settings.lease_s,
                        info=info, step=1)  # fmt: skip
