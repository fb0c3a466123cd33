"""predict_user_model(): posterior predictive draws of a user model's observed and deterministic
sites, given draws of its latent sites (from an MCMC fit's samples or an SVI fit's guide)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from inference.loglik import LogLik, pointwise_log_likelihood
from kiln.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UserPrediction:
    """Draws by site with their kind (`predictive` for sites the data observed,
    `deterministic`, `posterior` for the latent draws used); the observed values the data gave
    (site -> array), whether one vectorised pass drew them, and the log-likelihood of those
    observed values per draw (the rows' log predictive density; a note where none)."""

    sites: dict[str, tuple[str, np.ndarray]]
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    vectorized: bool = False
    loglik: LogLik = field(default_factory=LogLik)


class _Unobserve(Messenger):
    """Sample the sites the data observed (as pyro's uncondition does), but leave the
    pyro.deterministic sites alone: they are observed Deltas, whose draw inside a plate would
    come out with the plate's shape added."""

    def _pyro_sample(self, msg: Any) -> None:
        infer = msg["infer"] if msg["infer"] is not None else {}
        if msg["is_observed"] and not infer.get("_deterministic"):
            msg["is_observed"] = False
            msg["infer"] = {**infer, "was_observed": True, "obs": msg["value"]}
            msg["value"] = None
            msg["done"] = False


def unobserved(model: Callable[..., Any]) -> Callable[..., Any]:
    """`model` with its observed sites sampled from their distributions."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with _Unobserve():
            return model(*args, **kwargs)

    return run


def pick_draws(
    draws: Mapping[str, np.ndarray], num_samples: int, seed: int
) -> dict[str, np.ndarray]:
    """`num_samples` of the stored draws (every site the same rows): a random subset without
    replacement when there are enough, with replacement otherwise."""
    total = len(next(iter(draws.values())))
    rng = np.random.default_rng(seed)
    rows = rng.choice(total, size=num_samples, replace=num_samples > total)
    return {site: np.asarray(values)[np.sort(rows)] for site, values in draws.items()}


def _sites(
    model: Callable[..., Any], data: Mapping[str, Any], latent: set[str]
) -> tuple[Any, list[str], list[str]]:
    """One unconditioned run: its trace, the sites to predict (observed by the data, or left
    unobserved by new data that lacks them) and the deterministic sites."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(unobserved(model)).get_trace(**data)
    predicted, deterministic = [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if (site["infer"] or {}).get("_deterministic"):
            deterministic.append(name)
        elif name not in latent:
            predicted.append(name)
    return trace, predicted, deterministic


def predict_user_model(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    latents: Mapping[str, np.ndarray],
    *,
    seed: int,
    device: str = "cpu",
) -> UserPrediction:
    """For each draw of `latents` (site -> (num_samples, *shape)), run the model on `data`
    with the latent sites fixed and the observed sites sampled (pyro's uncondition).

    One vectorised pass (Predictive with parallel=True) where the model's plates allow it
    and every site comes out with the expected shape; otherwise one model run per draw.
    """
    if not latents:
        raise ModelError("the fit stored no latent draws to predict from")
    num_samples = len(next(iter(latents.values())))
    pyro.set_rng_seed(seed)
    trace, observed, deterministic = _sites(model, data, set(latents))
    if not observed:
        raise ModelError("the model has no site to predict (every sample site is a latent)")
    wanted = [*observed, *deterministic]
    shapes = {s: tuple(trace.nodes[s]["value"].shape) for s in wanted}
    given = {
        s: torch.as_tensor(np.asarray(v), device=device)
        for s, v in latents.items()
        if s in trace.nodes and s not in wanted
    }
    for s, v in given.items():
        have = tuple(trace.nodes[s]["value"].shape)
        if tuple(v.shape[1:]) != have:
            raise ModelError(
                f"site `{s}`: the fit drew shape {tuple(v.shape[1:])}, the new data needs"
                f" {have}; a site sized by the data cannot be predicted for other sizes"
            )
    drawn, vectorized = _vectorized(model, data, given, wanted, shapes, num_samples)
    if drawn is not None and deterministic:
        # A model can broadcast over the draws and still mix them up (a sum over the wrong
        # axis): its deterministic sites must match a plain run's for the first draws.
        check = _one_by_one(model, data, {s: v[:2] for s, v in given.items()}, deterministic, 2)
        for s in deterministic:
            one = drawn[s].reshape(num_samples, *shapes[s])[:2]
            if not np.allclose(one, check[s], rtol=1e-5, atol=1e-6, equal_nan=True):
                log.info("predict: site %s differs from a plain run; one run per draw", s)
                drawn, vectorized = None, False
                break
    if drawn is None:
        drawn = _one_by_one(model, data, given, wanted, num_samples)
    sites: dict[str, tuple[str, np.ndarray]] = {
        s: ("posterior", np.asarray(v)) for s, v in latents.items()
    }
    for s in wanted:
        kind = "predictive" if s in observed else "deterministic"
        sites[s] = (kind, drawn[s].reshape(num_samples, *shapes[s]))
    obs_values = {
        s: trace.nodes[s]["infer"]["obs"].detach().cpu().numpy()
        for s in observed
        if trace.nodes[s]["infer"].get("obs") is not None
    }
    loglik = (
        pointwise_log_likelihood(model, data, latents, device=device)
        if obs_values
        else LogLik(note="log-likelihood not computed: the data give no observed site's values")
    )
    return UserPrediction(sites, obs_values, vectorized, loglik)


def _vectorized(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    given: Mapping[str, torch.Tensor],
    wanted: list[str],
    shapes: Mapping[str, tuple[int, ...]],
    num_samples: int,
) -> tuple[dict[str, np.ndarray] | None, bool]:
    predictive = Predictive(
        unobserved(model), posterior_samples=dict(given), return_sites=wanted,
        parallel=True,
    )  # fmt: skip
    try:
        with torch.no_grad():
            out = predictive(**data)
    except Exception as e:  # a model whose shapes do not broadcast over a draws plate
        log.info("predict: the model is not batch-safe (%s); one run per draw", type(e).__name__)
        return None, False
    result = {}
    for s in wanted:
        value = out[s].detach().cpu().numpy()
        if value.size != num_samples * int(np.prod(shapes[s], dtype=np.int64)):
            log.info("predict: site %s came out %s from one pass; one run per draw", s,
                     value.shape)  # fmt: skip
            return None, False
        result[s] = value
    return result, True


def _one_by_one(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    given: Mapping[str, torch.Tensor],
    wanted: list[str],
    num_samples: int,
) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {s: [] for s in wanted}
    with torch.no_grad():
        for i in range(num_samples):
            fixed = {s: v[i] for s, v in given.items()}
            conditioned = poutine.condition(unobserved(model), data=fixed)
            trace = poutine.trace(conditioned).get_trace(**data)
            for s in wanted:
                value = cast(torch.Tensor, trace.nodes[s]["value"])
                out[s].append(value.detach().cpu().numpy())
    return {s: np.stack(v) for s, v in out.items()}
