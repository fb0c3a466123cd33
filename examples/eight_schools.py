"""Eight schools (Rubin 1981), non-centred: a Kiln user model file.

Run it by NUTS: `jobs submit fit --model examples/eight_schools.py --data
examples/eight_schools.json --method nuts`.
"""

import pyro
import pyro.distributions as dist
import torch

# The JSON data has whole numbers, which Kiln would pass as int64 tensors; the model is
# written for float64.
DTYPES = {"y": "float64", "sigma": "float64"}


def model(J, sigma, y=None):
    """`J` schools with treatment effect estimates `y` and their standard errors `sigma`;
    without `y`, draws from the prior predictive."""
    zero = torch.zeros((), dtype=sigma.dtype, device=sigma.device)
    mu = pyro.sample("mu", dist.Normal(zero, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(zero + 5.0))
    with pyro.plate("J", J):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(zero, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_tilde)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)
