"""`hmm`: a Gaussian hidden Markov model whose discrete states are summed out (DiscreteHMM).

Latents: `initial` (K,) and the rows of `transition` (K, K), Dirichlet(1); per-state `means`
and `sds` (K,). The likelihood of the whole series is dist.DiscreteHMM's forward algorithm, so
SVI sees no discrete site and Trace_ELBO suffices. States are reported in the order of their
fitted means (state 0 lowest): the fit itself is symmetric in the labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from numpy.typing import NDArray
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value

from inference.library import DataRef, LibraryPrediction, Problem
from inference.loglik import LogLik, chosen_draws
from kiln.library.hmm import read_hmm_series

__all__ = ["HMM", "GaussianHmm", "HmmModel", "forward_backward", "step_log_likelihood", "viterbi"]

STICKY = 0.9  # the transition matrix starts with this on its diagonal
INIT_SCALE = 0.05  # AutoNormal's starting sd (unconstrained space)
LATENTS = ("initial", "transition", "means", "sds")

_F64 = NDArray[np.float64]


class GaussianHmm:
    """y_t ~ Normal(means[z_t], sds[z_t]), z_t a Markov chain; z summed out.

    Priors scaled by the series' own mean and sd (`center`, `spread`): means Normal(center,
    2 spread), sds LogNormal(log spread, 1). Call as model(y) with y of shape (T,).
    """

    def __init__(self, states: int, center: float, spread: float, device: str) -> None:
        self.ones = torch.ones(states, device=device)
        self.ones_square = torch.ones(states, states, device=device)
        self.center = torch.full((states,), center, device=device)
        self.spread = torch.tensor(spread, device=device)
        self.states = states

    def __call__(self, y: torch.Tensor) -> None:
        initial = pyro.sample("initial", dist.Dirichlet(self.ones))
        with pyro.plate("regime", self.states):
            transition = pyro.sample("transition", dist.Dirichlet(self.ones_square))
            means = pyro.sample("means", dist.Normal(self.center, 2 * self.spread))
            sds = pyro.sample("sds", dist.LogNormal(self.spread.log(), 1.0))
        emission = dist.Normal(means, sds)  # batch (K,): one Normal per state
        pyro.sample("obs", dist.DiscreteHMM(initial.log(), transition.log(), emission), obs=y)


def _logsumexp(a: _F64, axis: int) -> _F64:
    top = np.max(a, axis=axis, keepdims=True)
    total: _F64 = np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(a - top), axis=axis))
    return total


def _log_emissions(y: _F64, means: _F64, sds: _F64) -> _F64:
    z = (y[:, None] - means[None, :]) / sds[None, :]
    log_e: _F64 = -0.5 * z**2 - np.log(sds)[None, :] - 0.5 * math.log(2 * math.pi)
    return log_e


def forward_backward(
    y: _F64, initial: _F64, transition: _F64, means: _F64, sds: _F64
) -> tuple[_F64, float]:
    """P(z_t = k | all of y) as (T, K), rows summing to 1, and log p(y); in log space."""
    log_e = _log_emissions(y, means, sds)
    with np.errstate(divide="ignore"):  # a transition that underflowed to 0 is log 0 = -inf
        log_a, log_initial = np.log(transition), np.log(initial)
    T, K = log_e.shape
    alpha = np.empty((T, K))
    beta = np.zeros((T, K))
    alpha[0] = log_initial + log_e[0]
    for t in range(1, T):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + log_a, axis=0) + log_e[t]
    for t in range(T - 2, -1, -1):
        beta[t] = _logsumexp(log_a + (log_e[t + 1] + beta[t + 1])[None, :], axis=1)
    log_p = float(_logsumexp(alpha[-1], axis=0))
    post = alpha + beta - log_p
    post = np.exp(post - _logsumexp(post, axis=1)[:, None])  # renormalise rounding
    return post, log_p


def viterbi(y: _F64, initial: _F64, transition: _F64, means: _F64, sds: _F64) -> NDArray[np.int64]:
    """The most probable state path (T,) int64."""
    log_e = _log_emissions(y, means, sds)
    with np.errstate(divide="ignore"):
        log_a, log_initial = np.log(transition), np.log(initial)
    T, K = log_e.shape
    best = log_initial + log_e[0]
    back = np.zeros((T, K), dtype=np.int64)
    for t in range(1, T):
        scores = best[:, None] + log_a  # from state i (rows) to state j (columns)
        back[t] = np.argmax(scores, axis=0)
        best = scores[back[t], np.arange(K)] + log_e[t]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(np.argmax(best))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def step_log_likelihood(
    y: torch.Tensor, initial: torch.Tensor, transition: torch.Tensor, means: torch.Tensor,
    sds: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """log p(y_t | y_1..y_t-1) per draw and step, (draws, T): the forward algorithm's
    normalisers, vectorised over draws (initial (S, K), transition (S, K, K), means and sds
    (S, K)). They sum over t to log p(y), DiscreteHMM's log_prob of the series: as there,
    `initial` is the state before the first step, so one transition precedes y_0."""
    log_e = dist.Normal(means[:, None, :], sds[:, None, :]).log_prob(y[None, :, None])
    log_a = transition.log()
    log_a = log_a - torch.logsumexp(log_a, -1, keepdim=True)  # rows sum to 1, as DiscreteHMM's
    alpha = initial.log() - torch.logsumexp(initial.log(), -1, keepdim=True)
    terms = []
    for t in range(y.shape[0]):  # alpha: filtered log p(z_t-1 = k | y_0..y_t-1)
        alpha = torch.logsumexp(alpha[:, :, None] + log_a, dim=1) + log_e[:, t]
        terms.append(torch.logsumexp(alpha, -1))
        alpha = alpha - terms[-1][:, None]
    return torch.stack(terms, dim=-1)


def _permuted(name: str, values: NDArray[Any], order: NDArray[np.intp]) -> NDArray[Any]:
    """Relabel states by `order` (new state j is old state order[j])."""
    if name == "transition":
        return values[..., order, :][..., :, order]
    return values[..., order]


class HmmModel:
    """The `hmm` library model: full-batch SVI, steps = the `steps` option."""

    name = "hmm"

    def prepare(
        self, options: Mapping[str, Any], data: DataRef, *, seed: int, device: str
    ) -> Problem:
        """Read the series, build the model and an AutoNormal guide started from the data:
        means at the series' quantiles (k + 1/2) / K, sds spread / K, a sticky transition."""
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        found = read_hmm_series(data.content, column=str(options["column"]), name=data.name)
        states = int(options["states"])
        values = found.values
        center, spread = float(values.mean()), float(values.std())
        model = GaussianHmm(states, center, spread, device)
        quantiles = (np.arange(states) + 0.5) / states
        off = (1 - STICKY) / (states - 1)
        start = {
            "initial": torch.full((states,), 1.0 / states),
            "transition": torch.full((states, states), off) + (STICKY - off) * torch.eye(states),
            "means": torch.as_tensor(np.quantile(values, quantiles), dtype=torch.float32),
            "sds": torch.full((states,), spread / states),
        }
        start = {k: v.to(device=device, dtype=torch.float32) for k, v in start.items()}
        guide = AutoNormal(model, init_loc_fn=init_to_value(values=start), init_scale=INIT_SCALE)
        y = torch.as_tensor(values, dtype=torch.float32, device=device)
        info = dict(found.facts)
        info.update(
            states=states,
            priors=f"initial and transition rows Dirichlet(1); means Normal({center:.4g},"
            f" {2 * spread:.4g}); sds LogNormal(log {spread:.4g}, 1)",
            order="states numbered by increasing fitted mean",
            log_likelihood_of=f"each of the {values.size} steps' one-step-ahead term"
            " log p(y_t | y_1..y_t-1) (they sum to the series' log-likelihood)",
        )
        return Problem(
            model=model, guide=guide, batch=lambda step: ((), {"y": y}), steps_per_epoch=1,
            epochs=int(options["steps"]), elbo="Trace_ELBO", max_plate_nesting=1,
            loss_items=int(values.size), latent_sites=LATENTS, device=device, info=info,
            extra={"y": values, "days": found.days},
        )  # fmt: skip

    def predict(self, problem: Problem, *, num_samples: int, seed: int) -> LibraryPrediction:
        """State probabilities per step (forward-backward) and the Viterbi path at the guide's
        medians; `num_samples` posterior draws of the latents; all with states sorted by mean."""
        values = np.asarray(problem.extra["y"], dtype=np.float64)
        args, kwargs = problem.batch(0)
        with torch.no_grad(), poutine.block():
            problem.guide(*args, **kwargs)  # in a fresh process: set up from the loaded params
        pyro.set_rng_seed(seed)
        guide: Any = problem.guide
        with torch.no_grad():
            point = {k: v.detach().cpu().double().numpy() for k, v in guide.median().items()}
            draws = [guide(*args, **kwargs) for _ in range(num_samples)]
        order = np.argsort(point["means"], kind="stable")
        point = {k: _permuted(k, point[k], order) for k in LATENTS}
        fitted = (values, point["initial"], point["transition"], point["means"], point["sds"])
        probs, log_p = forward_backward(*fitted)
        path = viterbi(*fitted)
        sites: dict[str, tuple[str, NDArray[Any]]] = {
            "state_probs": ("deterministic", probs[None, :, :]),
            "states": ("deterministic", path[None, :]),
            "__y__": ("data", values[None, :]),
        }
        if problem.extra.get("days") is not None:
            sites["__day__"] = ("data", np.asarray(problem.extra["days"], np.int64)[None, :])
        for name in LATENTS:
            stacked = torch.stack([d[name] for d in draws]).detach().cpu().numpy()
            sites[name] = ("posterior", _permuted(name, stacked, order))
        occupancy = np.bincount(path, minlength=len(order)) / path.size
        # Its observed values are the series it was fitted to: the one-step-ahead terms over
        # this job's draws (relabelling the states leaves them as they were).
        stored = {name: sites[name][1] for name in LATENTS}
        log_lik = self.log_likelihood(problem, stored, num_samples=num_samples, seed=seed)
        return LibraryPrediction(
            sites=sites,
            metrics={"log_likelihood": log_p, "log_likelihood_per_step": log_p / values.size},
            info={
                "num_samples": num_samples,
                "order": "states numbered by increasing fitted mean",
                "point": {k: np.round(v, 6).tolist() for k, v in point.items()},
                "viterbi_share": np.round(occupancy, 6).tolist(),
                "log_likelihood_of": problem.info.get("log_likelihood_of"),
            },
            log_lik=log_lik,
        )

    def log_likelihood(
        self, problem: Problem, draws: Mapping[str, NDArray[Any]], *, num_samples: int,
        seed: int,
    ) -> LogLik:  # fmt: skip
        """The one-step-ahead terms log p(y_t | y_1..y_t-1) per step and stored posterior
        draw: the forward algorithm's per-step factors (the series is one sequence, so these
        are its items; PSIS-LOO over them leaves out a step's term, not y_t from the chain)."""
        values = np.asarray(problem.extra["y"], dtype=np.float64)
        total = len(draws["means"]) if "means" in draws else 0
        rows = chosen_draws(total, 1, values.size)
        if len(rows) == 0 or any(name not in draws for name in LATENTS):
            return LogLik(note=f"log-likelihood not computed: {total} draws of {values.size}"
                          " steps is too few draws or over the cap")  # fmt: skip
        given = {k: torch.as_tensor(np.asarray(draws[k])[rows], dtype=torch.float64)
                 for k in LATENTS}  # fmt: skip
        with torch.no_grad():
            terms = step_log_likelihood(torch.as_tensor(values), *(given[k] for k in LATENTS))
        out = terms.cpu().numpy()
        if np.isnan(out).any() or np.isposinf(out).any():
            return LogLik(note="log-likelihood not computed: NaN at site `obs`")
        return LogLik({"obs": out}, {"obs": values}, rows, {"obs": ["step"]}, vectorized=True)


HMM = HmmModel()
