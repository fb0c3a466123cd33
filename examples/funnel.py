"""Neal's funnel in its centred form: a model NUTS samples badly on purpose (divergences, slow
mixing of `log_scale`). `kiln submit fit --model examples/funnel.py --data examples/funnel.json
--method nuts --until "r_hat<1.01,ess_bulk>400" --max-samples 1000` reaches the cap and names
the sites that failed; a non-centred version (x = exp(log_scale / 2) * z) would not.
"""

import pyro
import pyro.distributions as dist
import torch


def model(dim: int) -> None:
    """log_scale ~ N(0, 3); x | log_scale ~ N(0, exp(log_scale / 2)), `dim` of them."""
    zero = torch.zeros((), dtype=torch.float64)
    log_scale = pyro.sample("log_scale", dist.Normal(zero, 3.0))
    with pyro.plate("dims", dim):
        pyro.sample("x", dist.Normal(zero, torch.exp(log_scale / 2)))
