"""The model library's contract: a built-in model with its own data, options, mini-batches,
metrics and prediction (bnn-classifier, forecast-linreg, forecast-bnn, vae, hmm).

A library model is a module in inference/models/ exposing a LibraryModel. The worker calls
`prepare()` to get a Problem, runs SVI on it with inference.svi.run_svi (mini-batches by
`Problem.batch(step)`, metrics at each epoch's end), stores the fitted state, and a predict job
calls `prepare()` again in a fresh process, loads that state, and calls `predict()`.
Pure Pyro/torch/numpy: no celery, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from numpy.typing import NDArray

from kiln.library import DataRef

if TYPE_CHECKING:
    from inference.loglik import LogLik

__all__ = ["DataRef", "LibraryModel", "LibraryPrediction", "Problem"]


@dataclass
class Problem:
    """What run_svi needs for a (mini-batched) fit of a library model, and what predict uses.

    `batch(step)` returns the (args, kwargs) of model and guide for 0-based step `step`: a pure
    function of the step (and the job's seed), so a fit resumed from a checkpoint at step k
    draws the batches the uninterrupted fit drew. Steps are epochs x steps_per_epoch.
    `evaluate()` (optional; called as evaluate(epoch=N) when it takes `epoch`) returns metrics
    at an epoch's end, e.g. {"test_elbo": ...}, per item; the runner adds `train_elbo`: the
    epoch's mean loss divided by `loss_items`. Batches are keyword arguments only.
    """

    model: Callable[..., Any]
    guide: Callable[..., Any]
    batch: Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]]
    steps_per_epoch: int
    epochs: int
    elbo: str = "Trace_ELBO"  # Trace_ELBO | JitTrace_ELBO | TraceEnum_ELBO | TraceMeanField_ELBO
    max_plate_nesting: int | None = None  # needed by TraceEnum_ELBO
    loss_items: int = 1  # training items: train_elbo = mean epoch loss / loss_items
    evaluate: Callable[[], dict[str, float]] | None = None
    latent_sites: tuple[str, ...] = ()  # summarised into params after the fit (may be empty)
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)  # rows used/dropped, split sizes, ...
    extra: dict[str, Any] = field(default_factory=dict)  # the model's own (test tensors, ...)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass
class LibraryPrediction:
    """Draws and summaries a predict job stores: sites as (kind, array) with kind one of
    `posterior`, `deterministic`, `predictive`, `data` (first axis: draws, or 1 for `data`
    and for per-item summaries such as class probabilities), and plain metrics.

    `log_lik`: log p(y_i | draw) of the predicted items whose observed values are known, over
    the draws the prediction made (positions among them), for `compare`; a LogLik with only a
    note says why there is none; None where the model computes none. `info` then says which
    items (`log_likelihood_of`)."""

    sites: dict[str, tuple[str, NDArray[Any]]]
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    log_lik: LogLik | None = None


class LibraryModel(Protocol):
    """One built-in model of the library."""

    name: str  # as its kiln.library ModelCard

    def prepare(
        self, options: Mapping[str, Any], data: DataRef, *, seed: int, device: str
    ) -> Problem:
        """Clear the param store, seed, load the data once, build model, guide, batches."""
        ...

    def predict(self, problem: Problem, *, num_samples: int, seed: int) -> LibraryPrediction:
        """With the fitted params in the param store: draws, per-item summaries, metrics."""
        ...

    def log_likelihood(
        self, problem: Problem, draws: Mapping[str, NDArray[Any]], *, num_samples: int,
        seed: int,
    ) -> LogLik:  # fmt: skip
        """After the fit: log p(y_i | draw) per posterior draw and training item, for LOO.
        `draws` are the fit's stored posterior draws (site -> (num_samples, *shape); empty
        where it stores none, and the model draws `num_samples` from its guide). A LogLik
        with no values and a note says why there is none; never raises for the model's sake."""
        ...
