"""inference.loglik on small models in this process: a model that observes nothing gets a
note; one that breaks an outer plate over the draws gets the same values one draw at a time."""

from __future__ import annotations

import numpy as np


def test_a_model_that_observes_nothing_gets_a_note_not_a_log_likelihood() -> None:
    import pyro
    import pyro.distributions as dist
    import torch

    from inference.loglik import pointwise_log_likelihood

    def prior_only(n: torch.Tensor) -> None:
        pyro.sample("a", dist.Normal(0.0, 1.0))

    got = pointwise_log_likelihood(prior_only, {"n": torch.tensor(3)}, {"a": np.zeros(50)})
    assert got.values == {} and "observes no site" in got.note


def test_a_model_that_is_not_batch_safe_gets_the_same_log_likelihood_one_draw_at_a_time() -> None:
    import pyro
    import pyro.distributions as dist
    import torch

    from inference.loglik import pointwise_log_likelihood

    y = torch.tensor([0.1, -0.3, 0.8])

    def scalar_only(y: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        loc = float(mu)  # breaks any outer plate over the draws
        with pyro.plate("data", 3):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=y)

    mu = np.linspace(-1, 1, 40)
    got = pointwise_log_likelihood(scalar_only, {"y": y}, {"mu": mu})
    assert not got.vectorized and got.values["obs"].shape == (40, 3)
    expected = dist.Normal(torch.tensor(mu)[:, None], 1.0).log_prob(y).numpy()
    np.testing.assert_allclose(got.values["obs"], expected, rtol=1e-6)
    assert got.dims["obs"] == ["data"]
