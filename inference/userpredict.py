"""predict_user_model(): posterior predictive draws of a user model's observed and deterministic
sites, given draws of its latent sites (from an MCMC fit's samples or an SVI fit's guide)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample

from kiln.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UserPrediction:
    """Draws by site with their kind (`predictive` for sites the data observed,
    `deterministic`, `posterior` for the latent draws used); the observed values the data gave
    (site -> array), and whether one vectorised pass drew them."""

    sites: dict[str, tuple[str, np.ndarray]]
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    vectorized: bool = False


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
        trace = poutine.trace(poutine.uncondition(model)).get_trace(**data)
    predicted, deterministic = [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic"):
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
    return UserPrediction(sites, obs_values, vectorized)


def _vectorized(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    given: Mapping[str, torch.Tensor],
    wanted: list[str],
    shapes: Mapping[str, tuple[int, ...]],
    num_samples: int,
) -> tuple[dict[str, np.ndarray] | None, bool]:
    predictive = Predictive(
        poutine.uncondition(model), posterior_samples=dict(given), return_sites=wanted,
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
            conditioned = poutine.condition(poutine.uncondition(model), data=fixed)
            trace = poutine.trace(conditioned).get_trace(**data)
            for s in wanted:
                out[s].append(trace.nodes[s]["value"].detach().cpu().numpy())
    return {s: np.stack(v) for s, v in out.items()}
