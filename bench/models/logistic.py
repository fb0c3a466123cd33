"""Bayesian logistic regression over many rows: a Kiln user model file for
`bench/bench_mcmc.py --scaling` (the data set is written by the bench, `logistic_data`).

Shallow trees, but every gradient touches every row, so a vectorised unit's leaf costs in
proportion to its chains: the case where spreading a job's chains over workers should pay.

    kiln submit fit --model bench/models/logistic.py --data DATA.json --method nuts
"""

import pyro
import pyro.distributions as dist
import torch

DTYPES = {"x": "float64", "y": "float64"}


def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Labels `y` (0/1) of rows `x` (N x D): logit = bias + x @ weights."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    bias = pyro.sample("bias", dist.Normal(zero, 2.0))
    with pyro.plate("D", x.shape[-1]):
        weights = pyro.sample("weights", dist.Normal(zero, 1.0))
    logits = bias + x @ weights
    with pyro.plate("N", x.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)
