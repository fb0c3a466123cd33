"""Posterior summaries of latent sites: draws from the fitted guide -> mean, sd, quantiles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pyro.infer import Predictive
from pyro.infer.autoguide import AutoLaplaceApproximation

from kiln.records import SiteStats

QUANTILES = (0.05, 0.5, 0.95)


def summarize_draws(site: str, draws: NDArray[Any]) -> SiteStats:
    """Summarise draws shaped (num_samples, *site_shape), in float64 (as db.results.summary_of
    does for the stored draws, so a site's params and samples summaries are the same numbers)."""
    draws = np.asarray(draws, dtype=np.float64)
    q05, q50, q95 = np.quantile(draws, QUANTILES, axis=0)
    return SiteStats(
        site=site,
        shape=tuple(draws.shape[1:]),
        mean=draws.mean(axis=0),
        sd=draws.std(axis=0, ddof=1) if len(draws) > 1 else np.zeros(draws.shape[1:]),
        q05=q05,
        q50=q50,
        q95=q95,
    )


def posterior_guide(guide: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The guide to draw from: a Laplace approximation is turned into its Gaussian first."""
    if isinstance(guide, AutoLaplaceApproximation):
        return guide.laplace_approximation(*args, **kwargs)
    return guide


def draw_latents(
    model: Callable[..., Any],
    guide: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    sites: Sequence[str],
    num_samples: int,
) -> dict[str, NDArray[Any]]:
    """`num_samples` joint draws of `sites` from the fitted guide, in the constrained space."""
    drawing_guide = posterior_guide(guide, args, kwargs)
    predictive = Predictive(
        model, guide=drawing_guide, num_samples=num_samples, return_sites=list(sites), parallel=True
    )
    with torch.no_grad():
        draws = predictive(*args, **kwargs)
    return {
        site: draws[site].detach().cpu().numpy().reshape(num_samples, -1).squeeze(-1)
        if draws[site][0].numel() == 1
        else draws[site].detach().cpu().numpy().reshape(num_samples, *draws[site].shape[2:])
        for site in sites
    }


def summarize_posterior(
    model: Callable[..., Any],
    guide: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    sites: Sequence[str],
    num_samples: int = 1000,
) -> tuple[list[SiteStats], dict[str, NDArray[Any]]]:
    """Summaries of each latent site's posterior, and the `num_samples` draws they came from."""
    draws = draw_latents(model, guide, args, kwargs, sites, num_samples)
    return [summarize_draws(site, draws[site]) for site in sites], draws
