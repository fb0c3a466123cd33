"""What runs of a user's model file inside the sandbox process: an SVI fit, MCMC chains, a
posterior predictive. Each is a generator of events that returns plain results (arrays and
bytes), so the worker on the other side of the pipe can check and store them."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
from numpy.typing import NDArray

from inference.events import Event
from inference.fit import resolve_device
from inference.loglik import LogLik, pointwise_log_likelihood
from inference.state import dump_state, load_state, param_values
from inference.svi import resolve_elbo, run_svi
from inference.usercode import get_function, load_module, to_tensors
from inference.userfit import draw_sites, prepare_user_fit, user_model
from inference.userpredict import pick_draws, predict_user_model


@dataclass(frozen=True, slots=True)
class SviRun:
    """A user SVI fit's settings, as the worker resolved them."""

    source: str
    filename: str
    function: str
    data: Mapping[str, Any]
    guide: str
    guide_function: str | None
    seed: int
    device: str
    steps: int
    lr: float
    optim: str
    elbo: str
    num_samples: int
    checkpoint_every_steps: int
    checkpoint_every_s: float
    resume: bytes | None = None


@dataclass(slots=True)
class SviOutcome:
    """The fitted state (codec bytes), the guide's parameters, posterior draws of the latent
    and deterministic sites, which sites are which, and the pointwise log-likelihood."""

    state: bytes
    guide_params: dict[str, NDArray[Any]]
    draws: dict[str, NDArray[Any]]
    latent_sites: list[str]
    deterministic_sites: list[str]
    loglik: LogLik = field(default_factory=LogLik)


def svi_fit(run: SviRun) -> Generator[Event, None, SviOutcome]:
    problem = prepare_user_fit(
        run.source, run.filename, run.function, run.data, guide=run.guide,
        guide_function=run.guide_function, seed=run.seed, device=run.device,
    )  # fmt: skip
    yield from run_svi(
        problem.model, problem.guide, (), problem.kwargs, steps=run.steps, lr=run.lr,
        optim=run.optim, elbo=resolve_elbo(run.elbo, False), device=problem.device,
        resume=run.resume, checkpoint_every_steps=run.checkpoint_every_steps,
        checkpoint_every_s=run.checkpoint_every_s,
    )  # fmt: skip
    state = dump_state()  # right away: saving after the guide ran again can fail
    guide_params = param_values()
    draws = draw_sites(
        problem.model, problem.guide, problem.kwargs, problem.latent_sites, run.num_samples
    )
    latent = list(problem.info["latent_sites"])
    loglik = pointwise_log_likelihood(
        problem.model, problem.kwargs, {s: draws[s] for s in latent}, device=problem.device
    )
    return SviOutcome(
        state, guide_params, draws, latent, list(problem.info["deterministic_sites"]), loglik
    )


@dataclass(frozen=True, slots=True)
class PredictRun:
    """A user model's posterior predictive: the fit (its file, settings and data), the fitted
    guide's state (SVI) or latent draws (MCMC), and the data to predict for."""

    source: str
    filename: str
    function: str
    fit_data: Mapping[str, Any]
    data: Mapping[str, Any]
    num_samples: int
    seed: int
    device: str
    guide: str = "AutoNormal"
    guide_function: str | None = None
    state: bytes | None = None  # an SVI fit's
    draws: Mapping[str, NDArray[Any]] = field(default_factory=dict)  # an MCMC fit's


@dataclass(slots=True)
class PredictOutcome:
    sites: dict[str, tuple[str, NDArray[Any]]]
    observed: dict[str, NDArray[Any]]
    vectorized: bool
    loglik: LogLik = field(default_factory=LogLik)  # of the observed values the data gave


def predict(run: PredictRun) -> Generator[Event, None, PredictOutcome]:
    device = resolve_device(run.device)
    module = load_module(run.source, run.filename)
    if run.state is not None:
        problem = prepare_user_fit(
            run.source, run.filename, run.function, run.fit_data, guide=run.guide,
            guide_function=run.guide_function, seed=run.seed, device=device,
        )  # fmt: skip
        load_state(run.state, map_location=device)
        latent = list(problem.info.get("latent_sites", problem.latent_sites))
        latents = draw_sites(problem.model, problem.guide, problem.kwargs, latent, run.num_samples)
        model = problem.model
    else:
        latents = pick_draws(dict(run.draws), run.num_samples, run.seed)
        model = user_model(get_function(module, run.function, run.filename), run.filename)
    tensors = to_tensors(run.data, device, getattr(module, "DTYPES", None))
    pyro.clear_param_store()
    prediction = predict_user_model(model, tensors, latents, seed=run.seed, device=device)
    yield from ()
    return PredictOutcome(
        {site: (kind, np.asarray(v)) for site, (kind, v) in prediction.sites.items()},
        {site: np.asarray(v) for site, v in prediction.observed.items()},
        prediction.vectorized,
        prediction.loglik,
    )
