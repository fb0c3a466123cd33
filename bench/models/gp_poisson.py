"""A latent Gaussian process with a Poisson likelihood over 11 points: a Kiln user model file
for bench/bench_mcmc.py (its NumPyro twin is numpyro_twins.gp_poisson).

Centred on purpose: the 11 latent values are drawn from the GP prior itself, so their scale
moves with `amplitude` and NUTS needs deep trees (the case where per-gradient overhead is
most of the cost).

    kiln submit fit --model bench/models/gp_poisson.py --data bench/models/gp_poisson.json \
        --method nuts
"""

import pyro
import pyro.distributions as dist
import torch

# The JSON holds whole-number counts, which Kiln would pass as int64 tensors.
DTYPES = {"x": "float64", "y": "float64"}
JITTER = 1e-6  # keeps the 11 x 11 covariance positive definite at short length scales


def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Counts `y` at points `x`: log rate = mean + f, f ~ GP(0, amplitude^2 RBF(lengthscale))."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    lengthscale = pyro.sample("lengthscale", dist.LogNormal(zero, 1.0))
    amplitude = pyro.sample("amplitude", dist.LogNormal(zero, 1.0))
    mean = pyro.sample("mean", dist.Normal(zero, 2.0))
    gap = (x.unsqueeze(-1) - x.unsqueeze(-2)) / lengthscale
    eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    cov = amplitude**2 * torch.exp(-0.5 * gap**2) + JITTER * eye
    f = pyro.sample("f", dist.MultivariateNormal(torch.zeros_like(x), covariance_matrix=cov))
    rate = pyro.deterministic("rate", torch.exp(mean + f))
    with pyro.plate("N", x.shape[0]):
        pyro.sample("y", dist.Poisson(rate), obs=y)
