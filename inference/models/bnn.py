"""Bayesian neural network classifier of images (`bnn-classifier`, MODELS.md section 2)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from numpy.typing import NDArray
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

from inference.library import DataRef, LibraryPrediction, Problem
from inference.loglik import (
    MAX_DRAWS,
    MAX_FLOATS,
    MIN_DRAWS,
    LogLik,
    chosen_draws,
    pointwise_log_likelihood,
)
from kiln.library.digits import batch_indices, load_images, steps_per_epoch

__all__ = [
    "BNN_CLASSIFIER",
    "BayesianMLP",
    "BnnClassifier",
    "class_probs",
    "data_plate",
    "forked_rng",
]

SITES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
INIT_SCALE = 0.05  # AutoNormal's starting sd: 0.01, 0.05, 0.1 all reach 0.97-0.98 on the digits
EVALUATE_DRAWS = 5  # networks averaged for the per-epoch test accuracy
MAX_STORED_IMAGES = 1000  # test images kept as the `__x__` site (for plots)


def forked_rng(device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
    """A copy of the random state to draw from, so that evaluating or predicting draws nothing
    from the fit's own random stream (the CPU's, and the GPU's when the fit runs on one)."""
    where = torch.device(device)
    return torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else [])


def data_plate(x: torch.Tensor, idx: torch.Tensor | None, size: int) -> pyro.plate:
    """The plate over images: a mini-batch `idx` of `size` training images (the likelihood is
    scaled by size / len(idx)), or every row of `x` when idx is None."""
    if idx is None:
        return pyro.plate("data", x.shape[0])
    return pyro.plate("data", size, subsample=idx)


def _logits(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
            b2: torch.Tensor) -> torch.Tensor:  # fmt: skip
    # Weights may carry a leading draws axis: (draws, out, in) with x (rows, in).
    hidden = torch.relu(x @ w1.transpose(-1, -2) + b1.unsqueeze(-2))
    return hidden @ w2.transpose(-1, -2) + b2.unsqueeze(-2)


class BayesianMLP(PyroModule):
    """inputs -> Linear(hidden) -> ReLU -> Linear(classes), every weight and bias a latent
    site with a Normal(0, 1) prior (sites fc1.weight, fc1.bias, fc2.weight, fc2.bias); the
    labels `obs` ~ Categorical(logits) in the plate `data`.

    Call as model(x, y=None, idx=None): x (rows, inputs), y (rows,), idx the rows' indices in
    the training set of `size` images when x is a mini-batch.
    """

    def __init__(self, inputs: int, hidden: int, classes: int, size: int,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        super().__init__()
        self.size = size
        prior = dist.Normal(torch.zeros((), device=device), torch.ones((), device=device))
        # Two layers laid out as nn.Linear's (weight (out, in), bias (out,)), every tensor
        # a latent site; plain PyroModules, as the network is computed in _logits.
        self.fc1 = PyroModule()
        self.fc1.weight = PyroSample(prior.expand([hidden, inputs]).to_event(2))
        self.fc1.bias = PyroSample(prior.expand([hidden]).to_event(1))
        self.fc2 = PyroModule()
        self.fc2.weight = PyroSample(prior.expand([classes, hidden]).to_event(2))
        self.fc2.bias = PyroSample(prior.expand([classes]).to_event(1))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = _logits(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        with data_plate(x, idx, self.size):
            return pyro.sample("obs", dist.Categorical(logits=logits), obs=y)


def ensure_guide(
    guide: Any, batch: Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]]
) -> None:
    """Set the autoguide up on a training batch if it has not run yet (a predict job's fresh
    process): set up on test images alone, it would take the labels `obs` for a latent."""
    if getattr(guide, "prototype_trace", None) is None:
        args, kwargs = batch(0)
        with torch.no_grad(), pyro.poutine.block():
            guide(*args, **kwargs)


def class_probs(guide: Callable[..., Any], x: torch.Tensor, draws: int) -> torch.Tensor:
    """Class probabilities (rows, classes) averaged over `draws` networks from the guide."""
    return probs_and_log_lik(guide, x, None, draws, np.zeros(0, dtype=np.int64))[0]


