"""Library fits store the pointwise log-likelihood of their training items over posterior
draws (bnn-classifier per image, forecast-* per day, hmm per step), run in process; `compare`
ranks them as az.loo scores their exports, and refuses a VAE, saying why."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.errors import SpecError
from tests.conftest import Stack, offline_client, run_in_process
from tests.library.test_forecast_hmm_jobs import EMBEDDED, ETH, simulated_hmm_csv

pytestmark = EMBEDDED


def fitted(stack: Stack, model: str, data: str | Path, *settings: str, **fields: Any) -> str:
    kiln = offline_client(stack)
    job_id = kiln.submit_library(model, data, settings, seed=1, **fields)
    assert run_in_process(stack, job_id) == "succeeded", kiln.job(job_id)["error"]
    return job_id


def az_loo(idata: Any) -> Any:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(idata)


def test_two_bnn_classifier_fits_are_ranked_as_az_loo_scores_their_exports(stack: Stack) -> None:
    kiln = offline_client(stack)
    small, wide = (
        fitted(stack, "bnn-classifier", "digits", f"hidden={h}", "epochs=1", num_samples=40)
        for h in (16, 64)
    )
    stored = {s.site: s for s in kiln.sample_summaries(small)}
    assert stored["log_likelihood:obs"].kind == "log_likelihood"
    assert stored["log_likelihood:obs"].num_samples == 40
    assert stored["log_likelihood:obs"].shape == (1437,)  # the training images, LOO's items
    info = kiln.job(small)["info"]
    assert "1437 training images" in info["log_likelihood_of"]
    assert "log_likelihood_note" not in info
    idata = kiln.inference_data(small)
    assert idata["log_likelihood"]["obs"].dims == ("chain", "draw", "data")
    assert idata["log_likelihood"]["obs"].shape == (1, 40, 1437)
    labels = idata["observed_data"]["obs"].values
    assert labels.shape == (1437,) and set(np.unique(labels)) == set(range(10))
    assert "loglik_draws" not in idata.get("constant_data", {})
    # A label's log-probability under a network: below 0, above a uniform guess's log(1/10)
    # on average after an epoch. No weights are stored: the posterior holds their sum.
    log_lik = idata["log_likelihood"]["obs"].values
    assert (log_lik <= 0).all() and log_lik.mean() > np.log(0.1)
    np.testing.assert_allclose(idata["posterior"]["log_likelihood_sum"], log_lik.sum(-1))
    table = kiln.compare([small, wide])
    assert set(table.index) == {small, wide}
    for job_id in (small, wide):
        expected = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(table.loc[job_id, "elpd_loo"] - expected) < 0.1


def test_forecast_fits_store_a_term_per_training_day_and_compare_across_models(
    stack: Stack,
) -> None:
    kiln = offline_client(stack)
    line = fitted(stack, "forecast-linreg", ETH, "epochs=3", num_samples=100)
    net = fitted(stack, "forecast-bnn", ETH, "epochs=3", "hidden=4", num_samples=100)
    draws = kiln.draws(line, sites=["log_likelihood:obs", "sigma"])
    assert draws["log_likelihood:obs"].shape == (100, 616)  # every stored draw, every day
    idata = kiln.inference_data(line)
    assert idata["log_likelihood"]["obs"].shape == (1, 100, 616)
    assert idata["posterior"]["sigma"].shape == (1, 100)
    # Each term is a Normal density in % with that draw's sigma: never above its peak.
    peak = -np.log(draws["sigma"]) - 0.5 * np.log(2 * np.pi)
    assert (draws["log_likelihood:obs"] <= peak[:, None] + 1e-6).all()
    table = kiln.compare([line, net])
    for job_id in (line, net):
        expected = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(table.loc[job_id, "elpd_loo"] - expected) < 0.1


def test_an_hmm_fit_stores_one_step_ahead_terms_that_sum_to_the_series_likelihood(
    stack: Stack, tmp_path: Path
) -> None:
    import pyro.distributions as dist
    import torch

    data = tmp_path / "hmm.csv"
    simulated_hmm_csv(data)
    kiln = offline_client(stack)
    job_id = fitted(stack, "hmm", data, "steps=30", num_samples=40)
    sites = ["log_likelihood:obs", "initial", "transition", "means", "sds", "__loglik_draws__"]
    draws = kiln.draws(job_id, sites=sites)
    terms = draws["log_likelihood:obs"]
    assert terms.shape == (40, 1500)
    assert draws["__loglik_draws__"][0].tolist() == list(range(40))
    y = torch.as_tensor(kiln.inference_data(job_id)["observed_data"]["obs"].values)
    for i in (0, 17, 39):
        given = {k: torch.as_tensor(draws[k][i], dtype=torch.float64) for k in sites[1:5]}
        series = dist.DiscreteHMM(
            given["initial"].log(), given["transition"].log(),
            dist.Normal(given["means"], given["sds"]),
        ).log_prob(y)  # fmt: skip
        assert terms[i].sum() == pytest.approx(float(series), abs=1e-6)
    assert "one-step-ahead" in kiln.job(job_id)["info"]["log_likelihood_of"]


def test_compare_refuses_a_vae_and_says_its_latents_are_local(stack: Stack) -> None:
    kiln = offline_client(stack)
    bnn = fitted(stack, "bnn-classifier", "digits", "epochs=1", num_samples=30)
    vae = fitted(stack, "vae", "digits", "epochs=1", "hidden=32", "latent=2")
    assert not [s for s in kiln.sample_summaries(vae) if s.kind == "log_likelihood"]
    with pytest.raises(SpecError, match=f"job {vae} has no stored pointwise.*latent codes are"):
        kiln.compare([bnn, vae])
