"""The batched linreg model: each member's priors as tensor rows, the model under a `members`
plate, its least-squares start, and draws from its guide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from numpy.typing import NDArray
from pyro import poutine
from pyro.infer import autoguide

from inference.models.linreg import LinReg


@dataclass(frozen=True, slots=True)
class _Priors:
    """LinReg's priors, a row per member: locs and scales (K, terms), sigma's low, high (K, 1)."""

    terms: tuple[str, ...]
    locs: torch.Tensor
    scales: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    @staticmethod
    def of(
        terms: Sequence[str], priors: Sequence[Mapping[str, Mapping[str, float | str]] | None],
        device: str,
    ) -> _Priors:  # fmt: skip
        built: dict[str, LinReg] = {}
        models = []
        for p in priors:  # LinReg checks each prior's site names and fills in the defaults
            key = repr(sorted((p or {}).items()))
            if key not in built:
                built[key] = LinReg(terms, p, device=device)
            models.append(built[key])
        return _Priors(
            tuple(terms),
            torch.stack([m.locs for m in models]),
            torch.stack([m.scales for m in models]),
            torch.stack([m.sigma_low for m in models]).unsqueeze(-1),
            torch.stack([m.sigma_high for m in models]).unsqueeze(-1),
        )


class _BatchedLinReg:
    """LinReg's sites, with every latent of shape (K, 1) under the `members` plate, and each
    member's own priors (a prior grid packs into one batch).

    The likelihood is `pyro.factor("obs", weights * log N(y | X beta, sigma))`: a bootstrap
    resample is a row of multinomial counts, so no member needs its own copy of the data.
    (A tensor `poutine.scale` would do the same, but Pyro's validation rejects zero scales.)
    """

    def __init__(self, priors: _Priors, members: int) -> None:
        self.priors = priors
        self.members = members

    def __call__(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> None:
        p = self.priors
        with pyro.plate("members", self.members, dim=-2, device=str(X.device)):
            mean = torch.zeros((), dtype=X.dtype, device=X.device)
            for j, term in enumerate(p.terms):
                prior = dist.Normal(p.locs[:, j : j + 1], p.scales[:, j : j + 1])
                coef = pyro.sample(term, prior)  # (K, 1)
                mean = mean + coef * X[..., j]  # (K, rows)
            sigma = pyro.sample("sigma", dist.Uniform(p.low, p.high))
            with pyro.plate("data", X.shape[-2], dim=-1, device=str(X.device)):
                pyro.factor("obs", weights * dist.Normal(mean, sigma).log_prob(y))


def _initial_values(
    priors: _Priors, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """linreg's `init=auto` per member: weighted least squares and the weighted residual sd.

    Computed in float64; a member whose system is degenerate (all-zero weights, too few rows)
    starts at the prior's median instead.
    """
    w64 = weights.double()
    X64 = X.double().expand(w64.shape[0], *X.shape[-2:])  # (K, rows, terms)
    y64 = y.double().expand(w64.shape)  # (K, rows)
    root = w64.sqrt().unsqueeze(-1)  # (K, rows, 1)
    coef = torch.linalg.lstsq(root * X64, root * y64.unsqueeze(-1)).solution.squeeze(-1)
    resid = y64 - torch.einsum("krt,kt->kr", X64, coef)  # (K, rows)
    total = w64.sum(-1)
    centre = (w64 * resid).sum(-1) / total
    sd = ((w64 * (resid - centre.unsqueeze(-1)) ** 2).sum(-1) / (total - 1)).sqrt()
    span = (priors.high - priors.low).double().squeeze(-1)
    low = priors.low.double().squeeze(-1) + 0.01 * span
    high = priors.high.double().squeeze(-1) - 0.01 * span
    usable = torch.isfinite(coef).all(-1) & torch.isfinite(sd) & (total > 1)
    coef = torch.where(usable.unsqueeze(-1), coef, priors.locs.double())
    sd = torch.where(usable, torch.minimum(torch.maximum(sd, low), high), (low + high) / 2)
    values = {term: coef[:, j : j + 1].to(X.dtype) for j, term in enumerate(priors.terms)}
    values["sigma"] = sd.unsqueeze(-1).to(X.dtype)
    return values


def _summaries(
    guide: autoguide.AutoNormal, args: tuple[torch.Tensor, ...], sites: Sequence[str],
    num_samples: int,
) -> dict[str, NDArray[np.float32]]:  # fmt: skip
    """Draws from the guide, vectorised over an outer `draws` plate: site -> (num_samples, K)."""
    with torch.no_grad(), pyro.plate("draws", num_samples, dim=-3, device=str(args[0].device)):
        trace = poutine.trace(guide).get_trace(*args)
    values = {s: cast(torch.Tensor, trace.nodes[s]["value"]) for s in sites}
    return {s: v.reshape(num_samples, -1).cpu().numpy() for s, v in values.items()}