def probs_and_log_lik(
    guide: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None, draws: int,
    keep: NDArray[np.int64],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Class probabilities (rows, classes) averaged over `draws` networks from the guide, and
    log p(y_i | x_i, network) (len(keep), rows) of the networks at positions `keep` (sorted),
    from the same networks: one pass, so the probabilities are class_probs' to the bit."""
    total = torch.zeros((), device=x.device)
    wanted = set(keep.tolist()) if y is not None else set()
    kept: list[torch.Tensor] = []
    for i in range(draws):
        weights = guide(x)  # AutoNormal returns {site: value}: one network
        logits = _logits(x, *(weights[name] for name in SITES))
        total = total + torch.softmax(logits, dim=-1)
        if i in wanted:  # Categorical(logits).log_prob(y), as the model's `obs` site scores it
            assert y is not None
            kept.append(torch.log_softmax(logits, -1).gather(-1, y.long()[:, None]).squeeze(-1))
    log_lik = torch.stack(kept) if kept else torch.zeros((0, x.shape[0]), device=x.device)
    return total / draws, log_lik


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


class BnnClassifier:
    """The `bnn-classifier` library model (inference.library.LibraryModel).

    Options (kiln.library.digits card): hidden, epochs, batch_size, lr, threshold.
    latent_sites is empty: thousands of weights do not summarise into useful params.
    """

    name = "bnn-classifier"

    def prepare(
        self, options: Mapping[str, Any], data: DataRef, *, seed: int, device: str
    ) -> Problem:
        """Clear the param store, seed, load and split the images, build model, guide, batches."""
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        x_train, y_train, x_test, y_test, facts = load_images(data, seed)
        size, batch_size = len(x_train), int(options["batch_size"])
        xs = torch.as_tensor(x_train, device=device)
        ys = torch.as_tensor(y_train, device=device)
        x_eval = torch.as_tensor(x_test, device=device)
        y_eval = torch.as_tensor(y_test, device=device)
        net = BayesianMLP(xs.shape[1], int(options["hidden"]), facts["classes"], size, device)
        # create_plates: the guide's `data` plate takes the model's indices, not its own draw.
        guide = AutoNormal(
            net,
            init_scale=INIT_SCALE,
            create_plates=lambda x, y=None, idx=None: data_plate(x, idx, size),
        )

        def batch(step: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
            rows = torch.tensor(batch_indices(seed, step, size, batch_size), device=device)
            return (xs[rows], ys[rows], rows), {}

        def evaluate() -> dict[str, float]:
            with forked_rng(device), torch.no_grad():
                ensure_guide(guide, batch)
                torch.manual_seed(seed)
                probs = class_probs(guide, x_eval, EVALUATE_DRAWS)
            return {"test_accuracy": float((probs.argmax(-1) == y_eval).float().mean())}

        return Problem(
            model=net,
            guide=guide,
            batch=batch,
            steps_per_epoch=steps_per_epoch(size, batch_size),
            epochs=int(options["epochs"]),
            loss_items=size,
            evaluate=evaluate,
            latent_sites=(),
            device=device,
            info={**facts, "batch_size": batch_size,
                  "log_likelihood_of": f"each of the {size} training images' label"},
            extra={"x_test": x_eval, "y_test": y_eval, "threshold": float(options["threshold"]),
                   "x_train": xs, "y_train": ys},
        )  # fmt: skip

    def log_likelihood(
        self, problem: Problem, draws: Mapping[str, NDArray[Any]], *, num_samples: int,
        seed: int,
    ) -> LogLik:  # fmt: skip
        """log p(label_i | image_i, network) per training image (what LOO leaves out) and per
        network drawn from the guide: min(num_samples, the caps) networks, as the fit stores
        no weights (`draws` is empty)."""
        xs, ys = problem.extra["x_train"], problem.extra["y_train"]
        count = min(num_samples, MAX_DRAWS, MAX_FLOATS // max(len(xs), 1))
        with forked_rng(problem.device), torch.no_grad():
            ensure_guide(problem.guide, problem.batch)
            torch.manual_seed(seed)
            nets = [problem.guide(xs) for _ in range(count)]
        weights: dict[str, NDArray[Any]] = {
            name: torch.stack([net[name] for net in nets]).cpu().numpy() for name in SITES
        }
        return pointwise_log_likelihood(
            problem.model, {"x": xs, "y": ys}, weights, device=problem.device
        )

    def predict(self, problem: Problem, *, num_samples: int, seed: int) -> LibraryPrediction:
        """Average `num_samples` networks' class probabilities per test image; predicted class,
        predictive entropy, and the accuracy of the images it does not abstain on."""
        x, y = problem.extra["x_test"], problem.extra["y_test"]
        threshold = problem.extra["threshold"]
        keep = chosen_draws(num_samples, 1, len(x))  # the fit's caps on draws and values
        with forked_rng(problem.device), torch.no_grad():
            ensure_guide(problem.guide, problem.batch)
            torch.manual_seed(seed)
            probs, log_lik = probs_and_log_lik(problem.guide, x, y, num_samples, keep)
        predicted = probs.argmax(-1)
        entropy = _entropy(probs)
        correct = (predicted == y).float()
        confident = entropy <= threshold
        metrics = {
            "test_accuracy": float(correct.mean()),
            "mean_entropy": float(entropy.mean()),
            "abstain_rate": float(1.0 - confident.float().mean()),
        }
        if bool(confident.any()):  # left out when it abstains on every image
            metrics["accuracy_when_confident"] = float(correct[confident].mean())
        stored = min(len(x), MAX_STORED_IMAGES)
        sites = {
            "class_probs": ("deterministic", probs.unsqueeze(0)),
            "predicted": ("deterministic", predicted.unsqueeze(0)),
            "entropy": ("deterministic", entropy.unsqueeze(0)),
            "__y__": ("data", y.unsqueeze(0)),
            "__x__": ("data", x[:stored].unsqueeze(0)),
        }
        info = {
            "num_samples": num_samples,
            "threshold": threshold,
            "max_entropy": math.log(probs.shape[-1]),
            "image_shape": problem.info.get("image_shape"),
            "stored_images": stored,
            "test": len(x),
            "log_likelihood_of": f"each of the {len(x)} held-out test images' label",
        }
        return LibraryPrediction(
            sites={name: (kind, value.cpu().numpy()) for name, (kind, value) in sites.items()},
            metrics=metrics,
            info=info,
            log_lik=_test_log_lik(log_lik, y, keep, num_samples),
        )


def _test_log_lik(
    log_lik: torch.Tensor, y: torch.Tensor, keep: NDArray[np.int64], num_samples: int
) -> LogLik:
    """The predict job's LogLik of its test labels (a note where the caps left no draws)."""
    if len(keep) == 0:
        return LogLik(note=f"log-likelihood not computed: {num_samples} draws of {len(y)}"
                      f" test images is too few draws (under {MIN_DRAWS})")  # fmt: skip
    values = log_lik.double().cpu().numpy()
    if np.isnan(values).any() or np.isposinf(values).any():
        return LogLik(note="log-likelihood not computed: NaN at site `obs`")
    observed = y.cpu().numpy()
    return LogLik({"obs": values}, {"obs": observed}, keep, {"obs": ["data"]}, vectorized=True)


BNN_CLASSIFIER = BnnClassifier()
