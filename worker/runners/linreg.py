"""The linreg fit and its predict job: a CSV and a formula, the built-in regression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.datasets import load_dataset
from db.jobs import get_job
from db.results import get_fitted_state, store_predict_results
from inference.fit import prepare_fit
from inference.posterior import summarize_draws, summarize_posterior
from inference.predict import Prediction, predict
from inference.state import STATE_FORMAT
from kiln.errors import UserError
from kiln.jobinfo import PredictInfo
from kiln.records import SiteStats
from kiln.specs import FitSpec, PredictSpec, parse_job_spec
from kiln.tables import group_rows, read_csv_bytes
from worker.context import DataBlob, JobContext
from worker.runners.base import Runner
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
        fit_id = ctx.spec.from_job
        with ctx.sessions() as session:
            fit = get_job(session, fit_id)
            fit_spec = parse_job_spec(dict(fit.spec))
            if not isinstance(fit_spec, FitSpec):
                raise UserError(f"job {fit_id} is not a linreg fit")
            state = fitted_state(session, fit_id, fit.status)
            if fit.dataset_id is None:
                raise UserError(f"fit {fit_id} has no stored data")
            fit_data = load_dataset(session, fit.dataset_id)
            frame = read_csv_bytes(fit_data.content, fit_data.name)
        if fit_spec.group_by is not None and fit_spec.group is not None:
            frame = group_rows(frame, fit_spec.group_by, fit_spec.group)  # a sweep member's group
        new = ctx.data
        return _Predict(
            fit_spec=fit_spec, frame=frame, state=state,
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


def fitted_state(session: Session, fit_id: str, status: str) -> bytes:
    """The fit's stored state, or a UserError saying why there is none to predict from."""
    if status != "succeeded":
        raise UserError(f"its fit {fit_id} is {status}, not succeeded")
    state = get_fitted_state(session, fit_id)
    if state is None:
        raise UserError(f"fit {fit_id} stored no fitted state to predict from")
    if state.format != STATE_FORMAT:
        raise UserError(f"fit {fit_id}: fitted state format {state.format!r} is not supported")
    return bytes(state.content)


def store_prediction(
    ctx: JobContext[Any], session: Session, sites: dict[str, tuple[str, np.ndarray]],
    details: dict[str, Any],
) -> None:  # fmt: skip
    """A predict job's draws by site (its latent draws summarised as params) and its info."""
    params: list[SiteStats] = [
        summarize_draws(site, values) for site, (kind, values) in sites.items()
        if kind == "posterior"
    ]  # fmt: skip
    store_predict_results(session, ctx.job_id, sites, params)
    info = ctx.info
    assert isinstance(info, PredictInfo)
    known = set(PredictInfo.model_fields)
    info.details = {k: v for k, v in details.items() if k not in known}
    for key, value in details.items():
        if key in known:
            setattr(info, key, value)
    info.from_job = ctx.spec.from_job
    info.num_samples = ctx.spec.num_samples
    info.sites = sorted(sites)
    info.predict_seconds = ctx.seconds()
