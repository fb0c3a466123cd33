"""Pointwise log-likelihood of users' models, stored by their fits (SVI and NUTS, run in
process through the sandbox), exported as ArviZ's log_likelihood and observed_data groups with
dims named after the model's plates, and ranked by `compare` (Client, CLI, HTTP API)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.client import Client
from kiln.errors import SpecError
from tests.conftest import Stack, offline_client, run_cli, run_in_process
from tests.params import FLEET_AND_SLOW_EMBEDDED

MODEL = """
import pyro
import pyro.distributions as dist
import torch

DTYPES = {"x": "float64", "y": "float64"}


def line(x, y=None):
    a = pyro.sample("a", dist.Normal(torch.zeros((), dtype=x.dtype), 5.0))
    b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=x.dtype), 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones((), dtype=x.dtype)))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(a + b * x, sigma), obs=y)


def prior(x, y=None):
    pyro.sample("a", dist.Normal(torch.zeros((), dtype=x.dtype), 5.0))


def flat(x, y=None):
    a = pyro.sample("a", dist.Normal(torch.zeros((), dtype=x.dtype), 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones((), dtype=x.dtype)))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(a + 0 * x, sigma), obs=y)
"""
_rng = np.random.default_rng(7)
_X = np.linspace(-1, 1, 20)
DATA = {"x": _X.tolist(), "y": (0.5 + 2.0 * _X + 0.3 * _rng.normal(size=20)).tolist()}
NUTS: dict[str, Any] = {"method": "nuts", "chains": 2, "warmup": 60, "samples": 60, "seed": 1}
SVI: dict[str, Any] = {"method": "svi", "steps": 400, "lr": 0.05, "num_samples": 300, "seed": 1}


def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "line.py"
    path.write_text(MODEL)
    return path


def fitted(stack: Stack, tmp_path: Path, function: str, **options: Any) -> str:
    kiln = offline_client(stack)
    job_id = kiln.submit_model(model_file(tmp_path), DATA, function=function, **options)
    status = run_in_process(stack, job_id)
    assert status == "succeeded", kiln.job(job_id)["error"]
    return job_id


def az_loo(idata: Any) -> Any:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(idata)


@FLEET_AND_SLOW_EMBEDDED
def test_a_user_svi_fit_stores_its_log_likelihood_and_compare_agrees_with_az_loo(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    good = fitted(stack, tmp_path, "line", **SVI)
    worse = fitted(stack, tmp_path, "flat", **SVI)
    stored = {s.site: s for s in kiln.sample_summaries(good)}
    assert stored["log_likelihood:obs"].kind == "log_likelihood"
    assert stored["log_likelihood:obs"].num_samples == 300
    assert stored["log_likelihood:obs"].shape == (20,)
    idata = kiln.inference_data(good)
    assert idata["log_likelihood"]["obs"].dims == ("chain", "draw", "data")
    np.testing.assert_allclose(idata["observed_data"]["obs"].values, DATA["y"])
    assert idata["observed_data"]["obs"].dims == ("data",)
    table = kiln.compare([worse, good])
    assert list(table.index) == [good, worse]  # the line explains y; the flat model does not
    assert table.loc[good, "rank"] == 0 and table.loc[worse, "d_loo"] > 5
    for job_id in (good, worse):
        expected = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(table.loc[job_id, "elpd_loo"] - expected) < 0.1


@FLEET_AND_SLOW_EMBEDDED
def test_a_user_nuts_fit_stores_its_log_likelihood_per_draw_of_each_chain(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    job_id = fitted(stack, tmp_path, "line", **NUTS)
    draws = kiln.draws(job_id, sites=["log_likelihood:obs", "a"])
    assert draws["log_likelihood:obs"].shape == (120, 20)  # chain-major, as the draws are
    idata = kiln.inference_data(job_id)
    assert idata["log_likelihood"]["obs"].shape == (2, 60, 20)
    assert idata["posterior"]["a"].shape == (2, 60)
    attrs = idata["posterior"].attrs
    assert attrs["method"] == "nuts" and attrs["chains"] == 2 and attrs["warmup"] == 60
    assert not {"guide", "steps", "lr"} & set(attrs)
    # The stored value is log Normal(y | a + b x, sigma) of each draw and point.
    a, b, sigma = (kiln.draws(job_id, sites=[s])[s] for s in ("a", "b", "sigma"))
    y, x = np.asarray(DATA["y"]), np.asarray(DATA["x"])
    z = (y - (a[:, None] + b[:, None] * x)) / sigma[:, None]
    expected = -0.5 * z**2 - np.log(sigma[:, None]) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(draws["log_likelihood:obs"], expected, rtol=1e-5, atol=1e-6)
    elpd = Client.compare(kiln, [job_id, fitted(stack, tmp_path, "flat", **SVI)])
    assert abs(elpd.loc[job_id, "elpd_loo"] - az_loo(idata).elpd_loo) < 0.1
    assert kiln.job(job_id)["info"]["site_dims"]["obs"] == ["data"]
    shown = run_cli("show", job_id, env=stack.user_env)
    assert shown.returncode == 0 and "warmup=60" in shown.stdout
    for svi_only in ("guide", "lr=", "steps=", "elbo", "loss"):
        assert svi_only not in shown.stdout, shown.stdout


@FLEET_AND_SLOW_EMBEDDED
def test_compare_refuses_a_job_without_log_likelihood_or_with_other_data(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    good = fitted(stack, tmp_path, "line", **SVI)
    other = fitted(stack, tmp_path, "line", **{**SVI, "seed": 2})
    shifted = {"x": DATA["x"], "y": [v + 1 for v in DATA["y"]]}
    moved = kiln.submit_model(model_file(tmp_path), shifted, function="line", **SVI)
    assert run_in_process(stack, moved) == "succeeded"
    with pytest.raises(SpecError, match=f"job {moved} observed different data"):
        kiln.compare([good, moved])
    with pytest.raises(SpecError, match="at least two"):
        kiln.compare([good, good])
    assert set(kiln.compare([good, other]).index) == {good, other}
    nothing = fitted(stack, tmp_path, "prior", **{**SVI, "steps": 20})
    with pytest.raises(SpecError, match=f"job {nothing} has no stored pointwise.*observes no"):
        kiln.compare([good, nothing])
