"""Library models (bnn-classifier, forecast-*, vae, hmm): mini-batched fits with metrics by
epoch, and predictions from the stored fitted state in a fresh process."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from db.jobs import get_job, record_progress
from db.models import Dataset, FittedState
from db.results import add_metrics, store_predict_results
from kiln.errors import UserError
from kiln.library import DataRef, get_card, parse_options
from worker.run import run_svi_job
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def data_ref(spec: dict[str, Any], dataset: Dataset | None) -> DataRef:
    if spec["data_kind"] == "builtin":
        return DataRef("builtin", spec["data"])
    if dataset is None:
        raise UserError(f"the {spec['model']} job's data `{spec['data']}` is not stored")
    return DataRef(spec["data_kind"], dataset.name, dataset.content)


def _prepare(spec: dict[str, Any], dataset: Dataset | None) -> Any:
    from inference.fit import resolve_device
    from inference.models import LIBRARY

    options = parse_options(get_card(spec["model"]), spec["options"])
    return LIBRARY[spec["model"]].prepare(
        options, data_ref(spec, dataset), seed=spec["seed"], device=resolve_device(spec["device"])
    )


def run_library_fit(
    rt: Runtime, job_id: str, spec: dict[str, Any], dataset: Dataset | None,
    info: dict[str, Any], started: float,
) -> None:  # fmt: skip
    from inference.library import Problem

    problem: Problem = _prepare(spec, dataset)
    info.update(problem.info)
    info.update(epochs=problem.epochs, steps_per_epoch=problem.steps_per_epoch)
    with rt.sessions() as session:
        job = get_job(session, job_id)
        if job.total_steps != problem.steps:
            job.total_steps = problem.steps
            session.commit()

    def summarize() -> tuple[list[Any], dict[str, np.ndarray]]:
        from inference.posterior import summarize_draws
        from inference.userfit import draw_sites

        if not problem.latent_sites:
            return [], {}
        args, kwargs = problem.batch(0)
        if args:
            raise UserError(f"{spec['model']}: batches must be keyword arguments")
        draws = draw_sites(
            problem.model, problem.guide, kwargs, problem.latent_sites, spec["num_samples"]
        )
        return [summarize_draws(site, values) for site, values in draws.items()], draws

    run_svi_job(
        rt, job_id, spec, problem, info, started, summarize, elbo=problem.elbo,
        steps=problem.steps, lr=float(spec["options"].get("lr", 0.01)), batch=problem.batch,
        steps_per_epoch=problem.steps_per_epoch, evaluate=problem.evaluate,
        loss_items=problem.loss_items, max_plate_nesting=problem.max_plate_nesting,
    )  # fmt: skip


def run_library_predict(
    rt: Runtime, job_id: str, spec: dict[str, Any], fit_spec: dict[str, Any],
    fit_data: Dataset | None, state: FittedState, info: dict[str, Any], started: float,
) -> None:  # fmt: skip
    """Rebuild the fit's problem (same seed: same split), load its fitted state, predict."""
    from inference.models import LIBRARY
    from inference.posterior import summarize_draws
    from inference.state import STATE_FORMAT, load_state

    if state.format != STATE_FORMAT:
        raise UserError(f"fitted state format {state.format!r} is not supported")
    problem = _prepare(fit_spec, fit_data)
    load_state(state.content, map_location=problem.device)
    prediction = LIBRARY[fit_spec["model"]].predict(
        problem, num_samples=spec["num_samples"], seed=spec["seed"]
    )
    info.update(prediction.info)
    info.update(
        from_job=spec["from_job"], num_samples=spec["num_samples"], metrics=prediction.metrics,
        predict_seconds=round(time.monotonic() - started, 3),
    )  # fmt: skip
    params = [
        summarize_draws(site, values)
        for site, (kind, values) in prediction.sites.items()
        if kind == "posterior"
    ]
    with rt.sessions() as session:
        store_predict_results(session, job_id, prediction.sites, params)
        add_metrics(session, job_id, prediction.metrics)
        session.flush()
        record_progress(session, job_id, worker=rt.name, losses=[], lease_s=rt.settings.lease_s,
                        info=info, step=1)  # fmt: skip
    log.info("job %s: %s prediction, metrics %s", job_id, fit_spec["model"], prediction.metrics)
