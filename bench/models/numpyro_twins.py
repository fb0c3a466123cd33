"""NumPyro twins of the Pyro model files bench/bench_mcmc.py submits to Kiln: the same
priors, parameterisation and site names, so both samplers target the same posterior
(bench/mcmc_numpyro.py --check compares their log densities)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

ROOT = Path(__file__).resolve().parents[2]
DATA = {
    "eight_schools": ROOT / "examples" / "eight_schools.json",
    "gp_poisson": Path(__file__).with_name("gp_poisson.json"),
}
MODEL_FILES = {
    "eight_schools": ROOT / "examples" / "eight_schools.py",
    "gp_poisson": Path(__file__).with_name("gp_poisson.py"),
}
JITTER = 1e-6  # as gp_poisson.py


def eight_schools(J: int, sigma: Any, y: Any = None) -> None:
    """examples/eight_schools.py, non-centred."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def gp_poisson(x: Any, y: Any = None) -> None:
    """bench/models/gp_poisson.py, centred."""
    lengthscale = numpyro.sample("lengthscale", dist.LogNormal(0.0, 1.0))
    amplitude = numpyro.sample("amplitude", dist.LogNormal(0.0, 1.0))
    mean = numpyro.sample("mean", dist.Normal(0.0, 2.0))
    gap = (x[:, None] - x[None, :]) / lengthscale
    cov = amplitude**2 * jnp.exp(-0.5 * gap**2) + JITTER * jnp.eye(x.shape[0])
    f = numpyro.sample("f", dist.MultivariateNormal(jnp.zeros_like(x), covariance_matrix=cov))
    rate = numpyro.deterministic("rate", jnp.exp(mean + f))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("y", dist.Poisson(rate), obs=y)


MODELS: dict[str, Callable[..., None]] = {"eight_schools": eight_schools, "gp_poisson": gp_poisson}


def load_data(name: str) -> dict[str, Any]:
    """The model's JSON data as float64 arrays (whole numbers too, as the Pyro files' DTYPES
    ask), `J` as a plain int."""
    raw = json.loads(DATA[name].read_text())
    return {
        k: v if isinstance(v, int) else jnp.asarray(v, dtype=jnp.float64) for k, v in raw.items()
    }
