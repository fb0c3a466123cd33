"""A user model's predict job: posterior predictive draws of its observed and deterministic
sites, from an SVI fit's guide or an MCMC fit's stored draws, for its data or new data."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
from sqlalchemy.orm import Session

from db.results import get_draws
from inference.fit import resolve_device
from inference.state import load_state
from inference.usercode import get_function, load_module, to_tensors
from inference.userfit import draw_sites, prepare_user_fit, user_model
from inference.userpredict import UserPrediction, pick_draws, predict_user_model
from kiln.errors import UserError
from kiln.specs import UserMcmcFitSpec, UserModelRef, UserPredictSpec, UserSviFitSpec
from kiln.userdata import parse_user_data
from worker.context import JobContext
from worker.runners.base import Runner
from worker.runners.fitted import load_fit, store_prediction, stored_state
from worker.runners.user import allow_user_code

log = logging.getLogger(__name__)

OBSERVED_PREFIX = "observed:"  # a data site holding the values the data gave an observed site


@dataclass
class _UserPredict:
    fit_spec: UserSviFitSpec | UserMcmcFitSpec
    source: str
    fit_data: dict[str, Any]
    data: dict[str, Any]
    state: bytes = b""  # an SVI fit's fitted state
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # an MCMC fit's latent draws
    prediction: UserPrediction | None = None


class UserPredict(Runner[UserPredictSpec, _UserPredict]):
    kind = "user_predict"

    def prepare(self, ctx: JobContext[UserPredictSpec]) -> _UserPredict:
        allow_user_code(ctx)
        fit = load_fit(ctx, UserModelRef, state=False)
        spec: UserSviFitSpec | UserMcmcFitSpec = fit.spec
        if fit.source is None or fit.data is None:
            raise UserError(f"fit {fit.id} has no stored model source or data")
        _, fit_data = parse_user_data(fit.data.content, fit.data.name)
        p = _UserPredict(spec, fit.source, fit_data, fit_data)
        with ctx.sessions() as session:  # the guide's state, or the MCMC draws
            if isinstance(spec, UserSviFitSpec):
                p.state = stored_state(session, fit.id)
            else:
                p.draws = get_draws(session, fit.id, kind="posterior")
        if ctx.data is not None:
            _, p.data = parse_user_data(ctx.data.content, ctx.data.name)
        return p

    def run(self, ctx: JobContext[UserPredictSpec], p: _UserPredict) -> Any:
        spec, fit = ctx.spec, p.fit_spec
        assert spec.seed is not None
        device = resolve_device(spec.device)
        module = load_module(p.source, fit.model_file)
        if isinstance(fit, UserSviFitSpec):
            problem = prepare_user_fit(
                p.source, fit.model_file, fit.model_function, p.fit_data, guide=fit.guide,
                guide_function=fit.guide_function, seed=spec.seed, device=device,
            )  # fmt: skip
            load_state(p.state, map_location=device)
            latent = list(problem.info.get("latent_sites", problem.latent_sites))
            latents = draw_sites(
                problem.model, problem.guide, problem.kwargs, latent, spec.num_samples
            )
            model = problem.model
        else:
            latents = pick_draws(p.draws, spec.num_samples, spec.seed)
            model = user_model(get_function(module, fit.model_function, fit.model_file),
                               fit.model_file)  # fmt: skip
        tensors = to_tensors(p.data, device, getattr(module, "DTYPES", None))
        pyro.clear_param_store()
        p.prediction = predict_user_model(model, tensors, latents, seed=spec.seed, device=device)
        return iter(())

    def store(self, ctx: JobContext[UserPredictSpec], p: _UserPredict, session: Session) -> None:
        prediction = p.prediction
        assert prediction is not None
        sites = dict(prediction.sites)
        for site, values in prediction.observed.items():
            sites[OBSERVED_PREFIX + site] = ("data", values[None, ...])
        details: dict[str, Any] = {"vectorized": prediction.vectorized,
                                   "method": getattr(p.fit_spec, "method", "svi")}  # fmt: skip
        coverage = _coverage(prediction)
        if coverage is not None:
            details["coverage_90"], details["observed"] = coverage
        store_prediction(ctx, session, sites, details)
        log.info("job %s: %d draws of %s from %s", ctx.job_id, ctx.spec.num_samples,
                 ", ".join(s for s, (k, _) in prediction.sites.items() if k == "predictive"),
                 ctx.spec.from_job)  # fmt: skip


def _coverage(prediction: UserPrediction) -> tuple[float, int] | None:
    """The share of observed values inside their 90% predictive interval (all sites)."""
    inside, total = 0, 0
    for site, observed in prediction.observed.items():
        kind, draws = prediction.sites[site]
        if kind != "predictive" or draws.shape[1:] != observed.shape:
            continue
        low, high = np.quantile(draws, [0.05, 0.95], axis=0)
        finite = np.isfinite(observed)
        inside += int(((observed >= low) & (observed <= high) & finite).sum())
        total += int(finite.sum())
    return (inside / total, total) if total else None
