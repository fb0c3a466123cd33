"""`forecast-linreg` and `forecast-bnn`: the next day's % change of ETH Close, on mini-batches.

Both models see the previous `window` days of % changes of Close, Volume and Tweets, as
z-scores with the training days' mean and sd (Volume's and Tweets' changes are ten times as
wide as Close's); the target stays in % so `sigma`, the forecasts and the metrics read in %.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from numpy.typing import NDArray
from pyro import poutine
from pyro.infer import Predictive
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.nn import PyroModule, PyroSample
from torch import nn

from inference.library import DataRef, LibraryPrediction, Problem
from inference.loglik import LogLik, pointwise_log_likelihood
from kiln.library.forecast import read_forecast_data, steps_per_epoch

__all__ = ["BNN", "LINREG", "ForecastBNN", "ForecastLinReg", "epoch_rows"]

SIGMA_SCALE = 10.0  # sigma ~ HalfNormal(10): daily moves of a few %, ETH's sd is about 6.5
INIT_RADIUS = 0.1  # weights start uniform in (-0.1, 0.1), sigma at the training target's sd
INIT_SCALE = 0.1  # AutoNormal's starting sd, the article's "narrower" guide
BAND = (0.05, 0.95)  # the 90% band of coverage_90


class LinearForecast:
    """y ~ Normal(X @ weight + bias, sigma); weight (features,), bias and sigma scalars.

    Call as model(X, y=None, idx=None): idx (a subsample of rows) makes a mini-batch whose
    log-likelihood the `data` plate scales up to all rows.
    """

    def __init__(self, features: int, device: str) -> None:
        self.zeros = torch.zeros(features, device=device)
        self.zero = torch.zeros((), device=device)
        self.sigma_scale = torch.tensor(SIGMA_SCALE, device=device)

    def mean(self, X: torch.Tensor) -> torch.Tensor:
        weight = pyro.sample("weight", dist.Normal(self.zeros, 1.0).to_event(1))
        bias = pyro.sample("bias", dist.Normal(self.zero, 1.0))
        return X @ weight + bias

    def __call__(
        self, X: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _likelihood(self.mean, self.sigma_scale, X, y, idx)


class NetworkForecast(PyroModule):
    """Linear(features -> hidden), linear activation (the article's), Linear(hidden -> 1):
    sites fc1.weight, fc1.bias, fc2.weight, fc2.bias (Normal(0, 1) each) and sigma."""

    def __init__(self, features: int, hidden: int, device: str) -> None:
        super().__init__()
        linear: Any = PyroModule[nn.Linear]  # mypy cannot see PyroModule[...]'s signature
        self.fc1 = linear(features, hidden)
        self.fc2 = linear(hidden, 1)
        for layer, shape in ((self.fc1, (hidden, features)), (self.fc2, (1, hidden))):
            layer.weight = PyroSample(
                dist.Normal(torch.zeros(shape, device=device), 1.0).to_event(2)
            )
            layer.bias = PyroSample(
                dist.Normal(torch.zeros(shape[0], device=device), 1.0).to_event(1)
            )
        self.sigma_scale = torch.tensor(SIGMA_SCALE, device=device)

    def mean(self, X: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.fc1(X))
        return out.squeeze(-1)

    def forward(
        self, X: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _likelihood(self.mean, self.sigma_scale, X, y, idx)


def _likelihood(
    mean_of: Callable[[torch.Tensor], torch.Tensor], sigma_scale: torch.Tensor,
    X: torch.Tensor, y: torch.Tensor | None, idx: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    # The weights are drawn once, outside the plate; only the batch's rows enter the mean.
    rows = idx if idx is not None else torch.arange(X.shape[0], device=X.device)
    mean = mean_of(X[rows])
    sigma = pyro.sample("sigma", dist.HalfNormal(sigma_scale))
    with pyro.plate("data", X.shape[0], subsample=rows):
        pyro.deterministic("mean", mean)
        pyro.sample("obs", dist.Normal(mean, sigma), obs=None if y is None else y[rows])
    return mean


def epoch_rows(rows: int, batch_size: int, seed: int) -> Callable[[int], NDArray[np.int64]]:
    """step -> the rows of that step's mini-batch: each epoch a permutation of all rows drawn
    from a generator seeded by (seed, epoch), cut into batches; a pure function of the step."""
    per_epoch = steps_per_epoch(rows, batch_size)

    @lru_cache(maxsize=2)
    def permutation(epoch: int) -> NDArray[np.int64]:
        return np.random.default_rng([seed, epoch]).permutation(rows)

    def batch_rows(step: int) -> NDArray[np.int64]:
        epoch, k = divmod(step, per_epoch)
        return permutation(epoch)[k * batch_size : (k + 1) * batch_size]

    return batch_rows


class _Forecast:
    name = ""
    weight_sites: tuple[str, ...] = ()

    def build(self, features: int, options: Mapping[str, Any], device: str) -> Any:
        raise NotImplementedError

    def prepare(
        self, options: Mapping[str, Any], data: DataRef, *, seed: int, device: str
    ) -> Problem:
        """Read the CSV (drops counted in info), standardise the features, build model, guide
        (AutoNormal, init scale 0.1) and the mini-batches of `batch_size` rows."""
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        found = read_forecast_data(
            data.content, window=int(options["window"]), holdout=int(options["holdout"]),
            name=data.name,
        )  # fmt: skip
        center = found.X_train.mean(axis=0)
        scale = found.X_train.std(axis=0)
        scale[scale == 0] = 1.0

        def tensor(values: NDArray[np.float64]) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=device)

        X_train = tensor((found.X_train - center) / scale)
        y_train = tensor(found.y_train)
        X_test = tensor((found.X_test - center) / scale)
        y_test = tensor(found.y_test)
        model = self.build(X_train.shape[1], options, device)
        sigma_start = float(found.y_train.std())

        def init_loc(site: dict[str, Any]) -> torch.Tensor:
            if site["name"] == "sigma":
                return torch.tensor(sigma_start, device=device)
            start: torch.Tensor = init_to_uniform(site, radius=INIT_RADIUS)
            return start

        guide = AutoNormal(model, init_loc_fn=init_loc, init_scale=INIT_SCALE)
        batch_size = int(options["batch_size"])
        batch_rows = epoch_rows(len(y_train), batch_size, seed)

        def batch(step: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
            idx = torch.as_tensor(batch_rows(step), dtype=torch.long, device=device)
            return (), {"X": X_train, "y": y_train, "idx": idx}  # keywords: the worker's rule

        def evaluate() -> dict[str, float]:
            # The point forecast at the guide's medians: no draws, so the RNG is left alone.
            point = poutine.condition(model.mean, data=guide.median())(X_test)
            return {"test_mse": float(((point - y_test) ** 2).mean())}

        info = dict(found.facts)
        info.update(
            standardise="features: z-scores with the training days' mean and sd;"
            " target, forecasts and metrics in % (not scaled)",
            feature_names=list(found.feature_names),
            feature_mean=[round(float(v), 6) for v in center],
            feature_sd=[round(float(v), 6) for v in scale],
            priors=f"weights and biases Normal(0, 1), sigma HalfNormal({SIGMA_SCALE:g})",
            log_likelihood_of=f"each of the {len(y_train)} training days' % change",
        )
        return Problem(
            model=model, guide=guide, batch=batch,
            steps_per_epoch=steps_per_epoch(len(y_train), batch_size),
            epochs=int(options["epochs"]), loss_items=len(y_train), evaluate=evaluate,
            latent_sites=(*self.weight_sites, "sigma"), device=device, info=info,
            extra={"X_test": X_test, "y_test": found.y_test, "test_days": found.test_days},
        )  # fmt: skip

    def predict(self, problem: Problem, *, num_samples: int, seed: int) -> LibraryPrediction:
        """`num_samples` forecasts per held-out day (site `forecast`, with the noise) and the
        regression line (`mean`), the posterior draws of the weights, and MSE/MAE of the
        predictive mean against the observed days and against a zero-change forecast."""
        X_test = problem.extra["X_test"]
        args, kwargs = problem.batch(0)
        with torch.no_grad(), poutine.block():
            # In a fresh process the guide is set up here, from the training batch (with y, so
            # `obs` is observed) and the loaded params, before the seed, as a fit would have.
            problem.guide(*args, **kwargs)
        pyro.set_rng_seed(seed)
        observed = np.asarray(problem.extra["y_test"], dtype=np.float64)
        sites = (*self.weight_sites, "sigma", "mean", "obs")
        predictive = Predictive(
            problem.model, guide=problem.guide, num_samples=num_samples, return_sites=sites
        )
        with torch.no_grad():
            draws = {k: v.detach().cpu().numpy() for k, v in predictive(X_test).items()}
        forecast = draws.pop("obs").reshape(num_samples, -1)
        mean = draws.pop("mean").reshape(num_samples, -1)
        result: dict[str, tuple[str, NDArray[Any]]] = {
            "forecast": ("predictive", forecast),
            "mean": ("deterministic", mean),
            "__y__": ("data", observed[None, :]),
            "__day__": ("data", np.asarray(problem.extra["test_days"], dtype=np.int64)[None, :]),
        }
        # Predictive pads sites outside the data plate with a 1 after the draws axis: undo it.
        guide: Any = problem.guide
        shapes = {k: tuple(v.shape) for k, v in guide.median().items()}
        weights = {k: v.reshape(num_samples, *shapes[k]) for k, v in draws.items()}
        for name, values in weights.items():
            result[name] = ("posterior", values)
        result.update(self.derived(weights))
        # log Normal(y_t | mean_t, sigma) per held-out day over these draws: the fit's code
        # and caps, on the test rows (positions among this job's draws).
        y_test = torch.as_tensor(observed, dtype=X_test.dtype, device=X_test.device)
        log_lik = pointwise_log_likelihood(
            problem.model, {"X": X_test, "y": y_test}, weights, device=problem.device
        )
        return LibraryPrediction(
            sites=result,
            metrics=forecast_metrics(observed, mean.mean(axis=0), forecast),
            info={"num_samples": num_samples, "days": int(observed.size),
                  "holdout_from": problem.info.get("holdout_from"),
                  "holdout_to": problem.info.get("holdout_to"),
                  "log_likelihood_of": f"each of the {observed.size} held-out days' % change"},
            log_lik=log_lik,
        )  # fmt: skip

    def derived(self, draws: Mapping[str, NDArray[Any]]) -> dict[str, tuple[str, NDArray[Any]]]:
        return {}

    def log_likelihood(
        self, problem: Problem, draws: Mapping[str, NDArray[Any]], *, num_samples: int,
        seed: int,
    ) -> LogLik:  # fmt: skip
        """log Normal(y_t | mean_t, sigma) per training day and stored posterior draw (the
        fit's `draws` of the weights and sigma): every row at once, no mini-batch scaling."""
        _, kwargs = problem.batch(0)
        data = {"X": kwargs["X"], "y": kwargs["y"]}
        return pointwise_log_likelihood(problem.model, data, draws, device=problem.device)


def forecast_metrics(
    observed: NDArray[np.float64], point: NDArray[np.float64], draws: NDArray[Any]
) -> dict[str, float]:
    """MSE/MAE of the predictive mean and of the zero-change forecast, and the share of days
    inside the 90% band of the draws."""
    low, high = np.quantile(draws, BAND, axis=0)
    error = point - observed
    return {
        "mse": float(np.mean(error**2)),
        "mae": float(np.mean(np.abs(error))),
        "naive_mse": float(np.mean(observed**2)),
        "naive_mae": float(np.mean(np.abs(observed))),
        "coverage_90": float(np.mean((observed >= low) & (observed <= high))),
    }


class ForecastLinReg(_Forecast):
    """Bayesian linear regression: weight (3 * window,), bias, sigma."""

    name = "forecast-linreg"
    weight_sites = ("weight", "bias")

    def build(self, features: int, options: Mapping[str, Any], device: str) -> Any:
        return LinearForecast(features, device)


class ForecastBNN(_Forecast):
    """Bayesian network Linear(3 * window -> hidden) -> Linear(hidden -> 1), linear activation."""

    name = "forecast-bnn"
    weight_sites = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")

    def build(self, features: int, options: Mapping[str, Any], device: str) -> Any:
        return NetworkForecast(features, int(options["hidden"]), device)

    def derived(self, draws: Mapping[str, NDArray[Any]]) -> dict[str, tuple[str, NDArray[Any]]]:
        # With a linear activation the network is a linear map: fc2.weight @ fc1.weight, the
        # per-feature effect to set beside forecast-linreg's `weight`.
        effect = draws["fc2.weight"] @ draws["fc1.weight"]  # (draws, 1, features)
        return {"effective_weight": ("deterministic", effect[:, 0, :])}


LINREG = ForecastLinReg()
BNN = ForecastBNN()
