"""Library models (bnn-classifier, forecast-*, vae, hmm): mini-batched fits with metrics by
epoch, and predictions from the stored fitted state in a fresh process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.jobs import get_job
from db.results import add_metrics
from inference.events import Event
from inference.fit import resolve_device
from inference.library import LibraryPrediction, Problem
from inference.loglik import LogLik
from inference.models import LIBRARY
from inference.posterior import summarize_draws
from inference.state import load_state
from inference.userfit import draw_sites
from kiln.errors import UserError
from kiln.jobinfo import SviInfo
from kiln.library import DataRef, get_card, parse_options
from kiln.specs import LibraryFitSpec, LibraryPredictSpec
from worker.context import DataBlob, JobContext
from worker.runners.base import Runner
from worker.runners.fitted import load_fit, store_prediction
from worker.runners.loglik import add_loglik_rows, loglik_rows
from worker.runners.svi import Summary, SviJob, SviRunner

log = logging.getLogger(__name__)


def prepare_problem(spec: LibraryFitSpec, data: DataBlob | None) -> Problem:
    """The fit's problem: the same seed gives the same split and batches on any worker."""
    if spec.data_kind == "builtin":
        ref = DataRef("builtin", spec.data)
    elif data is None:
        raise UserError(f"the {spec.model} job's data `{spec.data}` is not stored")
    else:
        ref = DataRef(spec.data_kind, data.name, data.content)
    options = parse_options(get_card(spec.model), dict(spec.options))
    assert spec.seed is not None
    return LIBRARY[spec.model].prepare(
        options, ref, seed=spec.seed, device=resolve_device(spec.device)
    )


class LibraryFit(SviRunner[LibraryFitSpec]):
    kind = "library_fit"

    def prepare(self, ctx: JobContext[LibraryFitSpec]) -> SviJob:
        spec = ctx.spec
        problem = prepare_problem(spec, ctx.data)
        info = ctx.info
        assert isinstance(info, SviInfo)
        info.add_facts(dict(problem.info))
        info.epochs, info.steps_per_epoch = problem.epochs, problem.steps_per_epoch
        # a continued fit runs its parent's problem on to its own end (batches by step)
        steps = spec.continued.end if spec.continued is not None else problem.steps
        with ctx.sessions() as session:
            job = get_job(session, ctx.job_id)
            if job.total_steps != steps:
                job.total_steps = steps
                session.commit()

        def summarize() -> Summary:
            if not problem.latent_sites:
                return [], {}
            args, kwargs = problem.batch(0)
            if args:
                raise UserError(f"{spec.model}: batches must be keyword arguments")
            draws = draw_sites(
                problem.model, problem.guide, kwargs, problem.latent_sites, spec.num_samples
            )
            return [summarize_draws(site, values) for site, values in draws.items()], draws

        options = {
            "batch": problem.batch, "steps_per_epoch": problem.steps_per_epoch,
            "evaluate": problem.evaluate, "loss_items": problem.loss_items,
            "max_plate_nesting": problem.max_plate_nesting,
        }  # fmt: skip
        lr = float(spec.options.get("lr", 0.01))
        return SviJob(problem, summarize, steps, lr, problem.elbo, "library", options)

    def run(self, ctx: JobContext[LibraryFitSpec], job: SviJob) -> Iterator[Event]:
        """The fit, then the pointwise log-likelihood of its training items over posterior
        draws (the stored draws where it stores some), for `compare`."""
        yield from super().run(ctx, job)
        spec = ctx.spec
        assert spec.seed is not None
        found = LIBRARY[spec.model].log_likelihood(
            job.problem, job.summary[1], num_samples=spec.num_samples, seed=spec.seed
        )
        job.extra_rows, facts = loglik_rows(found)
        ctx.info.add_facts(facts)

    def store(self, ctx: JobContext[LibraryFitSpec], job: SviJob, session: Session) -> None:
        super().store(ctx, job, session)
        add_loglik_rows(session, ctx.job_id, job.extra_rows, len(job.summary[1]))


@dataclass
class _Predict:
    fit_spec: LibraryFitSpec
    fit_data: DataBlob | None
    state: bytes
    prediction: LibraryPrediction | None = None


class LibraryPredict(Runner[LibraryPredictSpec, _Predict]):
    """Rebuild the fit's problem (same seed: same split), load its fitted state, predict."""

    kind = "library_predict"

    def prepare(self, ctx: JobContext[LibraryPredictSpec]) -> _Predict:
        fit = load_fit(ctx, LibraryFitSpec)
        return _Predict(fit.spec, fit.data, fit.state or b"")

    def run(self, ctx: JobContext[LibraryPredictSpec], p: _Predict) -> Any:
        problem = prepare_problem(p.fit_spec, p.fit_data)
        load_state(p.state, map_location=problem.device)
        assert ctx.spec.seed is not None
        p.prediction = LIBRARY[p.fit_spec.model].predict(
            problem, num_samples=ctx.spec.num_samples, seed=ctx.spec.seed
        )
        return iter(())

    def store(self, ctx: JobContext[LibraryPredictSpec], p: _Predict, session: Session) -> None:
        """The prediction's sites and metrics, then the pointwise log-likelihood of its items
        (the rows and caps of a fit's, after the sites) or the note saying why there is none."""
        prediction = p.prediction
        assert prediction is not None
        store_prediction(ctx, session, prediction.sites, dict(prediction.info))
        found = prediction.log_lik or LogLik(
            note=f"{p.fit_spec.model}'s predict computes no pointwise log-likelihood"
        )
        rows, facts = loglik_rows(found)
        ctx.info.add_facts(facts)
        add_loglik_rows(session, ctx.job_id, rows, len(prediction.sites))
        add_metrics(session, ctx.job_id, prediction.metrics)
        ctx.info.metrics = {k: float(v) for k, v in prediction.metrics.items()}
        log.info("job %s: %s prediction, metrics %s", ctx.job_id, p.fit_spec.model,
                 prediction.metrics)  # fmt: skip
