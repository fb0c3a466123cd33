"""Library predict jobs store the pointwise log-likelihood of the items they predict whose
observed values are known, over the draws they make (bnn-classifier per held-out test image,
forecast-* per held-out day, hmm per step of its series): `compare` of two predict jobs over
the same items ranks their fits by test-set ELPD as az.loo scores the exports, refuses a pair
over different items, and quotes a VAE's reason for having none."""

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


def done(stack: Stack, job_id: str) -> str:
    assert run_in_process(stack, job_id) == "succeeded", offline_client(stack).job(job_id)["error"]
    return job_id


def fit_and_predict(
    stack: Stack, model: str, data: str | Path, *settings: str, draws: int, seed: int = 1
) -> tuple[str, str]:
    """A small fit (20 draws: its own log-likelihood stays cheap) and a predict job of it."""
    kiln = offline_client(stack)
    fit = done(stack, kiln.submit_library(model, data, settings, seed=seed, num_samples=20))
    return fit, done(stack, kiln.predict(fit, draws, seed=2))


def az_loo(idata: Any) -> Any:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k UserWarnings on a few hundred images
        return az.loo(idata)


def test_bnn_classifier_predict_jobs_compare_by_the_log_density_of_their_test_labels(
    stack: Stack,
) -> None:
    kiln = offline_client(stack)
    (fit_small, small), (_, wide) = (
        fit_and_predict(stack, "bnn-classifier", "digits", f"hidden={h}", "epochs=1", draws=40)
        for h in (16, 64)
    )
    stored = {s.site: s for s in kiln.sample_summaries(small)}
    assert stored["log_likelihood:obs"].kind == "log_likelihood"
    assert stored["log_likelihood:obs"].num_samples == 40
    assert stored["log_likelihood:obs"].shape == (360,)  # the held-out images, not training's
    info = kiln.job(small)["info"]
    assert info["log_likelihood_of"] == "each of the 360 held-out test images' label"
    assert "log_likelihood_note" not in info
    # The same 40 networks as the prediction: averaged, their label probabilities are the
    # stored class probabilities of the true labels.
    draws = kiln.draws(small, sites=["log_likelihood:obs", "class_probs", "__y__"])
    labels = draws["__y__"][0].astype(int)
    on_label = draws["class_probs"][0][np.arange(360), labels]
    np.testing.assert_allclose(np.exp(draws["log_likelihood:obs"]).mean(0), on_label, rtol=1e-4)
    idata = kiln.inference_data(small)
    assert idata["log_likelihood"]["obs"].shape == (1, 40, 360)
    np.testing.assert_array_equal(idata["observed_data"]["obs"].values, labels)
    table = kiln.compare([small, wide])
    assert set(table.index) == {small, wide} and sorted(table["rank"]) == [0, 1]
    best = max((small, wide), key=lambda j: table.loc[j, "elpd_loo"])
    assert table.loc[best, "rank"] == 0
    for job_id in (small, wide):
        expected = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(table.loc[job_id, "elpd_loo"] - expected) < 0.1
    # Its fit scored the 1437 training images: other items, so no comparison.
    with pytest.raises(SpecError, match=f"job {fit_small} observed different data"):
        kiln.compare([small, fit_small])


def test_forecast_predict_jobs_store_one_term_per_held_out_day_and_compare(
    stack: Stack,
) -> None:
    kiln = offline_client(stack)
    _, line = fit_and_predict(stack, "forecast-linreg", ETH, "epochs=3", draws=60)
    _, net = fit_and_predict(stack, "forecast-bnn", ETH, "epochs=3", "hidden=4", draws=60)
    draws = kiln.draws(line, sites=["log_likelihood:obs", "mean", "sigma", "__y__"])
    assert draws["log_likelihood:obs"].shape == (60, 30)  # every draw, every held-out day
    # log Normal(y_t | mean_t, sigma) with the draws the prediction stored
    sigma = draws["sigma"].reshape(60, 1)
    z = (draws["__y__"][0][None, :] - draws["mean"]) / sigma
    expected = -0.5 * z**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(draws["log_likelihood:obs"], expected, rtol=1e-4, atol=1e-4)
    assert kiln.job(line)["info"]["log_likelihood_of"] == "each of the 30 held-out days' % change"
    table = kiln.compare([line, net])
    for job_id in (line, net):
        expected_elpd = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(table.loc[job_id, "elpd_loo"] - expected_elpd) < 0.1


def test_an_hmm_predict_scores_its_series_and_a_vae_predict_says_why_it_has_none(
    stack: Stack, tmp_path: Path
) -> None:
    import pyro.distributions as dist
    import torch

    data = tmp_path / "hmm.csv"
    simulated_hmm_csv(data)
    kiln = offline_client(stack)
    _, hmm = fit_and_predict(stack, "hmm", data, "steps=30", draws=25)
    sites = ["log_likelihood:obs", "initial", "transition", "means", "sds", "__y__"]
    draws = kiln.draws(hmm, sites=sites)
    assert draws["log_likelihood:obs"].shape == (25, 1500)
    y = torch.as_tensor(draws["__y__"][0])
    for i in (0, 24):  # the stored (relabelled) draws give the same series likelihood
        given = {k: torch.as_tensor(draws[k][i], dtype=torch.float64) for k in sites[1:5]}
        series = dist.DiscreteHMM(
            given["initial"].log(), given["transition"].log(),
            dist.Normal(given["means"], given["sds"]),
        ).log_prob(y)  # fmt: skip
        assert draws["log_likelihood:obs"][i].sum() == pytest.approx(float(series), abs=1e-6)
    assert "one-step-ahead" in kiln.job(hmm)["info"]["log_likelihood_of"]
    _, vae = fit_and_predict(stack, "vae", "digits", "epochs=1", "hidden=32", "latent=2", draws=20)
    assert not [s for s in kiln.sample_summaries(vae) if s.kind == "log_likelihood"]
    assert "latent codes are local" in kiln.job(vae)["info"]["log_likelihood_note"]
    with pytest.raises(SpecError, match=f"job {vae} has no stored pointwise.*latent codes are"):
        kiln.compare([hmm, vae])
