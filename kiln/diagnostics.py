"""MCMC convergence diagnostics from stored draws: split R-hat, bulk and tail ESS (ArviZ).

numpy in, numpy out; draws are (chains, draws, *shape). No torch: the worker computes these
once when a chain run ends and stores them next to the summaries.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from kiln.records import DIAGNOSTICS

__all__ = ["DIAGNOSTICS", "all_diagnostics", "chain_summary", "site_diagnostics"]


def site_diagnostics(draws: np.ndarray) -> np.ndarray:
    """(3, *shape): rank-normalised split R-hat, bulk ESS and tail ESS of one site.

    With a single chain R-hat is still computed from the split halves; with fewer than 4
    draws per chain every value is NaN.
    """
    import arviz as az

    values = np.asarray(draws, dtype=np.float64)
    shape = values.shape[2:]
    if values.ndim < 2 or values.shape[1] < 4:
        return np.full((3, *shape), np.nan)
    dataset = az.convert_to_dataset({"x": values})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: NaN, said as such
        r_hat = az.rhat(dataset, method="rank")["x"].values
        bulk = az.ess(dataset, method="bulk")["x"].values
        tail = az.ess(dataset, method="tail")["x"].values
    return np.stack([np.asarray(r_hat), np.asarray(bulk), np.asarray(tail)]).reshape(3, *shape)


def all_diagnostics(draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {site: site_diagnostics(values) for site, values in draws.items()}


def chain_summary(
    stats: Mapping[str, np.ndarray], chain_seconds: list[float]
) -> list[dict[str, float | int]]:
    """Per chain: divergences, mean step size, mean and max tree depth, mean accept prob, time."""
    chains = len(chain_seconds)
    out: list[dict[str, float | int]] = []
    for c in range(chains):
        row: dict[str, float | int] = {"chain": c, "seconds": round(float(chain_seconds[c]), 3)}
        if "diverging" in stats:
            row["divergences"] = int(np.asarray(stats["diverging"][c]).sum())
        if "step_size" in stats:
            row["step_size"] = float(np.mean(stats["step_size"][c]))
        if "tree_depth" in stats:
            row["tree_depth_mean"] = float(np.mean(stats["tree_depth"][c]))
            row["tree_depth_max"] = int(np.max(stats["tree_depth"][c]))
        if "accept_prob" in stats:
            row["accept_prob"] = float(np.mean(stats["accept_prob"][c]))
        out.append(row)
    return out
