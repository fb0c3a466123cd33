"""forecast-linreg and forecast-bnn on the Ethereum file: drops, batches, fit, predict, plot."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.infer
import pyro.optim
import pytest
import torch

from inference.library import LibraryModel, LibraryPrediction, Problem
from inference.models.forecast import BNN, LINREG
from kiln.errors import DataError, SpecError
from kiln.library import DataRef, ModelCard, parse_options
from kiln.library.forecast import FORECAST_BNN, FORECAST_LINREG, read_forecast_data
from kiln.library.plots import plot_forecast

ETH = Path(__file__).resolve().parents[3] / "shared" / "data" / "ethusd_tweets.csv"
MODELS: dict[str, tuple[LibraryModel, ModelCard]] = {
    "forecast-linreg": (LINREG, FORECAST_LINREG),
    "forecast-bnn": (BNN, FORECAST_BNN),
}
SEED = 3
NUM_SAMPLES = 200


def eth() -> DataRef:
    return DataRef(kind="csv", name=ETH.name, content=ETH.read_bytes())


def fit(problem: Problem, lr: float) -> list[float]:
    """The caller-owned SVI loop the runner will run: one step per `problem.batch(step)`."""
    elbo_class = getattr(pyro.infer, problem.elbo)
    if problem.max_plate_nesting is not None:
        elbo = elbo_class(max_plate_nesting=problem.max_plate_nesting)
    else:
        elbo = elbo_class()
    optim = pyro.optim.Adam({"lr": lr})  # type: ignore[attr-defined]
    svi = pyro.infer.SVI(problem.model, problem.guide, optim, loss=elbo)
    losses = []
    for step in range(problem.steps):
        args, kwargs = problem.batch(step)
        losses.append(svi.step(*args, **kwargs))
    return losses


@dataclass
class Fitted:
    name: str
    options: dict[str, Any]
    problem: Problem
    prediction: LibraryPrediction
    fit_s: float
    params: Any  # the param store's state after the fit


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # Small models on a busy 2-core machine: torch's second intra-op thread costs 4x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(MODELS))
def fitted(request: pytest.FixtureRequest, one_thread: None) -> Fitted:
    model, card = MODELS[request.param]
    options = parse_options(card, {})
    problem = model.prepare(options, eth(), seed=SEED, device="cpu")
    start = time.perf_counter()
    losses = fit(problem, options["lr"])
    fit_s = time.perf_counter() - start
    params = pyro.get_param_store().get_state()
    params = {**params, "params": {k: v.detach().clone() for k, v in params["params"].items()}}
    prediction = model.predict(problem, num_samples=NUM_SAMPLES, seed=SEED)
    assert all(math.isfinite(x) for x in losses)
    return Fitted(request.param, options, problem, prediction, fit_s, params)


def test_the_ethereum_file_is_read_with_its_drops_counted_by_reason() -> None:
    found = read_forecast_data(ETH.read_bytes(), window=7, holdout=30, name=ETH.name)
    facts = found.facts
    assert facts["rows"] == 899
    assert facts["dropped"] == {"Tweets empty": 221, "Tweets null": 16}
    assert facts["ignored"] == {"Market Cap dash": 1}  # unused column: no row dropped for it
    assert facts["rows_used"] == 899 - 237
    # The 16 null days split the calendar: each run loses its first day and `window` more.
    assert facts["gaps"] == 1 and facts["days_lost"] == 2 * (1 + 7)
    assert (facts["train"], facts["holdout"]) == (616, 30)
    assert found.X_train.shape == (616, 21) and found.X_test.shape == (30, 21)
    assert found.y_train.shape == (616,) and found.y_test.shape == (30,)
    assert facts["holdout_to"] == "2018-01-21" and facts["holdout_from"] == "2017-12-23"
    assert np.all(np.diff(found.test_days) == 1)
    # Percent units: Close went 1155.15 -> 1049.58 on the last day.
    assert found.y_test[-1] == pytest.approx(100 * (1049.58 / 1155.15 - 1))
    assert found.X_test[-1][6] == pytest.approx(100 * (1155.15 / 1039.1 - 1))  # Close[-1]


def test_the_card_check_returns_the_facts_and_the_steps() -> None:
    options = parse_options(FORECAST_BNN, ["epochs=3", "batch_size=100"])
    facts = FORECAST_BNN.check(options, eth())
    assert facts["steps_per_epoch"] == 7  # 616 rows / 100
    assert facts["steps"] == 21
    assert facts["dropped"]["Tweets null"] == 16


def test_batches_are_pure_and_cover_each_training_row_once_per_epoch() -> None:
    options = parse_options(FORECAST_LINREG, ["batch_size=100"])
    problem = LINREG.prepare(options, eth(), seed=SEED, device="cpu")
    again = LINREG.prepare(options, eth(), seed=SEED, device="cpu")
    assert problem.steps_per_epoch == 7 and problem.loss_items == 616
    epochs = []
    for epoch in range(2):
        seen = []
        for k in range(problem.steps_per_epoch):
            step = epoch * problem.steps_per_epoch + k
            args, kwargs = problem.batch(step)
            torch.testing.assert_close(kwargs["idx"], problem.batch(step)[1]["idx"])
            torch.testing.assert_close(kwargs["idx"], again.batch(step)[1]["idx"])
            assert args == () and kwargs["X"].shape == (616, 21)
            seen.append(kwargs["idx"])
        rows = torch.cat(seen)
        assert sorted(rows.tolist()) == list(range(616))
        epochs.append(rows)
    assert not torch.equal(epochs[0], epochs[1])
    other_seed = LINREG.prepare(options, eth(), seed=SEED + 1, device="cpu")
    assert not torch.equal(other_seed.batch(0)[1]["idx"], problem.batch(0)[1]["idx"])


def test_a_csv_without_a_needed_column_is_a_data_error_naming_it() -> None:
    text = ETH.read_text().replace("Tweets", "Tweet_count", 1)
    data = DataRef(kind="csv", name="no_tweets.csv", content=text.encode())
    with pytest.raises(DataError, match="column `Tweets` not in `no_tweets.csv`") as caught:
        FORECAST_LINREG.check(parse_options(FORECAST_LINREG, {}), data)
    assert caught.value.column == "Tweets"


@pytest.mark.parametrize("setting", ["window=300", "holdout=640", "window=0", "holdout=-1"])
def test_a_window_or_holdout_too_large_is_a_spec_error(setting: str) -> None:
    options = parse_options(FORECAST_BNN, [setting])
    key = setting.split("=")[0]
    with pytest.raises(SpecError, match=rf"{key}={setting.split('=')[1]}\b") as caught:
        FORECAST_BNN.check(options, eth())
    assert caught.value.field == "options"


def test_data_that_is_not_a_csv_file_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="FILE.csv") as caught:
        FORECAST_LINREG.check(parse_options(FORECAST_LINREG, {}), DataRef("builtin", "digits"))
    assert caught.value.field == "data"


def test_fit_and_predict_give_forecasts_and_metrics_beside_the_naive_forecast(
    fitted: Fitted,
) -> None:
    prediction = fitted.prediction
    sites = prediction.sites
    assert sites["forecast"][0] == "predictive" and sites["forecast"][1].shape == (NUM_SAMPLES, 30)
    assert sites["mean"][0] == "deterministic" and sites["mean"][1].shape == (NUM_SAMPLES, 30)
    assert sites["__y__"][0] == "data" and sites["__y__"][1].shape == (1, 30)
    assert sites["__day__"][1].dtype == np.int64 and sites["__day__"][1].shape == (1, 30)
    assert str(np.datetime64(int(sites["__day__"][1][0, -1]), "D")) == "2018-01-21"
    assert sites["sigma"][0] == "posterior" and sites["sigma"][1].shape == (NUM_SAMPLES,)
    if fitted.name == "forecast-linreg":
        assert sites["weight"][1].shape == (NUM_SAMPLES, 21)
        assert sites["bias"][1].shape == (NUM_SAMPLES,)
    else:
        assert sites["fc1.weight"][1].shape == (NUM_SAMPLES, 25, 21)
        assert sites["fc2.weight"][1].shape == (NUM_SAMPLES, 1, 25)
        assert sites["effective_weight"][1].shape == (NUM_SAMPLES, 21)
    assert (sites["forecast"][1].std(axis=0) > 0).all()
    metrics = prediction.metrics
    assert set(metrics) >= {"mse", "mae", "naive_mse", "naive_mae"}
    assert all(math.isfinite(v) for v in metrics.values())
    # Reported, not demanded: daily returns are close to unpredictable.
    print(f"\n{fitted.name}: fit {fitted.fit_s:.1f}s ({fitted.problem.steps} steps), {metrics}")
    assert metrics["mse"] < 2 * metrics["naive_mse"]
    assert 0.5 < metrics["coverage_90"] <= 1.0
    assert fitted.fit_s < 60


def test_predict_from_stored_params_in_a_fresh_prepare_gives_the_same_draws(
    fitted: Fitted,
) -> None:
    model, _ = MODELS[fitted.name]
    problem = model.prepare(fitted.options, eth(), seed=SEED, device="cpu")
    pyro.get_param_store().set_state(fitted.params)
    again = model.predict(problem, num_samples=NUM_SAMPLES, seed=SEED)
    for name, (kind, values) in fitted.prediction.sites.items():
        assert again.sites[name][0] == kind
        np.testing.assert_array_equal(again.sites[name][1], values, err_msg=name)
    assert again.metrics == fitted.prediction.metrics
    assert problem.evaluate is not None
    assert math.isfinite(problem.evaluate()["test_mse"])


def test_plot_forecast_draws_the_held_out_days(fitted: Fitted, tmp_path: Path) -> None:
    sites = fitted.prediction.sites
    path = plot_forecast(
        sites["__day__"][1][0], sites["__y__"][1][0], sites["forecast"][1],
        tmp_path / f"{fitted.name}.png", title=f"ETH daily % change of Close: {fitted.name}",
    )  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
