"""The linreg fit and its predict job: a CSV and a formula, the built-in regression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from inference.fit import prepare_fit
from inference.posterior import summarize_posterior
from inference.predict import Prediction, predict
from kiln.errors import UserError
from kiln.specs import FitSpec, PredictSpec
from kiln.tables import group_rows, read_csv_bytes
from worker.context import DataBlob, JobContext
from worker.runners.base import Runner
from worker.runners.fitted import load_fit, store_prediction
from worker.runners.svi import Summary, SviJob, SviRunner


def _data(ctx: JobContext[Any]) -> DataBlob:
    if ctx.data is None:
        raise UserError(f"job {ctx.job_id} has no dataset")
    return ctx.data


class LinregFit(SviRunner[FitSpec]):
    kind = "linreg_fit"

    def prepare(self, ctx: JobContext[FitSpec]) -> SviJob:
        spec = ctx.spec
        data = _data(ctx)
        assert spec.seed is not None  # the submitter records one
        problem = prepare_fit(
            spec.model, read_csv_bytes(data.content, data.name), formula=spec.formula,
            guide=spec.guide, seed=spec.seed,
            priors={k: v.model_dump() for k, v in spec.priors.items()},
            device=spec.device, init=spec.init, rows=spec.rows,
        )  # fmt: skip

        def summarize() -> Summary:
            sites, draws = summarize_posterior(
                problem.model, problem.guide, problem.args, problem.kwargs,
                problem.latent_sites, num_samples=spec.num_samples,
            )  # fmt: skip
            return list(sites), dict(draws)

        return SviJob(problem, summarize, spec.steps, spec.lr, spec.elbo, spec.guide)


@dataclass
class _Predict:
    prediction: Prediction | None = None
    fit_spec: FitSpec | None = None
    frame: Any = None
    new_frame: Any = None
    state: bytes = b""


class LinregPredict(Runner[PredictSpec, _Predict]):
    """Rebuild the fit's guide from its stored state and draw every row's predictive."""

    kind = "predict"

    def prepare(self, ctx: JobContext[PredictSpec]) -> _Predict:
        fit = load_fit(ctx, FitSpec)
        fit_spec: FitSpec = fit.spec
        if fit.data is None:
            raise UserError(f"fit {fit.id} has no stored data")
        frame = read_csv_bytes(fit.data.content, fit.data.name)
        if fit_spec.group_by is not None and fit_spec.group is not None:
            frame = group_rows(frame, fit_spec.group_by, fit_spec.group)  # a sweep member's group
        new = ctx.data
        return _Predict(
            fit_spec=fit_spec, frame=frame, state=fit.state or b"",
            new_frame=read_csv_bytes(new.content, new.name) if new else None,
        )  # fmt: skip

    def run(self, ctx: JobContext[PredictSpec], p: _Predict) -> Any:
        spec, fit_spec = ctx.spec, p.fit_spec
        assert fit_spec is not None and spec.seed is not None
        p.prediction = predict(
            fit_spec.model, p.frame, formula=fit_spec.formula, guide=fit_spec.guide,
            state=p.state, num_samples=spec.num_samples, seed=spec.seed,
            priors={k: v.model_dump() for k, v in fit_spec.priors.items()},
            new_frame=p.new_frame, device=spec.device,
        )  # fmt: skip
        return iter(())

    def store(self, ctx: JobContext[PredictSpec], p: _Predict, session: Session) -> None:
        assert p.prediction is not None
        store_prediction(ctx, session, p.prediction.sites, p.prediction.info)
