"""The Bayesian neural network classifier and the VAE on scikit-learn's digits, as jobs through a
real worker: metrics by epoch, a prediction from the stored state, the figures."""

from __future__ import annotations

import pytest

from tests.conftest import cli_json, run_cli
from tests.library.test_forecast_hmm_jobs import EMBEDDED, submit

pytestmark = EMBEDDED


@pytest.mark.slow
def test_bnn_classifier_on_digits_reaches_90_percent(stack, start_worker, tmp_path) -> None:
    start_worker("w1")
    done, (fit, predict) = submit(stack, "--model", "bnn-classifier", "--data", "digits",
                                  "--seed", "1", "--then-predict", "20")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert fit["info"]["data"]["train"] == 1437 and fit["info"]["data"]["test"] == 360
    by_epoch = cli_json(stack, "metrics", fit["id"], "--name", "test_accuracy", "--format", "json")
    assert len(by_epoch) == 100 and by_epoch[-1]["value"] > by_epoch[0]["value"]
    metrics = {r["name"]: r["value"] for r in cli_json(
        stack, "metrics", predict["id"], "--format", "json")}  # fmt: skip
    assert metrics["test_accuracy"] >= 0.90, metrics
    assert 0 <= metrics["abstain_rate"] < 0.5
    assert metrics["accuracy_when_confident"] >= metrics["test_accuracy"]
    png = tmp_path / "digits.png"
    plotted = run_cli("plot", predict["id"], "-o", str(png), env=stack.env)
    assert plotted.returncode == 0, plotted.stderr


@pytest.mark.slow
def test_vae_test_elbo_improves_and_reconstructions_are_stored(
    stack, start_worker, tmp_path
) -> None:
    start_worker("w1")
    done, (fit, predict) = submit(stack, "--model", "vae", "--data", "digits", "--seed", "1",
                                  "--set", "epochs=30", "--set", "likelihood=continuous_bernoulli",
                                  "--then-predict", "64")  # fmt: skip
    assert done.returncode == 0, done.stderr
    test_elbo = [r["value"] for r in cli_json(
        stack, "metrics", fit["id"], "--name", "test_elbo", "--format", "json")]  # fmt: skip
    assert len(test_elbo) == 30 and test_elbo[-1] < test_elbo[0] - 1.0
    # A continuous Bernoulli density of grey pixels: negative nats, improving.
    sites = {r["site"].split("[")[0] for r in cli_json(
        stack, "samples", predict["id"], "--format", "json")}  # fmt: skip
    assert {"reconstruction", "samples"} <= sites
    png = tmp_path / "vae.png"
    assert run_cli("plot", predict["id"], "-o", str(png), env=stack.env).returncode == 0
    assert png.stat().st_size > 10_000


def test_library_bad_options_are_refused_before_anything_is_written(stack) -> None:
    for args, message in [
        (("--model", "vae", "--data", "digits", "--set", "latnet=3"), "has no option `latnet`"),
        (("--model", "vae", "--data", "digits", "--set", "epochs=many"), "wants int"),
        (("--model", "vae", "--data", "digits", "--set", "likelihood=gauss"), "takes one of"),
        (("--model", "hmm", "--data", "digits"), "hmm"),
        (
            ("--model", "bnn-classifier", "--data", "digits", "--formula", "y ~ x"),
            "--formula does not apply",
        ),
    ]:
        done = run_cli("submit", "fit", *args, env=stack.env)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    assert cli_json(stack, "list", "--json") == []


def test_models_command_lists_every_library_model(stack) -> None:
    names = {m["name"] for m in cli_json(stack, "models", "--json")}
    assert names == {"linreg", "bnn-classifier", "forecast-linreg", "forecast-bnn", "vae", "hmm"}
